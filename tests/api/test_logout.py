"""``POST /api/auth/logout`` (SPEC section 12): revokes the refresh token for good and ends the
cookie session."""

from __future__ import annotations

import pytest
from django.test import Client

from core.auth import tokens_issue
from tests.api.conftest import assert_error, bearer_client

pytestmark = pytest.mark.django_db


def test_logout_blacklists_the_refresh_token(anon, user):
    tokens = tokens_issue(user)
    client = bearer_client(user)
    response = client.post("/api/auth/logout", {"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200, response.content
    assert response.json() == {"logged_out": True, "refresh_token_revoked": True, "session_ended": False}
    refused = anon.post("/api/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert_error(refused, 401, "authentication_failed")
    # once more: nothing left to revoke, still a success
    again = client.post("/api/auth/logout/", {"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 200 and again.json()["refresh_token_revoked"] is False


def test_logout_takes_a_form_encoded_body(anon, user):
    tokens = tokens_issue(user)
    response = bearer_client(user).generic(
        "POST",
        "/api/auth/logout",
        f"refresh_token={tokens['refresh_token']}",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200 and response.json()["refresh_token_revoked"] is True
    assert_error(anon.post("/api/auth/refresh", {"refresh_token": tokens["refresh_token"]}), 401)


def test_another_users_refresh_token_is_refused_and_left_alone(anon, user, other_user):
    theirs = tokens_issue(other_user)["refresh_token"]
    assert_error(
        bearer_client(user).post("/api/auth/logout", {"refresh_token": theirs}), 400, "validation_error"
    )
    assert anon.post("/api/auth/refresh", {"refresh_token": theirs}).status_code == 200


def test_an_access_token_is_not_a_refresh_token(user):
    tokens = tokens_issue(user)
    response = bearer_client(user).post("/api/auth/logout", {"refresh_token": tokens["access_token"]})
    assert_error(response, 400, "validation_error")


def test_logout_needs_a_login(anon):
    assert_error(anon.post("/api/auth/logout", {}), 401)


def test_logout_ends_the_cookie_session(user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get("/api/agents/").status_code == 200
    # a session-authenticated unsafe request needs its CSRF token, as everywhere in the API
    assert browser.post("/api/auth/logout", content_type="application/json").status_code == 403
    browser.get("/")  # the chat page hands out the csrftoken cookie
    response = browser.post(
        "/api/auth/logout",
        content_type="application/json",
        HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value,
    )
    assert response.status_code == 200, response.content
    assert response.json()["session_ended"] is True
    assert browser.get("/api/agents/").status_code in (401, 403)
