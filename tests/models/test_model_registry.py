"""The model registry over seed 002's ``/api/model/*`` and ``/api/me/*`` (Django's test client;
the dialect test runs the same against daphne): who may write what, and health checks that are
real calls through the provider's code to a loopback fake OpenAI server."""

from __future__ import annotations

import pytest

from agents.models import ConnectStatus, ModelEntry
from tests.conftest import CLOSED_LOOPBACK_URL
from tests.fakes import FakeServerProcess, Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def fake():
    with FakeServerProcess("openai") as server:
        yield server


def ok(response, message: str | None = None):
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["code"] == 200, body
    if message is not None:
        assert body["message"] == message
    return body["data"]


def refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == status and body["data"] is None and body["error"] == code, body
    return body


def test_staff_share_a_model_which_users_see_and_health_check_for_real(alice, operator, fake):
    fake.reset()
    created = operator.post(
        "/api/model/create",
        {
            "model_name": "fake-model",
            "display_name": "The fake",
            "connect_status": "not_detected",
            "provider": "openai",
            "base_url": fake.base_url,
        },
        format="json",
    )
    assert ok(created, "Model created successfully") is None
    entry = ModelEntry.objects.get(model_name="fake-model")
    assert entry.owner is None and entry.model_type == "llm"

    listed = ok(alice.get("/api/model/list"), "Successfully retrieved model list")
    (mine,) = [m for m in listed if m["model_name"] == "fake-model"]
    assert {"model_id", "model_name", "model_repo", "display_name", "connect_status"} <= set(mine)
    assert mine["display_name"] == "The fake" and mine["connect_status"] == "not_detected"
    assert mine["shared"] is True and mine["is_builtin"] is False

    fake.script(Reply(text="pong"))
    health = ok(
        alice.get("/api/model/healthcheck", {"model_name": "fake-model"}), "Model health check successful"
    )
    assert health["connect_status"] == "available" and health["status"] == "Connected"
    (request,) = [r for r in fake.requests if r.path == "/v1/chat/completions"]
    assert request.json["model"] == "fake-model"
    entry.refresh_from_db()
    assert entry.connect_status == ConnectStatus.AVAILABLE and entry.checked_at is not None
    status = ok(alice.get("/api/model/get_connect_status", {"model_name": "fake-model"}))
    assert status == {"model_name": "fake-model", "connect_status": "available"}

    # the provider refuses: unavailable, and the row says so
    fake.script(Reply(status=401, error_message="bad key"))
    health = ok(alice.get("/api/model/healthcheck", {"model_name": "fake-model"}))
    assert health["connect_status"] == "unavailable" and health["desc"]
    assert (
        ok(alice.get("/api/model/get_connect_status", {"model_name": "fake-model"}))["connect_status"]
        == "unavailable"
    )


def test_a_model_nobody_answers_for_is_unavailable(operator):
    ok(
        operator.post(
            "/api/model/create",
            {"model_name": "nowhere", "provider": "openai", "base_url": f"{CLOSED_LOOPBACK_URL}/v1"},
            format="json",
        )
    )
    health = ok(operator.get("/api/model/healthcheck", {"model_name": "nowhere"}))
    assert health["connect_status"] == "unavailable" and health["status"] == "Disconnected"
    refused(operator.get("/api/model/healthcheck", {"model_name": "no-such-model"}), 404, "not_found")
    # a private address the operator did not allow: refused by the egress policy, never connected to
    ok(
        operator.post(
            "/api/model/create",
            {"model_name": "inside", "provider": "openai", "base_url": "http://10.20.30.40/v1"},
            format="json",
        )
    )
    health = ok(operator.get("/api/model/healthcheck", {"model_name": "inside"}))
    assert health["connect_status"] == "unavailable" and "egress" in health["desc"]


def test_who_may_write_what(alice, mallory, operator):
    ok(operator.post("/api/model/create", {"model_name": "shared-one", "provider": "openai"}, format="json"))
    # a user's own model: theirs alone
    ok(alice.post("/api/model/create", {"model_name": "mine", "display_name": "Mine"}, format="json"))
    assert ModelEntry.objects.get(model_name="mine").owner is not None
    assert "mine" not in [m["model_name"] for m in ok(mallory.get("/api/model/list"))]
    refused(mallory.post("/api/model/delete", {"model_name": "mine"}, format="json"), 404, "not_found")
    # where the server connects and which key it sends: staff only; keys are never taken
    for body in (
        {"model_name": "x", "base_url": "http://10.0.0.1/v1"},
        {"model_name": "x", "api_key_env": "OPENAI_API_KEY"},
        {"model_name": "x", "shared": True},
    ):
        refused(alice.post("/api/model/create", body, format="json"), 403, "forbidden")
    refused(
        alice.post("/api/model/create", {"model_name": "x", "api_key": "sk-123"}, format="json"),
        400,
        "validation_error",
    )
    refused(
        alice.post("/api/model/create", {"model_name": "x", "provider": "nope"}, format="json"),
        400,
        "validation_error",
    )
    refused(
        alice.post("/api/model/create", {"display_name": "no name"}, format="json"), 400, "validation_error"
    )
    refused(alice.post("/api/model/create", {"model_name": "mine"}, format="json"), 400, "validation_error")
    refused(
        operator.post(
            "/api/model/create", {"model_name": "k", "api_key_env": "sk-not-a-name"}, format="json"
        ),
        400,
        "validation_error",
    )
    # shared models: staff change and delete them
    refused(
        alice.post(
            "/api/model/update", {"model_name": "shared-one", "display_name": "Mine now"}, format="json"
        ),
        403,
        "forbidden",
    )
    refused(
        alice.post(
            "/api/model/update_connect_status",
            {"model_name": "shared-one", "connect_status": "available"},
            format="json",
        ),
        403,
        "forbidden",
    )
    refused(alice.post("/api/model/delete", {"model_name": "shared-one"}, format="json"), 403, "forbidden")
    updated = ok(
        alice.post("/api/model/update", {"model_name": "mine", "display_name": "Still mine"}, format="json"),
        "Model updated successfully",
    )
    assert updated == {"model_name": "mine"}
    set_status = ok(
        alice.post(
            "/api/model/update_connect_status",
            {"model_name": "mine", "connect_status": "AVAILABLE"},
            format="json",
        )
    )
    assert set_status == {"model_name": "mine", "connect_status": "available"}
    refused(
        alice.post(
            "/api/model/update_connect_status",
            {"model_name": "mine", "connect_status": "great"},
            format="json",
        ),
        400,
        "validation_error",
    )
    assert ok(alice.post("/api/model/delete", {"model_name": "mine"}, format="json")) == {
        "model_name": "mine"
    }
    assert ok(operator.post("/api/model/delete", {"model_name": "shared-one"}, format="json")) == {
        "model_name": "shared-one"
    }
    assert not ModelEntry.objects.exists()
    refused(alice.get("/api/model/create"), 405, "method_not_allowed")


