"""A cap on what daphne holds for one WebSocket client that does not read.

Daphne writes every frame into Twisted's transport at once; Twisted keeps in memory whatever the
kernel has not taken yet, with no limit and no back-pressure to the application. A client that
stops reading while a reply streams (a zombie: a frozen tab, a stuck proxy, a deliberate attack)
therefore makes the web process hold every frame it is sent: about 110 MiB for 100 MB of replies
(tests/cluster/test_zombie_client.py).

This module caps it: before a frame goes out, if more than ``NEXUS_WS_MAX_SEND_BUFFER_BYTES``
already wait for that client, the connection is dropped (TCP abort: a close frame would queue
behind the data the client is not reading). Daphne then tells the application the socket
disconnected, as for any dropped connection, and frames still sent to it are discarded. A client
that was alive after all reconnects and resumes from its ``last_seq``: the event log has every
event, so nothing is lost, it only costs a replay.

It hooks ``daphne.ws_protocol.WebSocketProtocol.serverSend`` in the daphne process only: nothing
is imported that daphne has not already imported (under another server, or in tests through the
ASGI application, there is no Twisted buffer and nothing to do).

It also lets the application close with 1011 (internal error, SPEC section 4): daphne passes an
application's close to autobahn's ``sendClose``, which raises on any code but 1000 and 3000-4999,
so ``close(1011)`` raised in the consumer and the connection stayed open, delivering nothing (a
socket whose sender failed). 1011 now goes out the way daphne sends it itself for an application
that crashed (``sendCloseFrame``). Other codes keep daphne's path (1009 stays 4009,
docs/protocol.md).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)

# Close codes the application sends that autobahn's sendClose refuses: sent as a raw close frame.
DIRECT_CLOSE_CODES = frozenset({1011})


def pending_bytes(transport: Any) -> int:
    """Bytes written to a Twisted transport that the kernel has not taken yet."""
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def install(limit: int) -> bool:
    """Cap what daphne buffers per WebSocket at ``limit`` bytes; False when not under daphne."""
    module = sys.modules.get("daphne.ws_protocol")
    if module is None:
        return False
    protocol_class = module.WebSocketProtocol
    if getattr(protocol_class, "_nexus_send_limit", None) is not None:
        protocol_class._nexus_send_limit = limit
        return True
    original = protocol_class.serverSend
    original_close = protocol_class.serverClose

    def server_send(self: Any, content: Any, binary: bool = False) -> None:
        if getattr(self, "_nexus_dropped", False):
            return  # dropped for not reading: the application learns of it from the disconnect
        transport = getattr(self, "transport", None)
        waiting = pending_bytes(transport) if transport is not None else 0
        if transport is not None and waiting > protocol_class._nexus_send_limit:
            self._nexus_dropped = True
            logger.warning(
                "dropping WebSocket %s %s: %d bytes wait unread (limit %d)",
                self.client_addr,
                getattr(getattr(self, "request", None), "path", ""),
                waiting,
                protocol_class._nexus_send_limit,
            )
            transport.abortConnection()
            return
        original(self, content, binary)

    def server_close(self: Any, code: int | None = None) -> None:
        if code in DIRECT_CLOSE_CODES and self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code)  # what daphne's handle_exception does
            return
        original_close(self, code)

    protocol_class._nexus_send_limit = limit
    protocol_class.serverSend = server_send
    protocol_class.serverClose = server_close
    return True
