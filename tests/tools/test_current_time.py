"""`current_time`: the time now, in UTC or an IANA zone; anything else is an error outcome."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from agents.tools import execute_server_tool


async def test_it_answers_in_utc_by_default(context):
    before = time.time()
    outcome = await execute_server_tool("current_time", {}, context=context)
    after = time.time()
    assert not outcome.is_error
    assert set(outcome.result) == {"iso", "timezone", "unix"}
    assert outcome.result["timezone"] == "UTC"
    moment = datetime.fromisoformat(outcome.result["iso"])
    assert moment.utcoffset() == timedelta(0)
    assert int(before) <= outcome.result["unix"] <= after
    assert moment.timestamp() == outcome.result["unix"]


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Etc/GMT+5"])
async def test_it_answers_in_a_named_zone(context, zone):
    outcome = await execute_server_tool("current_time", {"timezone": zone}, context=context)
    assert not outcome.is_error
    assert outcome.result["timezone"] == zone
    moment = datetime.fromisoformat(outcome.result["iso"])
    assert moment.utcoffset() == datetime.now(ZoneInfo(zone)).utcoffset()
    assert moment.timestamp() == outcome.result["unix"]
    assert abs(outcome.result["unix"] - time.time()) < 5


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "../../etc/passwd", "/etc/passwd", "America", "Europe/", "Europe/Paris\x00"]
)
async def test_a_zone_that_is_not_a_zone_is_an_error_outcome(context, zone):
    outcome = await execute_server_tool("current_time", {"timezone": zone}, context=context)
    assert outcome.is_error
    assert outcome.result["error"].startswith("Unknown time zone")
    assert "site-packages" not in outcome.result["error"]


@pytest.mark.parametrize(
    "arguments", [{"timezone": ""}, {"timezone": "A" * 65}, {"timezone": 1}, {"tz": "UTC"}]
)
async def test_arguments_outside_the_schema_are_refused(context, arguments):
    outcome = await execute_server_tool("current_time", arguments, context=context)
    assert outcome.is_error
    assert outcome.result["error"].startswith("Invalid arguments for current_time")
