"""API keys in the admin: listed with their status, never shown or made there, revoked by an action."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.apikeys import api_key_create, user_from_api_key
from core.auth import AuthenticationFailed
from core.models import ApiKey

pytestmark = pytest.mark.django_db


def test_staff_list_keys_without_their_secret_and_revoke_them(client, staff_user, user):
    row, key = api_key_create(user=user, name="laptop")
    client.force_login(staff_user)
    changelist = reverse("admin:core_apikey_changelist")
    page = client.get(changelist, {"q": "alice"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "laptop" in text and f"nx-{row.prefix}" in text and "active" in text
    assert key not in text and key.partition(".")[2] not in text
    change = client.get(reverse("admin:core_apikey_change", args=[row.pk]))
    assert change.status_code == 200 and key.partition(".")[2] not in change.content.decode()
    assert client.get(reverse("admin:core_apikey_add")).status_code == 403
    response = client.post(changelist, {"action": "revoke", "_selected_action": [str(row.pk)]}, follow=True)
    assert response.status_code == 200 and "Revoked 1 API key" in response.content.decode()
    assert ApiKey.objects.get(pk=row.pk).revoked_at is not None
    with pytest.raises(AuthenticationFailed, match="revoked"):
        user_from_api_key(key, scope="v1")


def test_the_key_admin_is_closed_to_non_staff(client, user):
    client.force_login(user)
    response = client.get(reverse("admin:core_apikey_changelist"))
    assert response.status_code == 302
