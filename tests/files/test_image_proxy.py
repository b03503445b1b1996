"""Seed 002's image proxy (``GET /api/proxy/image?url=``) against a loopback HTTP server: images
only (read from the bytes), size capped, cached, the egress policy obeyed (redirects included)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db(transaction=True)

GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


class _Images(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def images() -> Iterator[tuple[str, type[_Images]]]:
    handler = type("Images", (_Images,), {"routes": {}, "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_an_image_comes_back_as_base64_typed_by_its_bytes_and_is_cached(alice, images):
    base, handler = images
    # the upstream calls it text: the bytes say GIF
    handler.routes["/pixel"] = (200, {"Content-Type": "text/plain"}, GIF)
    first = alice.get("/api/proxy/image", {"url": f"{base}/pixel"})
    assert first.status_code == 200, first.content
    assert first.json() == {
        "success": True,
        "base64": base64.b64encode(GIF).decode(),
        "content_type": "image/gif",
    }
    again = alice.get("/api/proxy/image", {"url": f"{base}/pixel"})
    assert again.json() == first.json()
    assert handler.hits == ["/pixel"]  # the second answer came from the cache


def test_what_is_not_an_image_or_too_large_or_failing_is_refused(alice, images, settings):
    base, handler = images
    settings.NEXUS_PROXY_IMAGE_MAX_BYTES = 2048
    handler.routes["/page"] = (200, {"Content-Type": "image/png"}, b"<html>not an image</html>")
    handler.routes["/big"] = (200, {}, GIF + b"\x00" * 4096)
    handler.routes["/gone"] = (410, {}, b"")
    for path, status, code in (
        ("/page", 415, "unsupported_media_type"),
        ("/big", 413, "image_too_large"),
        ("/gone", 502, "upstream_error"),
    ):
        body = assert_error(alice.get("/api/proxy/image", {"url": f"{base}{path}"}), status, code)
        assert body["success"] is False
    for bad in (
        "",
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "http://",
        "http://a\x00b/x.png",
        "http://e.com/" + "x" * 3000,
    ):
        assert_error(alice.get("/api/proxy/image", {"url": bad}), 400, "validation_error")
    assert_error(alice.get("/api/proxy/image"), 400, "validation_error")


def test_the_egress_policy_refuses_private_addresses_and_redirects_to_them(alice, images, settings, anon):
    base, handler = images
    handler.routes["/pixel"] = (200, {}, GIF)
    settings.NEXUS_EGRESS_ALLOW = []
    body = assert_error(alice.get("/api/proxy/image", {"url": f"{base}/pixel"}), 403, "egress_denied")
    assert "127.0.0.1" not in body["detail"]
    for url in ("http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x.png", "http://[::1]/x.png"):
        assert_error(alice.get("/api/proxy/image", {"url": url}), 403, "egress_denied")
    assert handler.hits == []
    assert anon.get("/api/proxy/image", {"url": f"{base}/pixel"}).status_code == 401


def test_a_redirect_is_checked_like_the_first_hop(alice, images, settings):
    base, handler = images
    port = base.rsplit(":", 1)[1]
    handler.routes["/pixel"] = (200, {}, GIF)
    handler.routes["/hop"] = (302, {"Location": "http://169.254.169.254/latest/meta-data"}, b"")
    # the first address is allowed, the one it redirects to (the cloud metadata address) is not
    settings.NEXUS_EGRESS_ALLOW = [f"127.0.0.1:{port}"]
    assert alice.get("/api/proxy/image", {"url": f"{base}/pixel"}).status_code == 200
    assert_error(alice.get("/api/proxy/image", {"url": f"{base}/hop"}), 403, "egress_denied")
    assert handler.hits == ["/pixel", "/hop"]
