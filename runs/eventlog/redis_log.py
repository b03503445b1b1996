"""The Redis Streams event log (``REDIS_URL``): bounded length, bytes and TTL; live delivery by one
blocking ``XREAD`` per process over the streams its sockets watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.typing import KeyT, StreamIdT

from core.redis import redis_client
from core.tasks import process_task
from runs.event_encoding import event_kind
from runs.eventlog.base import (
    BATCH_WRITERS,
    READ_PAGE,
    RESTART_GAP,
    BatchId,
    EventLog,
    EventLogUnavailable,
    Listener,
    LoggedEvent,
    Replay,
    StaleBatch,
)

logger = logging.getLogger(__name__)
# XREAD's reply on a RESP2 connection that does not decode: [(stream key, [(entry id, fields)])]
_Entry = tuple[bytes, dict[bytes, bytes]]
_StreamsReply = list[tuple[bytes, list[_Entry]]] | None

_APPEND_SCRIPT = """
-- KEYS: stream, counter, firehose, bytes, batches, older batches. ARGV: floor, maxlen, ttl,
-- firehose maxlen, restart gap, "<conversation>|<owner>", max bytes (0: no cap), writer ('': no
-- batch id), batch number, batch writers kept, then each event's kind and payload.
-- Each entry carries `b`: the conversation's payload bytes up to and including it (a running
-- total, kept in KEYS[4]), so the bytes the stream holds are known without reading it.
-- Idempotence: KEYS[5] maps a writer to "<its last batch number>:<that batch's first seq>"; a batch
-- already appended appends nothing and returns its first seq negated (0 for one older than the last).
-- When KEYS[5] holds ARGV[10] writers it becomes KEYS[6] (two generations: bounded, and the
-- last ARGV[10] writers are always remembered).
local writer = ARGV[8]
local number = tonumber(ARGV[9])
if writer ~= '' then
  local seen = redis.call('HGET', KEYS[5], writer) or redis.call('HGET', KEYS[6], writer)
  if seen then
    local last, start = string.match(seen, '^(%d+):(%d+)$')
    last = tonumber(last)
    if number == last then return -tonumber(start) end
    if number < last then return 0 end
  end
end
local counter = redis.call('GET', KEYS[2])
local floor = tonumber(ARGV[1])
local cur
if counter then
  cur = tonumber(counter)
else
  -- No counter: a new conversation, an expired one, or a Redis that lost its data.
  cur = 0
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if last[1] then cur = tonumber(string.match(last[1][1], '^(%d+)')) end
  if floor > cur then cur = floor end
  if cur > 0 then cur = cur + tonumber(ARGV[5]) end
end
if cur < floor then cur = floor end
local first = cur + 1
local total = tonumber(redis.call('GET', KEYS[4]) or '-1')
if total < 0 then
  total = 0
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if last[1] then
    local fields = last[1][2]
    for j = 1, #fields, 2 do
      if fields[j] == 'b' then total = tonumber(fields[j + 1]) end
    end
  end
end
for i = 11, #ARGV, 2 do
  cur = cur + 1
  total = total + string.len(ARGV[i + 1])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], cur .. '-0', 'e', ARGV[i + 1], 'b', total, 'k', ARGV[i])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'c', ARGV[6], 's', cur, 'e', ARGV[i + 1], 'k', ARGV[i])
