"""Seed 002's model management, ME models, configuration, reload and image proxy as its own
client speaks them (docs/dialects.md, "Seed 002"), against a real daphne whose OpenAI provider is
a loopback fake server reached through the real ``openai`` SDK: bodies exactly as the seed
writes them, the ``{code: 200, message, data}`` envelope, the bare config and proxy shapes."""

from __future__ import annotations

import asyncio
import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.conftest import CLOSED_LOOPBACK_URL
from tests.fakes import FakeServerProcess, Reply
from tests.realtime_procs.cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


@pytest.fixture(scope="module")
def fake():
    with FakeServerProcess("openai") as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, fake):
    cluster = Cluster(
        tmp_path_factory.mktemp("seed002-models"),
        None,
        extra_env={
            "OPENAI_BASE_URL": fake.base_url,
            "GEMINI_BASE_URL": CLOSED_LOOPBACK_URL,
            "OLLAMA_BASE_URL": CLOSED_LOOPBACK_URL,
        },
    )
    try:
        cluster.start(webs=1, workers=0)
        yield cluster
    finally:
        cluster.stop()


class Seed002:
    def __init__(self, cluster: Cluster, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=cluster.http(0), headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(30)
        )

    async def envelope(self, method: str, path: str, *, status: int = 200, **kwargs) -> dict:
        response = await self.http.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) >= {"code", "message", "data"}, body
        assert body["code"] == status, body
        assert isinstance(body["message"], str) and body["message"]
        return body


async def _seed_client(cluster: Cluster, *, staff: bool = False) -> Seed002:
    _, token = await cluster.user(is_staff=staff)
    return Seed002(cluster, token)


async def test_model_management_as_the_seed_writes_it(cluster, fake):
    operator = await _seed_client(cluster, staff=True)
    user = await _seed_client(cluster)
    async with operator.http, user.http:
        created = await operator.envelope(
            "POST",
            "/api/model/create",
            json={"model_name": "house-model", "display_name": "Fake model", "connect_status": "未检测"},
        )
        assert created["message"] == "Model created successfully" and created["data"] is None

        listed = await user.envelope("GET", "/api/model/list")
        assert listed["message"] == "Successfully retrieved model list"
        (row,) = [m for m in listed["data"] if m["model_name"] == "house-model" and not m["is_builtin"]]
        assert {"model_id", "model_name", "model_repo", "display_name", "connect_status"} <= set(row)
        assert row["display_name"] == "Fake model" and row["connect_status"] == "not_detected"

        await asyncio.to_thread(fake.script, Reply(text="pong"))
        health = await user.envelope("GET", "/api/model/healthcheck", params={"model_name": "house-model"})
        assert health["message"] == "Model health check successful"
        assert {"status", "desc", "connect_status"} <= set(health["data"])
        assert health["data"]["connect_status"] == "available"
        sent = (await asyncio.to_thread(lambda: fake.requests))[-1]
        assert sent.path == "/v1/chat/completions" and sent.json["model"] == "house-model"

        status = await user.envelope(
            "GET", "/api/model/get_connect_status", params={"model_name": "house-model"}
        )
        assert status["data"] == {"model_name": "house-model", "connect_status": "available"}
        updated = await operator.envelope(
            "POST", "/api/model/update", json={"model_name": "house-model", "display_name": "Renamed"}
        )
        assert updated["message"] == "Model updated successfully"
        assert updated["data"] == {"model_name": "house-model"}
        marked = await operator.envelope(
            "POST",
            "/api/model/update_connect_status",
            json={"model_name": "house-model", "connect_status": "unavailable"},
        )
        assert marked["message"] == "Successfully updated connection status"
        assert marked["data"] == {"model_name": "house-model", "connect_status": "unavailable"}

        refused = await user.envelope(
            "POST", "/api/model/delete", json={"model_name": "house-model"}, status=403
        )
        assert refused["error"] == "forbidden" and refused["data"] is None
        keyed = await user.envelope(
            "POST", "/api/model/create", json={"model_name": "mine", "api_key": "sk-abc"}, status=400
        )
        assert keyed["error"] == "validation_error"
        deleted = await operator.envelope("POST", "/api/model/delete", json={"model_name": "house-model"})
        assert deleted["message"] == "Model deleted successfully"
        assert deleted["data"] == {"model_name": "house-model"}
        await user.envelope(
            "GET", "/api/model/get_connect_status", params={"model_name": "house-model"}, status=404
        )


async def test_me_models_are_the_providers_own(cluster, fake):
    user = await _seed_client(cluster)
    async with user.http:
        models = await user.envelope("GET", "/api/me/model/list", params={"type": "llm"})
        assert models["message"] == "Successfully retrieved"
        names = {m["name"] for m in models["data"] if m["id"].startswith("openai:")}
        assert names == {"gpt-4o-mini", "fake-model"}
        assert all(set(m) == {"id", "name", "type", "description"} for m in models["data"])

        me = await user.envelope("GET", "/api/me/healthcheck", params={"timeout": 5})
        assert me["message"] == "Connection successful"
        assert me["data"]["status"] == "Connected" and me["data"]["connect_status"] == "AVAILABLE"

        await asyncio.to_thread(fake.script, Reply(text="pong"))
        checked = await user.envelope(
            "GET", "/api/me/model/healthcheck", params={"model_name": "gpt-4o-mini"}
        )
        assert checked["data"]["connect_status"] == "AVAILABLE" and checked["data"]["status"] == "Connected"


async def test_config_round_trip_and_reload(cluster):
    user = await _seed_client(cluster)
    async with user.http:
        config = {
            "app": {
                "name": "Desk",
                "description": "Helps.",
                "icon": {"type": "preset", "avatarUri": "a", "customUrl": ""},
            },
            "models": {
                "llm": {
                    "name": "gpt-4o-mini",
                    "displayName": "Mini",
                    "apiConfig": {"apiKey": "", "modelUrl": ""},
                }
            },
            "data": {
                "selectedKbNames": ["kb"],
                "selectedKbModels": ["gpt-4o-mini"],
                "selectedKbSources": ["a.pdf"],
            },
        }
        saved = await user.http.post("/api/config/save_config", json=config)
        assert saved.json() == {"message": "Configuration saved successfully", "status": "saved"}
        loaded = (await user.http.get("/api/config/load_config")).json()
        assert set(loaded) == {"config"}
        assert loaded["config"]["app"] == config["app"] and loaded["config"]["data"] == config["data"]
        assert loaded["config"]["models"]["llm"]["name"] == "gpt-4o-mini"
        assert loaded["config"]["models"]["llm"]["apiConfig"]["apiKey"] == ""

        reloaded = (await user.http.post("/api/agent/reload_config")).json()
        assert reloaded["status"] == "success" and "provider_models" in reloaded["reloaded"]


async def test_the_image_proxy_fetches_through_the_egress_policy(cluster):
    class Images(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = GIF if self.path == "/pixel.gif" else b"<html></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    user = await _seed_client(cluster)
    try:
        async with user.http:
            image = await user.http.get("/api/proxy/image", params={"url": f"{base}/pixel.gif"})
            assert image.json() == {
                "success": True,
                "base64": base64.b64encode(GIF).decode(),
                "content_type": "image/gif",
            }
            page = await user.http.get("/api/proxy/image", params={"url": f"{base}/page"})
            assert page.status_code == 415 and page.json()["success"] is False
            private = await user.http.get("/api/proxy/image", params={"url": "http://10.1.2.3/x.png"})
            assert private.status_code == 403 and private.json()["code"] == "egress_denied"
    finally:
        server.shutdown()
        server.server_close()
