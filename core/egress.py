"""The egress policy: where the server may open outbound HTTP connections, and where an operator's
API key may be sent. One policy for every outbound fetch (provider base URLs today; MCP servers and
document URLs reuse it).

Addresses: public ones by default. Loopback, private (RFC 1918, fc00::/7), link-local (the cloud
metadata address 169.254.169.254 included), shared CGNAT space (100.64.0.0/10), unspecified,
multicast and reserved addresses, and IPv6 forms that embed one of them (IPv4-mapped ``::ffff:a.b.c.d``,
IPv4-compatible, 6to4, NAT64), are refused unless the operator allows them
(``NEXUS_EGRESS_ALLOW``: hosts, IPs, CIDRs, each optionally with ``:port``).

The check runs on the addresses a name resolves to, at connect time, and the connection goes to
the address that was checked: there is no window between the check and the connect for a DNS
answer to change (rebinding). The TLS handshake and the Host header still use the URL's name.
Every request goes through :class:`EgressTransport`, so each redirect hop is checked like the first.

Keys: an operator key (the value of a ``*_API_KEY`` variable) may only travel to the hosts it is
bound to (:data:`DEFAULT_KEY_HOSTS`, or the operator's ``NEXUS_KEY_HOSTS``). The transport refuses
a request that carries a guarded key to any other host, whatever built the request.

This module imports no Nexus app and reads no environment: the policy is built from settings by
its caller and passed in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpcore
import httpcore2
import httpx
import httpx2

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses the host resolves to. Tests may pass their own (a name of theirs).
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Where each well-known key may go when the operator binds it nowhere else (NEXUS_KEY_HOSTS).
DEFAULT_KEY_HOSTS: Mapping[str, tuple[str, ...]] = {
    "OPENAI_API_KEY": ("api.openai.com",),
    "GOOGLE_API_KEY": ("generativelanguage.googleapis.com",),
    "GEMINI_API_KEY": ("generativelanguage.googleapis.com",),
    "GROQ_API_KEY": ("api.groq.com",),
    "OPENROUTER_API_KEY": ("openrouter.ai",),
    "MISTRAL_API_KEY": ("api.mistral.ai",),
    "DEEPSEEK_API_KEY": ("api.deepseek.com",),
    "TOGETHER_API_KEY": ("api.together.xyz",),
    "FIREWORKS_API_KEY": ("api.fireworks.ai",),
    "XAI_API_KEY": ("api.x.ai",),
    "ANTHROPIC_API_KEY": ("api.anthropic.com",),
    "OLLAMA_API_KEY": ("ollama.com",),
}
DEFAULT_PORTS = {"http": 80, "https": 443}
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


class EgressDenied(Exception):
    """An outbound request the policy refuses. ``str()`` names the host and the reason (for logs
    and staff); :attr:`public_message` names neither (for anyone else)."""

    public_message = "The address of this provider is not allowed by the server's egress policy."

    def __init__(self, message: str, *, host: str, reason: str) -> None:
        super().__init__(message)
        self.host = host
        self.reason = reason


# --- parsing ---------------------------------------------------------------------------------------


def normalize_host(host: str) -> str:
    """Lower case, no brackets around an IPv6 literal, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".")


