"""The REST API tests' clients (tests/api/conftest.py): authenticated as real clients are."""

from tests.api.conftest import (  # noqa: F401 - fixtures
    _fresh_cache_and_generous_throttles,
    alice,
    anon,
    mallory,
    operator,
)
