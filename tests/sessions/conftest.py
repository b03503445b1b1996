from tests.realtime.conftest import _engine_cleanup, application, connect, scripted_provider  # noqa: F401
