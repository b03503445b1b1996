"""The network guard: no test reaches past the loopback interface.

Every fake the suite talks to (provider servers, daphne, Redis, PostgreSQL) listens on loopback, so a
test that connects anywhere else, or asks the system resolver for any name but ``localhost``, has
found a real network path: a missing fake, a default URL that points at a real provider, a leak.
The guard wraps ``socket.socket.connect``/``connect_ex``/``sendto`` and ``socket.getaddrinfo`` in
the test process: such a call raises :class:`NetworkGuardError` (not an ``OSError``, so no client
takes it for a refused connection and retries or falls back quietly), and the test fails at its
teardown even if the code under test swallowed the exception.

It covers the test process only: the processes tests start (daphne, workers) and the C clients
(libpq) open their own sockets. Nexus's egress policy checks an address before any socket is opened,
so a test of its refusals (10.0.0.1, 169.254.169.254) still sees the policy refuse, not the guard.
"""

from __future__ import annotations

import ipaddress
import socket
import threading

_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost", "ip6-loopback"}


class NetworkGuardError(RuntimeError):
    """A test reached (or asked the resolver for) an address outside the loopback interface."""


_violations: list[str] = []
_lock = threading.Lock()
_real = {
    "connect": socket.socket.connect,
    "connect_ex": socket.socket.connect_ex,
    "sendto": socket.socket.sendto,
    "getaddrinfo": socket.getaddrinfo,
}


def _loopback_literal(host: str) -> bool | None:
    """True/False for an IP literal on/off this machine (loopback, or the unspecified address,
    which a connection takes for this machine); None when ``host`` is a name."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _name_allowed(host: str) -> bool:
    lowered = host.lower()
    return lowered in _LOOPBACK_NAMES or lowered.endswith(".localhost") or lowered.endswith(".localhost.")


def _refuse(what: str) -> None:
    message = f"the network guard refused {what}: tests reach only the loopback interface"
    with _lock:
        _violations.append(message)
    raise NetworkGuardError(message)


def _check_address(sock: socket.socket, address: object) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets, socket pairs: local by construction
    if not isinstance(address, tuple) or not address:
        return
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return
    literal = _loopback_literal(host)
    if literal is True or (literal is None and _name_allowed(host)):
        return
    _refuse(f"a connection to {address!r}")


def _connect(self, address):
    _check_address(self, address)
    return _real["connect"](self, address)


def _connect_ex(self, address):
    _check_address(self, address)
    return _real["connect_ex"](self, address)


def _sendto(self, data, *args):
    if args:
        _check_address(self, args[-1])
    return _real["sendto"](self, data, *args)


def _getaddrinfo(host, *args, **kwargs):
    if host is not None:
        name = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
        if name and _loopback_literal(name) is None and not _name_allowed(name):
            _refuse(f"a lookup of the name {name!r}")
    return _real["getaddrinfo"](host, *args, **kwargs)


def install() -> None:
    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.socket.sendto = _sendto
    socket.getaddrinfo = _getaddrinfo


def uninstall() -> None:
    socket.socket.connect = _real["connect"]
    socket.socket.connect_ex = _real["connect_ex"]
    socket.socket.sendto = _real["sendto"]
    socket.getaddrinfo = _real["getaddrinfo"]


def take_violations() -> list[str]:
    """The refusals since the last call (the guard's record, emptied)."""
    with _lock:
        taken = list(_violations)
        _violations.clear()
    return taken
