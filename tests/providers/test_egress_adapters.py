"""Every remote adapter sends its HTTP through the egress policy it is given: a refused address
is an ``egress_denied`` ProviderError, raised before any connection and never retried."""

from __future__ import annotations

import pytest

from core.egress import EgressPolicy
from tests.providers.helpers import Remote, collect, collect_error

pytestmark = pytest.mark.timeout(30)


async def test_an_adapter_refuses_a_loopback_url_under_a_strict_policy(remote: Remote):
    strict = Remote(
        remote.name, remote.server, remote.factory(egress=EgressPolicy.build()), remote.model, remote.factory
    )
    events, error = await collect_error(strict.stream())
    assert events == []
    assert error.kind == "egress_denied"
    assert "loopback" in error.message and "127.0.0.1" not in error.public_message
    assert remote.server.requests == []  # refused before connecting, and not retried
    status = await strict.provider.status(options=strict.options())
    assert status.reachable is False and status.safe_detail == error.public_message
    assert remote.server.requests == []


async def test_an_adapter_reaches_an_allowed_address(remote: Remote):
    policy = EgressPolicy.build(allow=[f"127.0.0.1:{remote.server.port}"])
    allowed = Remote(remote.name, remote.server, remote.factory(egress=policy), remote.model, remote.factory)
    events = await collect(allowed.stream())
    assert events[-1].reason == "stop"
    assert len(remote.server.requests) == 1