def _split_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port``, ``v6`` (no port), ``cidr:port``."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: unclosed [")
        host, rest = text[1:end], text[end + 1 :]
        if rest.startswith("/"):  # "[fd00::]/8" or "[fd00::]/8:443": a CIDR written with brackets
            prefix, _, port_text = rest.partition(":")
            host += prefix
        elif rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected :port after ]")
        else:
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""  # a bare IPv6 address or CIDR has no port
    if port_text == "":
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """One ``NEXUS_EGRESS_ALLOW`` item: a host name (``*.suffix`` for a domain's names) or an
    address range, optionally restricted to one port."""

    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        host, port = _split_port(text)
        host = normalize_host(host)
        if not host:
            raise ValueError(f"{text!r}: no host")
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            network = None
        if network is not None:
            return cls(network=network, port=port)
        if "/" in host:
            raise ValueError(f"{text!r} is not a valid CIDR range")
        name = host[2:] if host.startswith("*.") else host
        if not name or not all(part and len(part) < 64 for part in name.split(".")):
            raise ValueError(f"{text!r} is not a host name, an IP address or a CIDR range")
        if any(not (ch.isalnum() or ch in "-_") for ch in name.replace(".", "")):
            raise ValueError(f"{text!r} is not a host name, an IP address or a CIDR range")
        return cls(host=host, port=port)

    def _port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port

    def matches_host(self, host: str, port: int) -> bool:
        if self.host is None or not self._port_ok(port):
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def matches_address(self, address: IPAddress, port: int) -> bool:
        if self.network is None or not self._port_ok(port):
            return False
        candidates = [address, *_embedded_ipv4(address)]
        return any(c.version == self.network.version and c in self.network for c in candidates)

    def __str__(self) -> str:
        where = self.host if self.host is not None else str(self.network)
        if self.network is not None and self.network.version == 6 and self.port is not None:
            where = f"[{where}]"
        return f"{where}:{self.port}" if self.port is not None else where


def parse_allow_list(items: Iterable[str]) -> tuple[AllowEntry, ...]:
    """``NEXUS_EGRESS_ALLOW``'s items; ValueError names the first bad one."""
    return tuple(AllowEntry.parse(item) for item in items if item.strip())


def parse_key_hosts(items: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``NEXUS_KEY_HOSTS``'s items, each ``VARIABLE=host|host:port|...``; ValueError on a bad one."""
    bindings: dict[str, tuple[str, ...]] = {}
    for item in items:
        if not item.strip():
            continue
        variable, sep, hosts = item.partition("=")
        variable = variable.strip()
        if not sep or not variable.endswith("_API_KEY") or not variable.replace("_", "").isalnum():
            raise ValueError(f"{item!r} is not VARIABLE_API_KEY=host|host...")
        names = []
        for text in hosts.split("|"):
            if not text.strip():
                continue
            entry = AllowEntry.parse(text)
            if entry.host is None and entry.network is not None and entry.network.num_addresses != 1:
                raise ValueError(f"{item!r}: a key is bound to hosts, not to address ranges")
            names.append(_host_key(text))
        if not names:
            raise ValueError(f"{item!r} binds {variable} to no host")
        bindings[variable] = (*bindings.get(variable, ()), *names)
    return bindings


def _host_key(text: str) -> str:
    host, port = _split_port(text)
    host = normalize_host(host)
    return f"{host}:{port}" if port is not None else host


def url_host_port(url: str | httpx.URL) -> tuple[str, int] | None:
    """(host, port) of an http(s) URL, the port defaulted by scheme; None for anything else."""
    try:
        parts = urlsplit(str(url))
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return normalize_host(parts.hostname), port or DEFAULT_PORTS[parts.scheme]


# --- addresses -------------------------------------------------------------------------------------


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, NAT64)."""
    if address.version != 6:
        return []
    assert isinstance(address, ipaddress.IPv6Address)
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public one (e.g. "loopback"), or None when it is."""
    for inner in _embedded_ipv4(address):
        # An IPv6 form of an IPv4 address (mapped, compatible, 6to4, NAT64) reaches that address
        # through the IPv4 stack or a gateway: never public by itself, unless allowed.
        reason = address_refusal(inner)
        return f"{reason} (IPv4 inside IPv6)" if reason else "IPv4-embedding IPv6"
    if address.version == 6 and (address in _NAT64_LOCAL or getattr(address, "teredo", None)):
        return "reserved"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.version == 4 and address in _CGNAT:
        return "shared (CGNAT)"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved or getattr(address, "is_site_local", False):
        return "reserved"
    if not address.is_global:
        return "not public"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's answer for ``host`` (IPv4 and IPv6), in its order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # no IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    return addresses


