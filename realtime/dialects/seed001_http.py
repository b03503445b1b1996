"""Seed 001's REST dialect: its paths (no ``/api`` prefix, with or without a trailing slash), its
request and response models, and 422 for validation errors, over the same services as the native
API. docs/dialects.md, "Seed 001".

- ``POST /chat/sessions/create`` -> ``SessionResponse``; an ``agent_agent`` session starts at once
  (its opening: ``settings.opening_message``, else the goal, else :data:`DEFAULT_OPENING`).
- ``GET|DELETE /chat/sessions/{id}``; ``GET /agents/status/{id}``; ``GET /agents/list``;
  ``POST /agents/{id}/message`` (``receiver_id``: the session the message goes to).
- ``/auth/login`` and ``/auth/verify`` are the native views with this dialect's errors
  (:func:`seed001_view`, routed by nexus/urls.py).
"""

from __future__ import annotations

from typing import Any, cast

from asgiref.sync import async_to_sync
from django.urls import re_path
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from agents.provider_config import provider_preset
from agents.selectors import agent_get_for_user, agent_list
from conversations.models import Conversation, SessionType
from conversations.selectors import conversation_get_for_user, conversation_participants
from conversations.services import conversation_create_for_user, conversation_delete
from core.auth import User
from core.errors import NexusError, NotFound, ValidationFailed
from core.exceptions import exception_handler
from core.throttles import Seed001AgentOpsThrottle, Seed001SessionCreateThrottle, Seed001SessionReadThrottle
from realtime.dialects.seed001 import seed_provider
from runs.selectors import agent_status_for_user
from runs.sending import message_send, session_open
from runs.stopping import conversation_delete_with_runs

DEFAULT_OPENING = "Begin the conversation: introduce yourself and start working on the session's goal."
MESSAGE_TYPES = ("text", "ping", "error", "info", "system", "response", "stop", "cooldown")


OUT_OF_SCHEMA = extend_schema(exclude=True)


def _seed001_errors(exc: Exception, context: dict[str, Any]) -> Response:
    """The one error shape ``{detail, code, timestamp}``, with 422 for a validation error."""
    response = exception_handler(exc, context)
    if (
        response is not None
        and response.status_code == 400
        and response.data.get("code") == "validation_error"
    ):
        response.status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    return response


class Seed001View(APIView):
    def get_exception_handler(self) -> Any:
        return _seed001_errors