end
local cap = tonumber(ARGV[7])
if cap > 0 then
  -- Drop the oldest entries (never this batch's) until the rest hold at most `cap` bytes.
  while true do
    local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
    if not oldest[1] then break end
    local id = oldest[1][1]
    if tonumber(string.match(id, '^(%d+)')) >= first then break end
    local fields = oldest[1][2]
    local size, upto = 0, nil
    for j = 1, #fields, 2 do
      if fields[j] == 'e' then size = string.len(fields[j + 1]) end
      if fields[j] == 'b' then upto = tonumber(fields[j + 1]) end
    end
    -- an entry without `b` predates the cap: it goes first
    if upto ~= nil and total - (upto - size) <= cap then break end
    redis.call('XDEL', KEYS[1], id)
  end
end
redis.call('SET', KEYS[2], cur, 'EX', ARGV[3])
redis.call('SET', KEYS[4], total, 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if writer ~= '' then
  if redis.call('HLEN', KEYS[5]) >= tonumber(ARGV[10]) then redis.call('RENAME', KEYS[5], KEYS[6]) end
  redis.call('HSET', KEYS[5], writer, number .. ':' .. first)
  redis.call('EXPIRE', KEYS[5], ARGV[3])
end
return first
"""


def _logged(seq: int, fields: dict[bytes, bytes]) -> LoggedEvent:
    """A stream entry as a logged event: its kind from its ``k`` field (an entry appended before
    the log kept kinds has none: read from the payload)."""
    payload = fields[b"e"]
    kind = fields.get(b"k")
    return LoggedEvent(seq, payload, kind.decode() if kind is not None else event_kind(payload))


class RedisEventLog(EventLog):
    """Redis Streams: ``<prefix>:log:<conversation>`` with entry ids ``<seq>-0``."""

    backend = "redis"

    def __init__(
        self,
        *,
        url: str,
        prefix: str,
        maxlen: int,
        ttl: int,
        firehose_maxlen: int = 10_000,
        max_bytes: int | None = None,
        socket_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.maxlen = maxlen
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.firehose_maxlen = firehose_maxlen
        self._redis = redis_client(url, socket_timeout=socket_timeout, socket_connect_timeout=5)
        self._append = self._redis.register_script(_APPEND_SCRIPT)
        self._wake_key = f"{prefix}:wake:{uuid.uuid4().hex}"
        self._firehose_key = f"{prefix}:firehose"
        self._cursors: dict[str, int] = {}
        self._firehose_cursor = "$"
        self._tail_task: asyncio.Task[None] | None = None
        self._closing = False

    def _stream_key(self, conversation_id: str) -> str:
        return f"{self.prefix}:log:{conversation_id}"

    def _counter_key(self, conversation_id: str) -> str:
        return f"{self.prefix}:seq:{conversation_id}"

    def _bytes_key(self, conversation_id: str) -> str:
        return f"{self.prefix}:bytes:{conversation_id}"

    def _batches_keys(self, conversation_id: str) -> list[str]:
        return [f"{self.prefix}:batches:{conversation_id}", f"{self.prefix}:batches-old:{conversation_id}"]

    async def append(
        self,
        conversation_id: str,
        payloads: Sequence[bytes],
        *,
        kinds: Sequence[str] | None = None,
        floor: int = 0,
        owner_id: int | None = None,
        batch_id: BatchId | None = None,
    ) -> int:
        if not payloads:
            return await self.last_seq(conversation_id) + 1
        if kinds is None:
            kinds = [event_kind(payload) for payload in payloads]
        pairs: list[str | bytes] = []
        for kind, payload in zip(kinds, payloads, strict=True):
            pairs += (kind, payload)
        try:
            first = await self._append(
                keys=[
                    self._stream_key(conversation_id),
                    self._counter_key(conversation_id),
                    self._firehose_key,
                    self._bytes_key(conversation_id),
                    *self._batches_keys(conversation_id),
                ],
                args=[
                    floor,
                    self.maxlen,
                    self.ttl,
                    self.firehose_maxlen,
                    RESTART_GAP,
                    f"{conversation_id}|{owner_id or ''}",
                    self.max_bytes or 0,
                    batch_id[0] if batch_id else "",
                    batch_id[1] if batch_id else 0,
                    BATCH_WRITERS,
                    *pairs,
                ],
            )
        except Exception as exc:
            raise EventLogUnavailable(str(exc)) from exc
        first = int(first)
        if first <= 0:  # a batch already appended: nothing was appended again
            if first == 0:
                raise StaleBatch(f"batch {batch_id} follows a later batch of its writer")
            return -first
        self.appended += len(payloads)
        return first

    async def read_after(self, conversation_id: str, after_seq: int, *, limit: int = READ_PAGE) -> Replay:
        key = self._stream_key(conversation_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self._counter_key(conversation_id))
                pipe.xrange(key, min=f"{after_seq + 1}-0", max="+", count=limit)
                counter, rows = await pipe.execute()
        except Exception as exc:
            raise EventLogUnavailable(str(exc)) from exc
        last = int(counter) if counter is not None else 0
        events = [_logged(int(entry_id.split(b"-")[0]), fields) for entry_id, fields in rows]
        if after_seq > last:
            return Replay(covered=False, events=[], last_seq=last)
        if after_seq == last:
            return Replay(covered=True, events=[], last_seq=last)
        if not events or events[0].seq != after_seq + 1:
            return Replay(covered=False, events=[], last_seq=last)
        return Replay(covered=True, events=events, last_seq=last)

    async def last_seq(self, conversation_id: str) -> int:
        try:
            value = await self._redis.get(self._counter_key(conversation_id))
        except Exception as exc:
            raise EventLogUnavailable(str(exc)) from exc
        return int(value) if value is not None else 0

    async def ping(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._redis.ping(), 3)
        except Exception as exc:
            return {"status": "down", "backend": self.backend, "error": exc.__class__.__name__}
        return {
            "status": "ok",
            "backend": self.backend,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    async def close(self) -> None:
        self._closing = True
        if self._tail_task is not None:
            self._tail_task.cancel()
            with contextlib.suppress(BaseException):
                await self._tail_task
        await self._redis.aclose()

    # -- live delivery: one blocking XREAD per process -----------------------------------------

    def watch(self, conversation_id: str, listener: Listener) -> None:
        new = conversation_id not in self._listeners
        super().watch(conversation_id, listener)
        if new:
            self._cursors[conversation_id] = -1  # resolved to the stream's current end by the tail
            self._wake()

    def unwatch(self, conversation_id: str, listener: Listener) -> None:
        super().unwatch(conversation_id, listener)
        if conversation_id not in self._listeners:
            self._cursors.pop(conversation_id, None)

    def watch_all(self, listener: Callable[[str, int | None, list[LoggedEvent]], None]) -> None:
        super().watch_all(listener)
        self._wake()

    def _wake(self) -> None:
        if self._tail_task is None or self._tail_task.done():
            self._tail_task = process_task(self._tail(), name="eventlog-tail")
        else:
            asyncio.get_running_loop().create_task(self._poke())

    async def _poke(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.xadd(self._wake_key, {"w": 1}, maxlen=10, approximate=True)
            await self._redis.expire(self._wake_key, 3600)

    async def _resolve_new_cursors(self, conn: aioredis.Redis) -> None:
        pending = [cid for cid, cursor in self._cursors.items() if cursor < 0]
        if not pending:
            return
        async with conn.pipeline(transaction=False) as pipe:
            for cid in pending:
                pipe.get(self._counter_key(cid))
            values = await pipe.execute()
        for cid, value in zip(pending, values, strict=True):
            if self._cursors.get(cid, 0) < 0:
                self._cursors[cid] = int(value) if value is not None else 0

    async def _tail(self) -> None:
        conn = aioredis.Redis.from_url(self.url, socket_timeout=None, socket_connect_timeout=5)
        wake_cursor = "$"
        interrupted = False
        backoff = 0.1
        try:
            while not self._closing and (self._listeners or self._firehose):
                try:
                    if wake_cursor == "$":
                        wake_cursor = await self._current_id(conn, self._wake_key)
                    if self._firehose and self._firehose_cursor == "$":
                        self._firehose_cursor = await self._current_id(conn, self._firehose_key)
                    # A socket may start watching while the cursors resolve: resolve until none
                    # is left unresolved, or XREAD gets the id "-1-0" and fails.
                    while any(cursor < 0 for cursor in self._cursors.values()):
                        await self._resolve_new_cursors(conn)
                    if interrupted:
                        interrupted = False
                        self._dispatch_lost()
                    streams: dict[KeyT, StreamIdT] = {self._wake_key: wake_cursor}
                    for cid, cursor in self._cursors.items():
                        streams[self._stream_key(cid)] = f"{cursor}-0"
                    if self._firehose:
                        streams[self._firehose_key] = self._firehose_cursor
                    reply = await conn.xread(streams, count=READ_PAGE, block=30_000)
                    result = cast(_StreamsReply, reply)  # RESP2, not decoded: the list shape
                    backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self._closing:
                        return
                    logger.warning("event log tail lost Redis (%s); retrying", exc.__class__.__name__)
                    interrupted = True
                    wake_cursor = "$"
                    self._firehose_cursor = "$"
                    for cid in self._cursors:
                        self._cursors[cid] = -1
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    with contextlib.suppress(Exception):
                        await conn.aclose()
                    conn = aioredis.Redis.from_url(self.url, socket_timeout=None, socket_connect_timeout=5)
                    continue
                for raw_key, entries in result or ():
                    key = raw_key.decode()
                    if key == self._wake_key:
                        wake_cursor = entries[-1][0].decode()
                    elif key == self._firehose_key:
                        self._firehose_cursor = entries[-1][0].decode()
                        self._dispatch_firehose(entries)
                    else:
                        cid = key.rsplit(":", 1)[1]
                        events = [_logged(int(eid.split(b"-")[0]), fields) for eid, fields in entries]
                        if cid in self._cursors and events:
                            self._cursors[cid] = events[-1].seq
                            for listener in tuple(self._listeners.get(cid, ())):
                                try:
                                    listener(cid, events)
                                except Exception:
                                    logger.exception("event listener failed")
        finally:
            with contextlib.suppress(Exception):
                await conn.aclose()

    async def _current_id(self, conn: aioredis.Redis, key: str) -> str:
        rows = await conn.xrevrange(key, count=1)
        return cast(bytes, rows[0][0]).decode() if rows else "0-0"  # the client does not decode

    def _dispatch_firehose(self, entries: list[_Entry]) -> None:
        for _, fields in entries:
            cid, _, owner = fields[b"c"].decode().partition("|")
            batch = [_logged(int(fields[b"s"]), fields)]
            for listener in tuple(self._firehose):
                try:
                    listener(cid, int(owner) if owner else None, batch)
                except Exception:
                    logger.exception("firehose listener failed")
