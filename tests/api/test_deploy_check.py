"""`manage.py check --deploy` with a production-like environment reports nothing."""

from __future__ import annotations

import secrets

import pytest

from tests.procs import base_env, manage

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
