"""Runs (runs/): the engine, sessions, tools in runs, quotas, the event log. Their tests drive runs
through the real ASGI application, with the in-process realtime fixtures."""

from tests.realtime.conftest import _engine_cleanup, application, connect, scripted_provider  # noqa: F401
