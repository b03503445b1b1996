"""Bad input on the run-starting REST paths gets a coded 400, never a 500 (found next to the
WebSocket fuzz: a NUL character reached PostgreSQL, which stores none, as a DataError)."""

from __future__ import annotations

import pytest

from runs.models import Run
from tests.security.test_idor import bearer, snapshot, world

__all__ = ["world"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("scripted_provider")
@pytest.mark.parametrize("where", ["invoke", "run"])
def test_a_nul_character_in_the_message_is_a_validation_error(world, user, where):
    agent = world["alice_agent"]
    if where == "invoke":
        path, body = "/api/invoke/", {"agent_id": str(agent.pk), "message": "a\x00b"}
    else:
        path, body = f"/api/agents/{agent.pk}/run/", {"query": "a\x00b"}
    before = snapshot()
    response = bearer(user).post(path, body, format="json")
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert response.json()["code"] == "validation_error"
    assert snapshot() == before
    assert Run.objects.count() == 1  # alice's queued run only
