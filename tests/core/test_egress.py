"""The egress policy on its own: parsing the operator's lists, judging addresses, the transport's
refusals (before any connection), each checked against real loopback servers where it connects."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from core.egress import (
    AllowEntry,
    EgressDenied,
    EgressPolicy,
    address_refusal,
    parse_allow_list,
    parse_key_hosts,
)
from tests.fakes import FakeOpenAI
from tests.fakes.server import Plan, RecordedRequest

pytestmark = pytest.mark.timeout(30)


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "network", "port"),
    [
        ("127.0.0.1", None, "127.0.0.1/32", None),
        ("10.0.0.0/8", None, "10.0.0.0/8", None),
        ("10.1.2.3/8", None, "10.0.0.0/8", None),  # host bits are dropped, as the operator meant
        ("10.0.0.0/8:443", None, "10.0.0.0/8", 443),
        ("::1", None, "::1/128", None),
        ("[::1]", None, "::1/128", None),
        ("[::1]:11434", None, "::1/128", 11434),
        ("fd00::/8", None, "fd00::/8", None),
        ("[fd00::]/8:8080", None, "fd00::/8", 8080),
        ("Ollama.Internal.", "ollama.internal", None, None),
        ("localhost:11434", "localhost", None, 11434),
        ("*.corp.example", "*.corp.example", None, None),
    ],
)
def test_allow_entries_parse_hosts_cidrs_ipv6_and_ports(text, host, network, port):
    entry = AllowEntry.parse(text)
    assert entry.host == host
    assert entry.network == (ipaddress.ip_network(network) if network else None)
    assert entry.port == port


@pytest.mark.parametrize(
    "text",
    ["10.0.0.0/33", "300.1.1.1/8", "host:0", "host:65536", "host:http", "[::1", "[::1]x", "a b", "x/y", "*."],
)
def test_it_rejects_bad_allow_entries(text):
    with pytest.raises(ValueError):
        parse_allow_list([text])


def test_key_hosts_parse_variables_hosts_and_ports():
    assert parse_key_hosts(
        ["GROQ_API_KEY=api.groq.com", "OPENAI_API_KEY=api.openai.com|My-Proxy.internal:8443", ""]
    ) == {"GROQ_API_KEY": ("api.groq.com",), "OPENAI_API_KEY": ("api.openai.com", "my-proxy.internal:8443")}


@pytest.mark.parametrize(
    "text",
    ["api.groq.com", "HOME=example.com", "GROQ_API_KEY=", "GROQ_API_KEY=10.0.0.0/8", "GROQ_API_KEY=a b"],
)
def test_it_rejects_bad_key_bindings(text):
    with pytest.raises(ValueError):
        parse_key_hosts([text])


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback (IPv4 inside IPv6)"),
        ("::ffff:169.254.169.254", "link-local (IPv4 inside IPv6)"),
        ("::ffff:10.0.0.1", "private (IPv4 inside IPv6)"),
        ("::127.0.0.1", "loopback (IPv4 inside IPv6)"),
        ("64:ff9b::a9fe:a9fe", "link-local (IPv4 inside IPv6)"),
        ("2002:7f00:1::1", "loopback (IPv4 inside IPv6)"),
        ("::ffff:8.8.8.8", "IPv4-embedding IPv6"),
    ],
)
def test_it_refuses_every_non_public_address_and_says_why(address, reason):
    assert address_refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001::200e"])
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_an_allowed_cidr_admits_its_addresses_and_their_mapped_forms_only_on_its_port():
    policy = EgressPolicy.build(allow=["10.0.0.0/8:443", "::1"])
    assert policy.address_allowed(ipaddress.ip_address("10.2.3.4"), 443) == (True, None)
    assert policy.address_allowed(ipaddress.ip_address("::ffff:10.2.3.4"), 443) == (True, None)
    assert policy.address_allowed(ipaddress.ip_address("10.2.3.4"), 80) == (False, "private")
    assert policy.address_allowed(ipaddress.ip_address("11.0.0.1"), 443) == (True, None)  # public
    assert policy.address_allowed(ipaddress.ip_address("::1"), 8080) == (True, None)
    assert policy.address_allowed(ipaddress.ip_address("127.0.0.1"), 8080) == (False, "loopback")


async def test_resolution_is_checked_answer_by_answer():
    answers = {"public.test": ["93.184.216.34"], "mixed.test": ["93.184.216.34", "10.0.0.7"]}

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    policy = EgressPolicy.build(resolver=resolver)
    assert await policy.resolve("public.test", 443) == ["93.184.216.34"]
    with pytest.raises(EgressDenied) as caught:
        await policy.resolve("mixed.test", 443)  # one private answer refuses the name
    assert caught.value.reason == "private"
    assert "10.0.0.7" in str(caught.value) and "10.0.0.7" not in caught.value.public_message
    allowed = EgressPolicy.build(allow=["mixed.test:443"], resolver=resolver)
    assert await allowed.resolve("mixed.test", 443) == ["93.184.216.34", "10.0.0.7"]
    with pytest.raises(EgressDenied):
        await allowed.resolve("mixed.test", 80)


async def test_localhost_resolves_to_loopback_and_is_refused():
    with pytest.raises(EgressDenied) as caught:
        await EgressPolicy.build().resolve("localhost", 80)
    assert caught.value.reason == "loopback"


def test_a_key_goes_only_to_the_hosts_it_is_bound_to():
    policy = EgressPolicy.build(key_hosts={"GROQ_API_KEY": ["api.groq.com", "proxy.internal:8443"]})
    assert policy.key_may_go_to("OPENAI_API_KEY", "https://api.openai.com/v1")
    assert not policy.key_may_go_to("OPENAI_API_KEY", "https://api.openai.com.evil.example/v1")
    assert not policy.key_may_go_to("OPENAI_API_KEY", "https://api.openai.com@evil.example/v1")
    assert not policy.key_may_go_to("OPENAI_API_KEY", "http://127.0.0.1:8000/v1")
    assert policy.key_may_go_to("GROQ_API_KEY", "https://api.groq.com/openai/v1")
    assert policy.key_may_go_to("GROQ_API_KEY", "https://proxy.internal:8443/v1")
    assert not policy.key_may_go_to("GROQ_API_KEY", "https://proxy.internal/v1")  # port 443
    assert not policy.key_may_go_to("SOMETHING_API_KEY", "https://api.groq.com/")  # bound nowhere


def test_the_policy_never_shows_the_keys_it_guards():
    policy = EgressPolicy.build(keys={"OPENAI_API_KEY": "sk-guarded-value-123"})
    assert "sk-guarded-value-123" not in repr(policy)


# --- the transport ----------------------------------------------------------------------------


class Redirector(FakeOpenAI):
    """Answers every request with a 307 to ``target``."""

    target = ""

    def route(self, request: RecordedRequest) -> Plan:
        return Plan(status=307, headers={"location": self.target, "content-length": "0"})


async def test_the_transport_refuses_loopback_without_connecting():
    with FakeOpenAI() as capture:
        policy = EgressPolicy.build()
        async with httpx.AsyncClient(transport=policy.transport()) as client:
            with pytest.raises(EgressDenied):
                await client.get(f"{capture.url}/v1/models")
        assert capture.requests == []


async def test_a_redirect_to_a_refused_address_is_refused_at_that_hop():
    with FakeOpenAI() as capture, Redirector() as redirector:
        redirector.target = f"{capture.url}/v1/models"
        policy = EgressPolicy.build(allow=[f"127.0.0.1:{redirector.port}"])
        async with httpx.AsyncClient(transport=policy.transport(), follow_redirects=True) as client:
            with pytest.raises(EgressDenied) as caught:
                await client.get(f"{redirector.url}/v1/models")
        assert caught.value.reason == "loopback"
        assert len(redirector.requests) == 1 and capture.requests == []


async def test_a_guarded_key_is_not_carried_through_a_redirect_to_another_host():
    secret = "AIza-operator-secret-0123456789"
    with FakeOpenAI() as capture, Redirector() as redirector:
        redirector.target = f"{capture.url}/v1/models"
        policy = EgressPolicy.build(
            allow=["127.0.0.1"],
            key_hosts={"GOOGLE_API_KEY": [f"127.0.0.1:{redirector.port}"]},
            keys={"GOOGLE_API_KEY": secret},
        )
        async with httpx.AsyncClient(transport=policy.transport(), follow_redirects=True) as client:
            with pytest.raises(EgressDenied) as caught:
                await client.get(f"{redirector.url}/v1/models", headers={"x-goog-api-key": secret})
        assert caught.value.reason == "key_not_bound"
        assert redirector.requests[0].headers["x-goog-api-key"] == secret  # its bound host got it
        assert capture.requests == []


async def test_an_allowed_destination_is_reached_with_its_host_header():
    with FakeOpenAI() as server:
        policy = EgressPolicy.build(allow=[f"localhost:{server.port}"])
        async with httpx.AsyncClient(transport=policy.transport()) as client:
            response = await client.get(f"http://localhost:{server.port}/v1/models")
        assert response.status_code == 200
        assert server.requests[0].headers["host"] == f"localhost:{server.port}"


# --- the same transport for httpx2 (the mcp package's HTTP client, docs/mcp.md) -----------------


async def test_the_httpx2_transport_refuses_loopback_without_connecting_and_reaches_what_is_allowed():
    import httpx2

    with FakeOpenAI() as capture:
        async with httpx2.AsyncClient(transport=EgressPolicy.build().transport2()) as client:
            with pytest.raises(EgressDenied) as caught:
                await client.get(f"{capture.url}/v1/models")
        assert caught.value.reason == "loopback" and capture.requests == []
        allowed = EgressPolicy.build(allow=[f"127.0.0.1:{capture.port}"])
        async with httpx2.AsyncClient(transport=allowed.transport2()) as client:
            assert (await client.get(f"{capture.url}/v1/models")).status_code == 200


async def test_the_httpx2_transport_checks_each_redirect_hop_and_guarded_keys():
    import httpx2

    secret = "sk-operator-secret-0123456789"
    with FakeOpenAI() as capture, Redirector() as redirector:
        redirector.target = f"{capture.url}/v1/models"
        policy = EgressPolicy.build(allow=[f"127.0.0.1:{redirector.port}"])
        async with httpx2.AsyncClient(transport=policy.transport2(), follow_redirects=True) as client:
            with pytest.raises(EgressDenied) as caught:
                await client.get(f"{redirector.url}/v1/models")
        assert caught.value.reason == "loopback" and capture.requests == []
        keyed = EgressPolicy.build(allow=["127.0.0.1"], keys={"OPENAI_API_KEY": secret})
        async with httpx2.AsyncClient(transport=keyed.transport2()) as client:
            with pytest.raises(EgressDenied) as caught:
                await client.get(f"{capture.url}/v1/models", headers={"Authorization": f"Bearer {secret}"})
        assert caught.value.reason == "key_not_bound" and capture.requests == []
