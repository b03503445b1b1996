"""Seed 003's codec for ``/ws/agent``: a reply is one ``data_response`` frame (docs/dialects.md).

Seed 003's client sends ``{type: "query", query, context, timestamp}`` and waits for
``{type: "data_response", data_type, data, count, timestamp}``. From the conversation's events
this codec renders:

- a reply in its final state (``agent_message``) as ``data_type: "text"``, ``data``: the reply's
  text, ``count: 1``, with ``message_id`` and ``status`` (complete, stopped, error, incomplete);
- the result of a data tool (a tool result shaped ``{columns, rows}``, as ``query_database``
  returns) as ``data_type: "rows"``, ``data``: one object per row keyed by column, ``count``: the
  number of rows, with ``columns``, ``truncated`` (the tool's row limit cut the result, or the
  frame limit did) and ``tool``;
- ``error`` and ``info`` events as the native frames every socket sends for errors and notices.

Everything else (the streamed chunks, run and tool-call bookkeeping) has no frame in this dialect:
seed 003's client asks and waits for the answer. The frames are flat (no ``data`` envelope), as
the seed shows them, and no larger than the socket's frame limit.
"""

from __future__ import annotations

from typing import Any

import orjson

from realtime.dialects.native import NATIVE
from runs.event_encoding import fit_fields
from runs.eventlog.base import LoggedEvent

# Events relayed as the native protocol renders them: the socket's own error frames look the same.
_NATIVE_KINDS = frozenset({"error", "info"})


def _dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame, default=str).decode()


def _table(result: Any) -> tuple[list[str], list[Any], bool] | None:
    """(columns, rows, truncated) when a tool result is a data tool's table, else None."""
    if not isinstance(result, dict):
        return None
    columns, rows = result.get("columns"), result.get("rows")
    if not isinstance(columns, list) or not isinstance(rows, list):
        return None
    if not all(isinstance(column, str) for column in columns):
        return None
    if not all(isinstance(row, list) and len(row) == len(columns) for row in rows):
        return None
    return columns, rows, bool(result.get("truncated"))


def text_response(data: dict[str, Any], *, timestamp: str, frame_bytes: int) -> str:
    """A reply (an ``agent_message`` event's data) as ``data_response`` ``text``."""
    frame: dict[str, Any] = {
        "type": "data_response",
        "data_type": "text",
        "data": data.get("content") or "",
        "count": 1,
        "timestamp": timestamp,
        "message_id": data.get("messageId"),
        "status": data.get("status"),
    }
    if data.get("content_truncated"):
        frame["data_truncated"] = True  # the log holds it cut: the whole text is over REST
    text = _dumps(frame)
    excess = len(text.encode()) - frame_bytes
    return text if excess <= 0 else _dumps(fit_fields(frame, excess))


def rows_response(
    table: tuple[list[str], list[Any], bool], *, tool: str, timestamp: str, frame_bytes: int
) -> str:
    """A data tool's table as ``data_response`` ``rows``: the first rows that fit the frame limit."""
    columns, rows, truncated = table
    records = [dict(zip(columns, row, strict=True)) for row in rows]
    while True:
        frame = {
            "type": "data_response",
            "data_type": "rows",
            "data": records,
            "count": len(records),
            "timestamp": timestamp,
            "columns": columns,
            "truncated": truncated,
            "tool": tool,
        }
        text = _dumps(frame)
        if len(text.encode()) <= frame_bytes or not records:
            return text
        records, truncated = records[: len(records) // 2], True


class Seed003Codec:
    name = "seed003"

    def render(self, evt: LoggedEvent, *, frame_bytes: int) -> tuple[str, ...]:
        if evt.kind in _NATIVE_KINDS:
            return tuple(NATIVE.render(evt, frame_bytes=frame_bytes))
        if evt.kind not in {"agent_message", "tool_result"}:
            return ()
        logged = orjson.loads(evt.payload)
        data, timestamp = logged.get("data") or {}, logged.get("timestamp")
        if evt.kind == "agent_message":
            return (text_response(data, timestamp=timestamp, frame_bytes=frame_bytes),)
        table = None if data.get("is_error") else _table(data.get("result"))
        if table is None:
            return ()  # not a data tool's table (or cut from the log): the reply says what it found
        tool = str(data.get("tool") or "")
        return (rows_response(table, tool=tool, timestamp=timestamp, frame_bytes=frame_bytes),)


SEED003 = Seed003Codec()
