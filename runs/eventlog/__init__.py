"""The per-conversation event log: every event gets a strictly increasing ``seq`` and is appended
here before anyone sees it. Sockets replay from it after a drop and fill gaps from it.

Two implementations behind one interface: in memory (one process, the embedded default) and Redis
Streams (``REDIS_URL``; bounded length, bytes and TTL). Live delivery reads the log itself: each process
keeps ONE blocking ``XREAD`` over the streams its sockets watch (plus a per-process wake stream
used to add a stream to the read), so events never travel one by one over the channel layer.

Seqs survive a Redis restart without going backwards: a writer passes the highest seq it knows
(``floor``), and when the counter is gone but the conversation had events the counter restarts
far above them (``RESTART_GAP``); readers then see a gap the log cannot fill and resync.

Each conversation's log holds at most ``maxlen`` events and ``max_bytes`` of event payloads
(``NEXUS_EVENT_LOG_MAX_BYTES``): an append past the byte cap drops the OLDEST events, never the
ones being appended (one event larger than the cap is kept whole), so live readers miss nothing; a
reader resuming from before the dropped events is told the log no longer covers it
(``Replay.covered`` False: the socket answers ``info {code: "resync"}`` and the stored state).

Appends are idempotent: a writer tags each batch with a ``BatchId`` (its own id and the batch's
number, made once per batch and reused on a retry). The log remembers each writer's last batch and
the seq it began at; a batch it has already appended (a retry after the client timed out on an
append Redis still ran) appends nothing and returns the first append's seq, so an event is never
logged twice. The record is per writer (one field, overwritten by its next batch), with the stream's
TTL, and bounded: the log remembers at least the last ``BATCH_WRITERS`` writers of a conversation.
"""

from __future__ import annotations

import asyncio
import weakref

from django.conf import settings

from runs.eventlog.base import EventLog
from runs.eventlog.memory_log import MemoryEventLog
from runs.eventlog.redis_log import RedisEventLog

_logs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventLog] = weakref.WeakKeyDictionary()


def get_event_log() -> EventLog:
    """The event log of this process (one per event loop), chosen by the settings."""
    loop = asyncio.get_running_loop()
    log = _logs.get(loop)
    if log is None:
        if settings.REDIS_URL:
            log = RedisEventLog(
                url=settings.REDIS_URL,
                prefix=settings.NEXUS_REDIS_PREFIX,
                maxlen=settings.NEXUS_EVENT_LOG_MAXLEN,
                ttl=settings.NEXUS_EVENT_LOG_TTL,
                max_bytes=settings.NEXUS_EVENT_LOG_MAX_BYTES,
            )
        else:
            log = MemoryEventLog(
                maxlen=settings.NEXUS_EVENT_LOG_MAXLEN,
                ttl=settings.NEXUS_EVENT_LOG_TTL,
                max_bytes=settings.NEXUS_EVENT_LOG_MAX_BYTES,
            )
        _logs[loop] = log
    return log
