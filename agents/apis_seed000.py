"""Seed 000's agents over REST: ``GET|POST /api/agents`` (no trailing slash).

A bare JSON array (no pagination envelope) of the active agents the caller may use, each item
carrying the seed's two spellings of the same fields: ``name``/``emoji`` (its schema) and
``identityName``/``identityEmoji`` (its example response). ``config`` is a JSON string, as the
seed's schema has it. POST takes the seed's body and answers 201 with one such item. The rules
(known provider, no secrets, who may create) are the native API's: the same serializer and service.
``/api/agents/`` (with the slash) stays Nexus's own paginated list. docs/dialects.md, "Seed 000".
"""

from __future__ import annotations

from typing import Any

import orjson
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import selectors
from agents.apis import agent_create_from_request
from agents.models import Agent, AgentStatus
from agents.serializers import AgentCreateSerializer
from core.throttles import AgentOpsThrottle

# A bare array has no pages: the list stops here (a laptop's agents are far fewer).
MAX_AGENTS = 1000


class Seed000AgentSerializer(serializers.Serializer):
    """Seed 000's agent (for the schema; :func:`agent_seed000` renders it)."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    identityName = serializers.CharField()
    emoji = serializers.CharField()
    identityEmoji = serializers.CharField()
    description = serializers.CharField()
    workspace = serializers.CharField()
    provider = serializers.CharField()
    model = serializers.CharField()
    status = serializers.CharField()
    config = serializers.CharField(help_text="Provider options as a JSON string (seed 000).")


def agent_seed000(agent: Agent) -> dict[str, Any]:
    """One agent in seed 000's shape."""
    return {
        "id": str(agent.pk),
        "name": agent.name,
        "identityName": agent.name,
        "emoji": agent.emoji,
        "identityEmoji": agent.emoji,
        "description": agent.description,
        "workspace": agent.workspace,
        "provider": agent.provider,
        "model": agent.model,
        "status": agent.status,
        "config": orjson.dumps(agent.config or {}).decode(),
    }


class Seed000AgentsView(APIView):
    pagination_class = None
    throttle_classes = (AgentOpsThrottle,)

    @extend_schema(
        tags=["seed 000"],
        operation_id="seed000_agents_list",
        summary="List active agents (seed 000)",
        description="A bare array of the active agents you may use (yours and the shared ones).",
        responses={200: Seed000AgentSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        agents = selectors.agent_list(user=request.user, filters={"status": AgentStatus.ACTIVE})
        return Response([agent_seed000(agent) for agent in agents[:MAX_AGENTS]])

    @extend_schema(
        tags=["seed 000"],
        operation_id="seed000_agents_create",
        summary="Create an agent (seed 000)",
        request=AgentCreateSerializer,
        responses={201: Seed000AgentSerializer},
    )
    def post(self, request: Request) -> Response:
        return Response(agent_seed000(agent_create_from_request(request)), status=201)
