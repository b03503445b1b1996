"""`current_time`: the time now, in UTC or a named IANA time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agents.tools.base import ToolContext, ToolError, ToolOutcome


class CurrentTimeTool:
    name = "current_time"
    description = (
        "The current date and time. Optional `timezone`: an IANA time zone name such as "
        "Europe/Paris or America/New_York (default UTC). Returns iso, timezone and unix seconds."
    )
    parameters = {
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "IANA time zone name, e.g. Europe/Paris. Default UTC.",
            }
        },
        "additionalProperties": False,
    }

    async def __call__(self, arguments: dict[str, Any], *, context: ToolContext) -> ToolOutcome:
        """The time now as ISO 8601 in the zone, the zone's name and Unix seconds."""
        name = arguments.get("timezone") or "UTC"
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # ValueError/OSError: paths, directories and over-long names, which are not zones either.
            raise ToolError(f"Unknown time zone {name!r}: use an IANA name such as Europe/Paris.") from None
        now = datetime.now(UTC).replace(microsecond=0)
        return ToolOutcome(
            result={
                "iso": now.astimezone(zone).isoformat(),
                "timezone": zone.key,
                "unix": int(now.timestamp()),
            }
        )
