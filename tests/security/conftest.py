"""Fixtures of the security tests: the in-process realtime fixtures (the real ASGI application, the
scripted provider registered through the registry's own door, a frame-reading client)."""

from __future__ import annotations

from tests.realtime.conftest import _engine_cleanup, application, connect, scripted_provider

__all__ = ["_engine_cleanup", "application", "connect", "scripted_provider"]