def test_the_providers_own_models_are_listed_checked_and_reloaded(alice, operator, fake, settings):
    settings.OPENAI_BASE_URL = fake.base_url
    models = ok(alice.get("/api/me/model/list"), "Successfully retrieved")
    openai = [m for m in models if m["id"].startswith("openai:")]
    assert {m["name"] for m in openai} == {"gpt-4o-mini", "fake-model"}
    assert all(set(m) == {"id", "name", "type", "description"} and m["type"] == "llm" for m in openai)
    assert ok(alice.get("/api/me/model/list", {"type": "embedding"})) == [
        m for m in models if m["type"] == "embedding"
    ]
    refused(alice.get("/api/me/model/list", {"type": "video"}), 400, "validation_error")
    listed = ok(alice.get("/api/model/list"))
    assert {"openai:gpt-4o-mini", "openai:fake-model"} <= {m["model_id"] for m in listed if m["is_builtin"]}

    me = ok(alice.get("/api/me/healthcheck"), "Connection successful")
    assert me == {"status": "Connected", "desc": me["desc"], "connect_status": "AVAILABLE"}
    fake.script(Reply(text="pong"))
    checked = ok(alice.get("/api/me/model/healthcheck", {"model_name": "gpt-4o-mini"}))
    assert checked["connect_status"] == "AVAILABLE"
    # built-in models are the providers': not edited here
    refused(alice.post("/api/model/delete", {"model_name": "gpt-4o-mini"}, format="json"), 404, "not_found")

    # the list is cached; a reload drops it
    settings.OPENAI_BASE_URL = f"{CLOSED_LOOPBACK_URL}/v1"
    assert "openai:gpt-4o-mini" in {m["id"] for m in ok(alice.get("/api/me/model/list"))}
    answer = alice.post("/api/agent/reload_config", format="json").json()
    assert answer["status"] == "success" and "providers" not in answer["reloaded"]
    assert "provider_models" in answer["reloaded"]
    assert "openai:gpt-4o-mini" not in {m["id"] for m in ok(alice.get("/api/me/model/list"))}
    staff = operator.post("/api/agent/reload_config", format="json").json()
    assert {"providers", "egress_policy", "server_tools", "health_providers"} <= set(staff["reloaded"])
    assert alice.get("/api/agent/reload_config").status_code == 405


def test_the_admin_lists_models_and_checks_their_health(staff_user, fake, client):
    entry = ModelEntry.objects.create(model_name="fake-model", provider="openai", base_url=fake.base_url)
    client.force_login(staff_user)
    assert client.get("/admin/agents/modelentry/").status_code == 200
    fake.script(Reply(text="pong"))
    response = client.post(
        "/admin/agents/modelentry/",
        {"action": "health_check", "_selected_action": [str(entry.pk)]},
        follow=True,
    )
    assert "Fake-model: available" in response.content.decode()  # the admin capitalises messages
    entry.refresh_from_db()
    assert entry.connect_status == ConnectStatus.AVAILABLE
    refused = client.post(
        "/admin/agents/modelentry/add/",
        {"model_name": "k", "provider": "openai", "model_type": "llm", "api_key_env": "sk-live-123"},
    )
    assert refused.status_code == 200 and "_API_KEY" in refused.content.decode()
    assert not ModelEntry.objects.filter(model_name="k").exists()


def test_nul_characters_in_model_names_are_refused(alice):
    for path in ("/api/model/get_connect_status", "/api/model/healthcheck", "/api/me/model/healthcheck"):
        refused(alice.get(path, {"model_name": "a\x00b"}), 400, "validation_error")
    refused(alice.post("/api/model/create", {"model_name": "a\x00b"}, format="json"), 400, "validation_error")
    refused(
        alice.post("/api/model/create", {"model_name": "s", "shared": "false"}, format="json"),
        400,
        "validation_error",
    )
    refused(
        alice.post("/api/model/create", {"model_name": "ok", "display_name": "a\x00"}, format="json"),
        400,
        "validation_error",
    )