def seed001_view(view: type[APIView]) -> type[APIView]:
    """A native view (one that takes POST) answering with this dialect's errors (422 for
    validation), out of the OpenAPI schema where the native path already is."""

    @OUT_OF_SCHEMA
    def post(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        return view.post(self, request, *args, **kwargs)  # type: ignore[attr-defined]  # the views given have post

    return type(
        f"Seed001{view.__name__}",
        (view,),
        {"get_exception_handler": Seed001View.get_exception_handler, "post": post},
    )


# --- request models -----------------------------------------------------------------------------


class AgentConfigSerializer(serializers.Serializer):
    provider = serializers.CharField(max_length=32)
    model = serializers.CharField(max_length=200, required=False)
    capabilities = serializers.ListField(child=serializers.CharField(max_length=100), required=False)
    interaction_modes = serializers.ListField(child=serializers.CharField(max_length=100), required=False)
    personality = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    metadata = serializers.DictField(required=False)
    name = serializers.CharField(required=False, max_length=120)


class CreateSessionSerializer(serializers.Serializer):
    session_type = serializers.ChoiceField(choices=SessionType.values)
    agents = serializers.DictField(child=AgentConfigSerializer(), allow_empty=False)
    interaction_modes = serializers.ListField(child=serializers.CharField(max_length=100), required=False)
    metadata = serializers.DictField(required=False)
    # Nexus's own, optional: the session's limits and goal (max_turns, goal, cooldown_seconds...)
    settings = serializers.DictField(required=False)


class AgentMessageSerializer(serializers.Serializer):
    receiver_id = serializers.CharField(max_length=64)
    content = serializers.CharField(max_length=100_000, trim_whitespace=False)
    message_type = serializers.ChoiceField(choices=MESSAGE_TYPES)
    structured_data = serializers.DictField(required=False)
    metadata = serializers.DictField(required=False)

    def validate_message_type(self, value: str) -> str:
        if value != "text":
            raise serializers.ValidationError("Only text messages are sent to an agent.")
        return value


# --- shapes -------------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def agent_seed_status(agent: Agent) -> str:
    """AgentStatus.status: active, inactive (paused), cooldown or error."""
    if agent.cooldown_until and agent.cooldown_until > timezone.now():
        return "cooldown"
    return {"paused": "inactive"}.get(agent.status, agent.status)


def _agent_metadata(agent: Agent) -> dict[str, Any]:
    metadata = dict((agent.config or {}).get("metadata") or {})
    metadata.pop("provider_preset", None)
    return metadata


def session_response(conversation: Conversation) -> dict[str, Any]:
    """SessionResponse."""
    context = conversation.context or {}
    return {
        "session_id": str(conversation.pk),
        "type": "system",
        "created_at": _iso(conversation.created_at),
        "status": conversation.status,
        "session_type": conversation.session_type,
        "agents": {
            agent.participant_role: {
                "agent_id": str(agent.pk),
                "provider": seed_provider(agent),
                "model": agent.model,
                "capabilities": list(agent.capabilities or []),
                "interaction_modes": list(agent.interaction_modes or []),
                "personality": agent.personality,
                "status": agent_seed_status(agent),
                "metadata": _agent_metadata(agent),
            }
            for agent in conversation_participants(conversation=conversation)
        },
        "interaction_modes": list(context.get("interaction_modes") or []),
        "metadata": dict(context.get("metadata") or {}),
    }


def agent_status(*, user: Any, agent: Agent) -> dict[str, Any]:
    """AgentStatus."""
    row = agent_status_for_user(user=user, agent=agent)
    row["agent_id"] = str(row["agent_id"])
    row["owner_id"] = str(row["owner_id"]) if row["owner_id"] is not None else None
    row["status"] = agent_seed_status(agent)
    row["last_active"] = _iso(row["last_active"]) or _iso(agent.created_at)
    row["metadata"] = {
        **row["metadata"],
        "provider": seed_provider(agent),
        "cooldown_until": _iso(row["metadata"]["cooldown_until"]),
    }
    return row


def _person(request: Request) -> User:
    return cast(User, request.user)  # authenticated: the API's default permission


# --- views --------------------------------------------------------------------------------------


def _inline_agent(role: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An agent config of the seed as Nexus's inline agent: a preset name (groq...) becomes the
    preset's adapter, keeping the name the client chose in ``metadata.provider_preset``."""
    spec = dict(spec)
    metadata = dict(spec.pop("metadata", None) or {})
    preset = provider_preset(spec["provider"])
    if preset is not None:
        metadata["provider_preset"] = spec["provider"]
        spec["provider"] = preset.adapter
        if not spec.get("model") and preset.model:
            spec["model"] = preset.model
    if not spec.get("model"):
        raise ValidationFailed(
            "A model is required for this provider.",
            details={
                "agents": [f"{role}.model: required (the provider {spec['provider']} names no default)."]
            },
        )
    if metadata:
        spec["metadata"] = metadata
    # named by the provider the client chose (groq), not the adapter behind it
    chosen = metadata.get("provider_preset") or spec["provider"]
    spec.setdefault("name", f"{role.replace('_', ' ').title()} ({chosen} {spec['model']})"[:120])
    return spec


def _session_settings(data: dict[str, Any]) -> dict[str, Any]:
    settings = dict(data.get("settings") or {})
    if data["session_type"] == SessionType.AGENT_AGENT and not settings.get("opening_message"):
        goal = settings.get("goal") or (data.get("metadata") or {}).get("goal")
        settings["opening_message"] = goal if isinstance(goal, str) and goal.strip() else DEFAULT_OPENING
    return settings


class SessionCreateView(Seed001View):
    throttle_classes = (Seed001SessionCreateThrottle,)

    @OUT_OF_SCHEMA
    def post(self, request: Request) -> Response:
        body = CreateSessionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        context = {
            key: data[key] for key in ("interaction_modes", "metadata") if data.get(key) not in (None, [], {})
        }
        conversation = conversation_create_for_user(  # one transaction: agents and session
            owner=request.user,
            agents={role: _inline_agent(role, spec) for role, spec in data["agents"].items()},
            session_type=data["session_type"],
            context=context,
            settings=_session_settings(data),
        )
        try:
            session_open(user=_person(request), conversation=conversation)
        except NexusError:  # the opening was refused (a quota): the request leaves nothing behind
            conversation_delete(conversation=conversation)
            raise
        return Response(session_response(conversation))


class SessionDetailView(Seed001View):
    throttle_classes = (Seed001SessionReadThrottle,)

    @OUT_OF_SCHEMA
    def get(self, request: Request, session_id: str) -> Response:
        conversation = conversation_get_for_user(user=_person(request), conversation_id=session_id)
        return Response(session_response(conversation))

    @OUT_OF_SCHEMA
    def delete(self, request: Request, session_id: str) -> Response:
        conversation_delete_with_runs(user=_person(request), conversation_id=session_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AgentStatusView(Seed001View):
    throttle_classes = (Seed001AgentOpsThrottle,)

    @OUT_OF_SCHEMA
    def get(self, request: Request, agent_id: str) -> Response:
        agent = agent_get_for_user(user=_person(request), agent_id=agent_id)
        return Response(agent_status(user=_person(request), agent=agent))


class AgentListView(Seed001View):
    throttle_classes = (Seed001AgentOpsThrottle,)

    @OUT_OF_SCHEMA
    def get(self, request: Request) -> Response:
        agents = list(agent_list(user=_person(request)))
        return Response(
            {
                "agents": [agent_status(user=_person(request), agent=agent) for agent in agents],
                "timestamp": timezone.now().isoformat(),
                "total_count": len(agents),
                "user_owned_count": sum(1 for agent in agents if agent.owner_id == request.user.pk),
            }
        )


class AgentMessageView(Seed001View):
    throttle_classes = (Seed001AgentOpsThrottle,)

    @OUT_OF_SCHEMA
    def post(self, request: Request, agent_id: str) -> Response:
        agent = agent_get_for_user(user=_person(request), agent_id=agent_id)
        body = AgentMessageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        conversation = conversation_get_for_user(user=_person(request), conversation_id=data["receiver_id"])
        if not conversation.participants.filter(agent=agent).exists():
            raise NotFound("This agent is not in that session.")
        context = {"structured_data": data["structured_data"]} if data.get("structured_data") else None
        result = async_to_sync(message_send)(
            user=_person(request),
            conversation_id=conversation.pk,
            content=data["content"],
            agent_id=str(agent.pk),
            context=context,
        )
        return Response(
            {
                "status": "duplicate" if result.duplicate else ("queued" if result.run_id else "sent"),
                "message_id": str(result.message_id),
                "sender": request.user.get_username(),
                "receiver": str(agent.pk),
                "timestamp": timezone.now().isoformat(),
            }
        )


# The seed's paths, at the server root, with or without a trailing slash (nexus/urls.py).
urlpatterns = [
    re_path(r"^chat/sessions/create/?$", SessionCreateView.as_view(), name="seed001-session-create"),
    re_path(r"^chat/sessions/(?P<session_id>[^/]+)/?$", SessionDetailView.as_view(), name="seed001-session"),
    re_path(r"^agents/status/(?P<agent_id>[^/]+)/?$", AgentStatusView.as_view(), name="seed001-agent-status"),
    re_path(r"^agents/list/?$", AgentListView.as_view(), name="seed001-agent-list"),
    re_path(
        r"^agents/(?P<agent_id>[^/]+)/message/?$", AgentMessageView.as_view(), name="seed001-agent-message"
    ),
]
