"""`manage.py check --deploy` with a production-like environment reports nothing, and with the
very environment docker-compose.yml gives its web processes."""

from __future__ import annotations

import secrets

import pytest

from tests.procs import base_env, compose_environment, manage

pytestmark = pytest.mark.slow

PRODUCTION = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DJANGO_DEBUG": "false",
    "DJANGO_SECURE_COOKIES": "true",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_ALLOWED_HOSTS": "nexus.example.com",
}


def test_check_deploy_reports_no_issues_in_production(tmp_path):
    result = manage("check", "--deploy", env=base_env(NEXUS_VAR_DIR=str(tmp_path), **PRODUCTION))
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNINGS" not in result.stderr


def test_check_deploy_does_complain_about_a_development_setup(tmp_path):
    """The check above can fail: the same command flags an insecure configuration."""
    env = base_env(NEXUS_VAR_DIR=str(tmp_path), **{**PRODUCTION, "DJANGO_SECURE_HSTS_SECONDS": "0"})
    result = manage("check", "--deploy", env=env)
    assert "security.W004" in result.stdout + result.stderr


def test_a_short_jwt_signing_key_stops_the_process(tmp_path):
    env = base_env(NEXUS_VAR_DIR=str(tmp_path), NEXUS_JWT_SIGNING_KEY="too-short")
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "NEXUS_JWT_SIGNING_KEY must be at least 32 characters" in result.stderr


# What an operator puts in the environment (or .env) of `docker compose up`.
COMPOSE_VALUES = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "PUBLIC_HOST": "nexus.example.com",
    "POSTGRES_PASSWORD": secrets.token_hex(16),
    "NEXUS_DB_PASSWORD": secrets.token_hex(16),
    "REDIS_PASSWORD": secrets.token_hex(16),
    "NEXUS_TOOLS_DB_PASSWORD": secrets.token_hex(16),
}


@pytest.mark.parametrize("service", ["web", "worker", "migrate", "housekeeping"])
def test_check_deploy_is_clean_with_the_compose_environment(tmp_path, service):
    env = compose_environment(service, COMPOSE_VALUES)
    result = manage("check", "--deploy", env=base_env(NEXUS_VAR_DIR=str(tmp_path), **env))
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_the_compose_environment_is_the_production_one():
    env = compose_environment("web", COMPOSE_VALUES)
    assert env["DJANGO_DEBUG"] == "false"
    assert env["DJANGO_SECURE_COOKIES"] == env["DJANGO_SECURE_SSL_REDIRECT"] == "true"
    assert int(env["DJANGO_SECURE_HSTS_SECONDS"]) >= 31536000
    assert env["DJANGO_BEHIND_PROXY"] == "true"  # SECURE_PROXY_SSL_HEADER: the proxy says https
    assert env["NEXUS_WS_ALLOW_QUERY_TOKEN"] == "false"
    assert (
        env["NEXUS_WS_ALLOWED_ORIGINS"] == env["DJANGO_CSRF_TRUSTED_ORIGINS"] == "https://nexus.example.com"
    )
    # seed clients that need ?token= opt in
    assert (
        compose_environment("web", {**COMPOSE_VALUES, "NEXUS_WS_ALLOW_QUERY_TOKEN": "true"})[
            "NEXUS_WS_ALLOW_QUERY_TOKEN"
        ]
        == "true"
    )


@pytest.mark.parametrize(
    "missing", ["DJANGO_SECRET_KEY", "PUBLIC_HOST", "NEXUS_DB_PASSWORD", "REDIS_PASSWORD"]
)
def test_compose_refuses_to_start_without_its_secrets(missing):
    with pytest.raises(KeyError, match=missing):
        compose_environment("web", {k: v for k, v in COMPOSE_VALUES.items() if k != missing})


@pytest.mark.django_db
def test_behind_the_proxy_plain_http_is_redirected_but_health_checks_are_not(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    redirected = client.get("/login/")
    assert redirected.status_code == 301 and redirected["Location"].startswith("https://")
    assert client.get("/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 200
    assert client.get("/health").status_code in (200, 503)  # answered, whatever it finds
