"""Every login form is throttled per IP and per username, on one budget (SPEC section 12): the
11th attempt within the window is refused with 429 and ``Retry-After`` before any password check."""

from __future__ import annotations

import pytest
from django.contrib.auth.signals import user_login_failed
from django.test import Client

from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db

RATE = "10/min"  # the default of NEXUS_THROTTLE_LOGIN


@pytest.fixture
def password_checks():
    """Every failed password check Django makes (its ``user_login_failed`` signal)."""
    seen: list[str] = []

    def receiver(sender, credentials, **kwargs):
        seen.append(credentials.get("username"))

    user_login_failed.connect(receiver)
    yield seen
    user_login_failed.disconnect(receiver)


def _post_form(path: str, username: str, password: str, ip: str = "127.0.0.1"):
    return Client().post(path, {"username": username, "password": password}, REMOTE_ADDR=ip)


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_the_eleventh_bad_password_on_a_login_page_is_refused_unchecked(
    path, staff_user, throttle_rate, password_checks
):
    throttle_rate("login", RATE)
    for attempt in range(10):
        response = _post_form(path, "operator", f"wrong-{attempt}")
        assert response.status_code == 200  # the form again, with its error
        assert "sessionid" not in response.cookies
    assert len(password_checks) == 10
    # the 11th, even with the right password: refused, and the password is not looked at
    response = _post_form(path, "operator", "operator-password-123")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert b"Too many sign-in attempts" in response.content
    assert "sessionid" not in response.cookies
    assert len(password_checks) == 10


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_a_login_page_is_throttled_per_username_across_addresses(
    path, staff_user, throttle_rate, password_checks
):
    throttle_rate("login", RATE)
    for attempt in range(10):
        assert _post_form(path, "operator", "wrong", ip=f"10.1.0.{attempt}").status_code == 200
    response = _post_form(path, "operator", "operator-password-123", ip="10.1.0.99")
    assert response.status_code == 429
    assert len(password_checks) == 10
    # another username from a fresh address still gets its own budget
    assert _post_form(path, "someone-else", "wrong", ip="10.2.0.1").status_code == 200


def test_a_login_page_under_the_budget_still_signs_in(staff_user, throttle_rate):
    throttle_rate("login", RATE)
    for _ in range(9):
        _post_form("/login/", "operator", "wrong")
    response = _post_form("/login/", "operator", "operator-password-123")
    assert response.status_code == 302 and "sessionid" in response.cookies


def test_the_api_login_is_throttled_per_username_across_addresses(anon, user, throttle_rate):
    throttle_rate("login", RATE)
    for attempt in range(10):
        response = anon.post(
            "/api/auth/login", {"username": "alice", "password": "x"}, REMOTE_ADDR=f"10.3.0.{attempt}"
        )
        assert response.status_code == 401
    response = anon.post(
        "/api/auth/login",
        {"username": "alice", "password": "alice-password-123"},
        REMOTE_ADDR="10.3.0.99",
    )
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1


def test_the_login_forms_share_one_budget_per_address(anon, user, throttle_rate):
    throttle_rate("login", RATE)
    for attempt in range(5):
        anon.post("/api/auth/login", {"username": f"guess-{attempt}", "password": "x"})
        _post_form("/admin/login/", f"guess-{attempt}-admin", "x")
    assert _post_form("/login/", "alice", "alice-password-123").status_code == 429
