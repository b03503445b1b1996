"""`manage.py seed_demo`: a demo user, an operator and demo agents. Safe to run any number of times.

The accounts get the passwords in ``NEXUS_DEMO_PASSWORD`` / ``NEXUS_ADMIN_PASSWORD``, or else the
published defaults below; those are refused when ``DJANGO_DEBUG`` is off (SPEC section 12), so a
deployment never ends up with an admin whose password is in the README. ``make run`` passes the
defaults in the environment on purpose: it serves on 127.0.0.1 for one person.
"""

from __future__ import annotations

from typing import Any

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents.demo_data import demo_data_ensure
from agents.models import Agent, AgentStatus

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "nexus-demo-password"
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "nexus-admin-password"


def _ollama_reachable() -> bool:
    try:
        return httpx.get(f"{settings.OLLAMA_BASE_URL.rstrip('/')}/api/tags", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def demo_agents() -> list[dict[str, Any]]:
    """The shared demo agents: the bundled local model, and examples for each remote provider,
    paused unless their key or server is present."""
    keys = settings.NEXUS_PROVIDER_API_KEYS
    return [
        {
            "name": "SmolLM2 (local)",
            "emoji": "🧠",
            "description": "The bundled SmolLM2-135M-Instruct model, running in process. No keys, no network.",
            "provider": "local",
            "model": "smollm2-135m-instruct",
            "system_prompt": "You are a helpful, concise assistant.",
            "capabilities": ["conversation"],
            "interaction_modes": ["chat"],
            "temperature": 0.7,
            "max_tokens": 256,
            "status": AgentStatus.ACTIVE,
        },
        {
            "name": "SmolLM2 Critic (local)",
            "emoji": "🧐",
            "description": "A second local agent, for agent-to-agent sessions.",
            "provider": "local",
            "model": "smollm2-135m-instruct",
            "system_prompt": "You are a thoughtful critic. Reply in one or two short sentences.",
            "capabilities": ["conversation"],
            "interaction_modes": ["chat", "agent_agent"],
            "temperature": 0.7,
            "max_tokens": 128,
            "status": AgentStatus.ACTIVE,
        },
        {
            "name": "Llama 3 (Ollama)",
            "emoji": "🦙",
            "description": "Llama 3 through a local Ollama server.",
            "provider": "ollama",
            "model": "llama3",
            "capabilities": ["conversation"],
            "interaction_modes": ["chat"],
            "status": AgentStatus.ACTIVE if _ollama_reachable() else AgentStatus.PAUSED,
        },
        {
            "name": "GPT-4o mini (OpenAI)",
            "emoji": "✨",
            "description": "OpenAI's gpt-4o-mini. Needs OPENAI_API_KEY.",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "config": {"api_key_env": "OPENAI_API_KEY"},
            "capabilities": ["conversation", "tools"],
            "interaction_modes": ["chat"],
            "status": AgentStatus.ACTIVE if "OPENAI_API_KEY" in keys else AgentStatus.PAUSED,
        },
        {
            "name": "Gemini Flash (Google)",
            "emoji": "💎",
            "description": "Google's gemini-2.0-flash. Needs GOOGLE_API_KEY.",
            "provider": "gemini",
            "model": "gemini-2.0-flash",
            "config": {"api_key_env": "GOOGLE_API_KEY"},
            "capabilities": ["conversation", "tools"],
            "interaction_modes": ["chat"],
            "status": AgentStatus.ACTIVE if "GOOGLE_API_KEY" in keys else AgentStatus.PAUSED,
        },
    ]


def _passwords() -> dict[str, tuple[str, str]]:
    """username -> (password, the variable it may come from) for the two accounts."""
    return {
        DEMO_USERNAME: (settings.NEXUS_DEMO_PASSWORD or DEMO_PASSWORD, "NEXUS_DEMO_PASSWORD"),
        ADMIN_USERNAME: (settings.NEXUS_ADMIN_PASSWORD or ADMIN_PASSWORD, "NEXUS_ADMIN_PASSWORD"),
    }


def _refuse_published_passwords(passwords: dict[str, tuple[str, str]]) -> None:
    """With DEBUG off, an account about to be made with a published password stops the command
    before it writes anything. An existing account keeps its password, so it is no concern."""
    if settings.DEBUG:
        return
    User = get_user_model()
    unsafe = [
        variable
        for username, (_, variable) in passwords.items()
        if not getattr(settings, variable) and not User.objects.filter(username=username).exists()
    ]
    if unsafe:
        raise CommandError(
            "seed_demo refuses to create accounts with the published demo passwords while "
            f"DJANGO_DEBUG is off: set {' and '.join(unsafe)} (or DJANGO_DEBUG=true on a "
            "development machine)."
        )


def _shown(password: str, variable: str) -> str:
    # The published defaults are no secret; a password from the environment is never printed.
    return password if password in {DEMO_PASSWORD, ADMIN_PASSWORD} else f"<the password in {variable}>"


class Command(BaseCommand):
    help = "Create the demo user, an operator account and the demo agents (idempotent)."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        passwords = _passwords()
        _refuse_published_passwords(passwords)
        demo, created_demo = User.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"email": "demo@example.com"}
        )
        if created_demo:
            demo.set_password(passwords[DEMO_USERNAME][0])
            demo.save()
        admin, created_admin = User.objects.get_or_create(
            username=ADMIN_USERNAME,
            defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True},
        )
        if created_admin:
            admin.set_password(passwords[ADMIN_USERNAME][0])
            admin.save()

        for spec in demo_agents():
            fields = dict(spec)
            name = fields.pop("name")
            agent, created = Agent.objects.get_or_create(owner=None, name=name, defaults=fields)
            if not created and agent.status != fields["status"] and agent.provider != "local":
                # Keys or servers may have appeared (or gone) since the last run.
                agent.status = fields["status"]
                agent.save(update_fields=["status", "updated_at"])

        demo_data_ensure()

        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"  Chat:  log in as {DEMO_USERNAME} / {_shown(*passwords[DEMO_USERNAME])}")
        self.stdout.write(
            f"  Admin: log in as {ADMIN_USERNAME} / {_shown(*passwords[ADMIN_USERNAME])} at /admin/"
        )
