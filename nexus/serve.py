"""Start daphne for Nexus: ``python -m nexus.serve -b HOST -p PORT [more daphne flags]``.

The one definition of how Nexus runs under daphne, used by the Makefile, the Dockerfile, the
compose file, ``scripts/cluster.py``, the tests that start processes and the benchmarks.

daphne's WebSocket library (autobahn) drops the TCP connection, with no close frame, on a message or
a frame over daphne's ``--websocket-max-message-size`` / ``--websocket-max-frame-size`` (both 1 MiB
by default). Both are set here to four times Nexus's own limit (``NEXUS_WS_MAX_MESSAGE_BYTES``,
1 MiB -> 4 MiB), so an oversized frame reaches Nexus, which answers with an ``error`` frame
``message_too_large`` and close 4009 (docs/protocol.md says why not 1009). Flags given on the
command line come after these and win.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from daphne.cli import CommandLineInterface
from django.conf import settings

APPLICATION = "nexus.asgi:application"
DAPHNE_LIMIT_FACTOR = 4
APPLICATION_CLOSE_TIMEOUT = 5


def daphne_args(args: Sequence[str] = ()) -> list[str]:
    """daphne's command-line arguments: the shared flags, then ``args``, then the application."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexus.settings")

    limit = str(DAPHNE_LIMIT_FACTOR * settings.NEXUS_WS_MAX_MESSAGE_BYTES)
    return [
        "--websocket-max-message-size",
        limit,
        "--websocket-max-frame-size",
        limit,
        "--application-close-timeout",
        str(APPLICATION_CLOSE_TIMEOUT),
        *args,
        APPLICATION,
    ]


def main(argv: Sequence[str] | None = None) -> None:
    CommandLineInterface().run(daphne_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
