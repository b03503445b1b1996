"""The network guard of tests/conftest.py: loopback passes, anything else fails the test."""

from __future__ import annotations

import socket

import pytest

from tests import netguard


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def test_loopback_connections_and_localhost_lookups_pass(listener):
    port = listener.getsockname()[1]
    for host in ("127.0.0.1", "localhost", "0.0.0.0"):
        with socket.create_connection((host, port), timeout=5):
            pass
    assert socket.getaddrinfo("localhost", port)
    assert netguard.take_violations() == []


@pytest.mark.parametrize(
    "address", [("10.0.0.1", 80), ("169.254.169.254", 80), ("93.184.215.14", 443), ("::ffff:10.0.0.1", 80)]
)
def test_a_connection_past_loopback_is_refused_and_recorded(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(netguard.NetworkGuardError):
        sock.connect(address)
    # Taken here so that this test passes: any other test fails at its teardown.
    assert len(netguard.take_violations()) == 1


def test_a_lookup_of_a_real_name_is_refused_even_when_swallowed():
    try:
        socket.getaddrinfo("api.openai.com", 443)
    except Exception:
        pass  # what a careless client would do
    assert [v for v in netguard.take_violations() if "api.openai.com" in v]


async def test_asyncio_connections_go_through_the_guard():
    import asyncio

    with pytest.raises(netguard.NetworkGuardError):
        await asyncio.wait_for(asyncio.open_connection("10.0.0.1", 80), 5)
    assert len(netguard.take_violations()) == 1