# --- the policy --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Where outbound connections may go and where each operator key may be sent.

    ``allow``: the operator's exceptions to "public addresses only". ``key_hosts``: for each key
    variable, the hosts (``host`` or ``host:port``) it may be sent to. ``guarded_keys``: the key
    values the transport refuses to send anywhere else, as (value, hosts) pairs; never shown in
    ``repr``. ``resolver``: how names become addresses (the system's by default).
    """

    allow: tuple[AllowEntry, ...] = ()
    key_hosts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    guarded_keys: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), repr=False)
    resolver: Resolver | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        *,
        allow: Iterable[str] = (),
        key_hosts: Mapping[str, Sequence[str]] | None = None,
        keys: Mapping[str, str] | None = None,
        resolver: Resolver | None = None,
    ) -> EgressPolicy:
        """A policy from settings' values: ``allow`` items, operator ``key_hosts`` (replacing the
        default hosts of the variables they name) and the operator's ``keys`` (variable -> value)."""
        bindings = {name: tuple(hosts) for name, hosts in DEFAULT_KEY_HOSTS.items()}
        bindings.update(
            {name: tuple(_host_key(h) for h in hosts) for name, hosts in (key_hosts or {}).items()}
        )
        guarded = tuple(
            (value, bindings.get(variable, ()))
            for variable, value in sorted((keys or {}).items())
            if value and value.strip()
        )
        return cls(
            allow=parse_allow_list(allow),
            key_hosts=tuple(sorted(bindings.items())),
            guarded_keys=guarded,
            resolver=resolver,
        )

    # -- keys

    def key_hosts_of(self, variable: str) -> tuple[str, ...]:
        for name, hosts in self.key_hosts:
            if name == variable:
                return hosts
        return ()

    def key_may_go_to(self, variable: str, url: str | httpx.URL) -> bool:
        """Whether the key held by ``variable`` may be sent to ``url``'s host."""
        where = url_host_port(url)
        return where is not None and _bound(self.key_hosts_of(variable), *where)

    def check_request_keys(self, request: httpx.Request | httpx2.Request) -> None:
        """Refuse ``request`` if it carries a guarded key to a host that key is not bound to."""
        if not self.guarded_keys:
            return
        host = normalize_host(request.url.host)
        port = request.url.port or DEFAULT_PORTS.get(request.url.scheme, 0)
        tokens = {value.rsplit(" ", 1)[-1] for value in request.headers.values()}
        tokens.update(value for _, value in parse_qsl(request.url.query.decode("ascii", "replace")))
        for secret, hosts in self.guarded_keys:
            if secret in tokens and not _bound(hosts, host, port):
                raise EgressDenied(
                    f"an operator API key may not be sent to {host}:{port} (not a host it is bound to)",
                    host=host,
                    reason="key_not_bound",
                )

    # -- addresses

    def host_allowed(self, host: str, port: int) -> bool:
        """Whether the operator allowed the name ``host`` itself (any address it resolves to)."""
        return any(entry.matches_host(host, port) for entry in self.allow)

    def address_allowed(self, address: IPAddress, port: int) -> tuple[bool, str | None]:
        """(allowed, why not): public, or in an allowed range."""
        reason = address_refusal(address)
        if reason is None:
            return True, None
        if any(entry.matches_address(address, port) for entry in self.allow):
            return True, None
        return False, reason

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host:port``, all checked; EgressDenied when any is
        refused (a name with one private answer among public ones is refused as a whole)."""
        host = normalize_host(host)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [host]
        else:
            resolver = self.resolver or system_resolver
            try:
                addresses = list(await resolver(host, port))
            except OSError as exc:
                raise httpcore.ConnectError(f"{host}: the name does not resolve ({exc})") from exc
            if not addresses:
                raise httpcore.ConnectError(f"{host}: the name does not resolve")
        if literal is None and self.host_allowed(host, port):
            return addresses
        for text in addresses:
            allowed, reason = self.address_allowed(ipaddress.ip_address(text), port)
            if not allowed:
                shown = host if literal is not None else f"{host} ({text})"
                raise EgressDenied(
                    f"{shown} is a {reason} address; an operator may allow it with NEXUS_EGRESS_ALLOW",
                    host=host,
                    reason=str(reason),
                )
        return addresses

    def transport(self, **kwargs: Any) -> EgressTransport:
        """An httpx transport that sends every request under this policy (``kwargs``: limits...)."""
        return EgressTransport(self, **kwargs)

    def transport2(self, **kwargs: Any) -> EgressTransport2:
        """The same for an ``httpx2`` client (the ``mcp`` package's HTTP client)."""
        return EgressTransport2(self, **kwargs)


def _bound(hosts: Iterable[str], host: str, port: int) -> bool:
    return any(entry in (host, f"{host}:{port}") for entry in hosts)


# --- the transport -------------------------------------------------------------------------------------


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy passed: the name is
    resolved once, every answer checked, and the socket opened to a checked address.

    ``core``: ``httpcore`` (httpx's pool) or ``httpcore2`` (httpx2's, used by the ``mcp``
    package); its backend opens the sockets and its exception types are raised."""

    def __init__(self, policy: EgressPolicy, core: Any = httpcore) -> None:
        self._policy = policy
        self._core = core
        self._backend = core.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        core = self._core
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._policy.resolve(host, port)
        except TimeoutError:
            raise core.ConnectTimeout(f"{host}: no DNS answer in time") from None
        except httpcore.ConnectError as exc:
            raise core.ConnectError(str(exc)) from exc
        error: Exception | None = None
        for address in addresses:
            try:
                stream: httpcore.AsyncNetworkStream = await self._backend.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
                return stream
            except (core.ConnectError, core.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise EgressDenied("Unix sockets are not an egress destination", host="", reason="unix_socket")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class EgressTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections obey an :class:`EgressPolicy`.

    Requests (each redirect hop included: the client sends every hop through its transport) are
    refused before any connection when they carry a guarded key to a host it is not bound to, or
    use a scheme other than http(s); connections are opened only to checked addresses. TLS
    verification and SNI use the URL's host name, as with the stock transport.
    """

    def __init__(self, policy: EgressPolicy, **kwargs: Any) -> None:
        kwargs.setdefault("trust_env", False)
        limits: httpx.Limits = kwargs.pop(
            "limits", httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )
        super().__init__(limits=limits, **kwargs)
        self.policy = policy
        # The stock transport builds its pool with no choice of network backend (httpx 0.28):
        # the pool's connections take it from this attribute when they are made.
        assert isinstance(self._pool, httpcore.AsyncConnectionPool)
        self._pool._network_backend = _CheckedBackend(policy)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in DEFAULT_PORTS:
            raise EgressDenied(
                f"{request.url.scheme}: only http and https are fetched", host="", reason="scheme"
            )
        self.policy.check_request_keys(request)
        return await super().handle_async_request(request)


class EgressTransport2(httpx2.AsyncHTTPTransport):
    """:class:`EgressTransport` for an ``httpx2`` client: the ``mcp`` package's Streamable HTTP
    client sends through httpx2, so MCP servers are reached under the same policy (every
    connection to a checked address, every request's keys checked, http(s) only)."""

    def __init__(self, policy: EgressPolicy, **kwargs: Any) -> None:
        kwargs.setdefault("trust_env", False)
        super().__init__(**kwargs)
        self.policy = policy
        assert isinstance(self._pool, httpcore2.AsyncConnectionPool)
        # httpcore2's backend interface is httpcore's, under another name.
        self._pool._network_backend = _CheckedBackend(policy, httpcore2)  # type: ignore[assignment]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.scheme not in DEFAULT_PORTS:
            raise EgressDenied(
                f"{request.url.scheme}: only http and https are fetched", host="", reason="scheme"
            )
        self.policy.check_request_keys(request)
        return await super().handle_async_request(request)
