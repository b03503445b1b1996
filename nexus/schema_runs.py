"""The OpenAPI description of the async run endpoints (``realtime/http_urls.py``): invoke, agent run (SSE),
stop, approval decisions and the conversation's event stream (SSE).

Those endpoints are plain async Django views (a reply can take minutes; a DRF view would hold a
thread for all of it), so drf-spectacular cannot see them. Each is described here by a schema-only
``APIView`` stub that is never routed: :func:`add_run_endpoints`, a drf-spectacular preprocessing
hook, adds the stub under the path of the URL pattern named in :data:`SCHEMA_ONLY_VIEWS`. The views
themselves, and what they cost per request, stay exactly as they are.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import EndpointEnumerator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from realtime.protocol import MAX_ID_CHARS

TAGS = ["runs"]
RUN_STATUSES = ["completed", "stopped", "failed", "incomplete"]

_SSE_DESCRIPTION = (
    "`text/event-stream`: each event is `id: <seq>` and `data: <the WebSocket frame as JSON>` "
    "(docs/protocol.md), separated by a blank line; `: keep-alive` comments every 15 s. A stream "
    "that cannot continue ends with `event: error` and an `error` frame."
)
# One server-sent event, as a client's SSE parser hands it over (OpenAPI 3.0: ``schema`` of an
# event stream describes each event).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "description": "One event: `data` is one frame, JSON on one line (`seq`, `type`, `timestamp`, `data`).",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The event's seq."},
        "event": {
            "type": "string",
            "enum": ["message", "error"],
            "description": "`error`: the stream cannot continue (its frame is an `error` frame).",
        },
        "data": {"type": "string", "pattern": "^\\{.*\\}$"},
    },
    "required": ["data"],
}


def _uuid_path(name: str, what: str) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.UUID, OpenApiParameter.PATH, description=f"The {what}'s id.")


class HistoryItemSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)


class InvokeSerializer(serializers.Serializer):
    agent_id = serializers.UUIDField(help_text="The agent who answers (seed 000 also sends `agentId`).")
    message = serializers.CharField(
        max_length=settings.NEXUS_MAX_CONTENT_CHARS,
        help_text="The person's message (also accepted as `query`).",
    )
    conversation_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="Continue this conversation (the agent must be in it); a new one when absent.",
    )
    client_message_id = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=MAX_ID_CHARS,
        help_text="Idempotency key: the same id sends once.",
    )


class InvokeResultSerializer(serializers.Serializer):
    success = serializers.BooleanField(help_text="The run completed.")
    response = serializers.CharField(allow_blank=True, help_text="The whole reply (empty when it failed).")
    conversation_id = serializers.UUIDField()
    message_id = serializers.UUIDField(allow_null=True, help_text="The reply's message.")
    conversationId = serializers.UUIDField(help_text="`conversation_id` again, as seed 000 names it.")
    messageId = serializers.UUIDField(allow_null=True, help_text="`message_id` again, as seed 000 names it.")
    run_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=RUN_STATUSES, allow_null=True)
    error = serializers.JSONField(allow_null=True, help_text="Why the run failed, when it did.")


class AgentRunSerializer(serializers.Serializer):
    query = serializers.CharField(
        max_length=settings.NEXUS_MAX_CONTENT_CHARS,
        help_text="The person's message (also accepted as `message`).",
    )
    history = HistoryItemSerializer(
        many=True,
        required=False,
        allow_null=True,
        help_text="Earlier turns for a new conversation (the last 50 are kept); ignored with conversation_id.",
    )
    conversation_id = serializers.UUIDField(required=False, allow_null=True)
    client_message_id = serializers.CharField(required=False, allow_null=True, max_length=MAX_ID_CHARS)


class StopSerializer(serializers.Serializer):
    run_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="Only this run; every active one when absent."
    )


class StopResultSerializer(serializers.Serializer):
    stopped = serializers.ListField(child=serializers.UUIDField(), help_text="The runs asked to stop.")
    count = serializers.IntegerField(min_value=0)


_SEQ = {"type": "integer", "minimum": 0}
_CONFLICT = OpenApiResponse(
    description="`conflict` (a run is active and the conversation's policy is reject) or `agent_unavailable`."
)


class InvokeSchemaView(APIView):
    """Schema only (never routed): ``realtime.http_views.invoke``."""

    @extend_schema(
        tags=TAGS,
        operation_id="invoke",
        summary="Run an agent and wait for the whole reply (seed 000)",
        description=(
            "The run's events also stream to every socket and SSE stream watching the conversation. "
            "A reply that takes longer than 600 s answers 504 `timeout`; the run continues and is stored."
        ),
        request=InvokeSerializer,
        responses={
            200: InvokeResultSerializer,
            404: OpenApiResponse(description="No such agent or conversation, or not yours."),
            409: _CONFLICT,
            504: OpenApiResponse(description="`timeout`: the reply took too long."),
        },
    )
    def post(self, request: Any) -> Any:
        raise NotImplementedError


class AgentRunSchemaView(APIView):
    """Schema only (never routed): ``realtime.http_views.agent_run``."""

    @extend_schema(
        tags=TAGS,
        operation_id="agent_run",
        summary="Run an agent and stream its events over SSE (seed 002)",
        description=_SSE_DESCRIPTION + " The stream ends after the run's `run_finished`.",
        parameters=[_uuid_path("agent_id", "agent")],
        request=AgentRunSerializer,
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                response=SSE_EVENT_SCHEMA,
                description="The run's events.",
            ),
            409: _CONFLICT,
        },
    )
    def post(self, request: Any, agent_id: str) -> Any:
        raise NotImplementedError


class ConversationStopSchemaView(APIView):
    """Schema only (never routed): ``realtime.http_views.conversation_stop``."""

    @extend_schema(
        tags=TAGS,
        operation_id="conversation_stop",
        summary="Stop the conversation's active runs (the REST twin of the `stop` frame)",
        description="Every active run of the conversation, or only `run_id`; an empty list when none runs.",
        parameters=[_uuid_path("conversation_id", "conversation")],
        request=StopSerializer,
        responses={200: StopResultSerializer},
    )
    def post(self, request: Any, conversation_id: str) -> Any:
        raise NotImplementedError


class ConversationEventsSchemaView(APIView):
    """Schema only (never routed): ``realtime.http_views.conversation_events``."""

    @extend_schema(
        tags=TAGS,
        operation_id="conversation_events",
        summary="Follow a conversation's events over SSE (resume by seq)",
        description=_SSE_DESCRIPTION
        + " Every event after `Last-Event-ID` (or `after_seq`; the conversation's last seq when neither "
        "is sent) is replayed, then live events follow until the client leaves.",
        parameters=[
            _uuid_path("conversation_id", "conversation"),
            OpenApiParameter(
                "after_seq",
                _SEQ,
                OpenApiParameter.QUERY,
                required=False,
                description="Replay every event after this seq (non-negative).",
            ),
            OpenApiParameter(
                "Last-Event-ID",
                _SEQ,
                OpenApiParameter.HEADER,
                required=False,
                description="The SSE reconnection header; wins over `after_seq`.",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                response=SSE_EVENT_SCHEMA,
                description="The conversation's events.",
            )
        },
    )
    def get(self, request: Any, conversation_id: str) -> Any:
        raise NotImplementedError


class BranchResultSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["regenerate", "continue", "select"])
    message_id = serializers.UUIDField(help_text="The message acted on.")
    run_id = serializers.UUIDField(allow_null=True, help_text="The run started (null for select).")
    conversation_id = serializers.UUIDField()


class EditSerializer(serializers.Serializer):
    content = serializers.CharField(help_text="The edited message, stored beside the one it edits.")
    client_message_id = serializers.CharField(required=False, max_length=MAX_ID_CHARS)


class EditResultSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["edit"])
    message_id = serializers.UUIDField(help_text="The new message.")
    edited_id = serializers.UUIDField(help_text="The message it edits (its sibling).")
    run_id = serializers.UUIDField(allow_null=True)
    conversation_id = serializers.UUIDField()
    client_message_id = serializers.CharField(allow_null=True)
    duplicate = serializers.BooleanField()


def _branch_stub(action: str, summary: str, status: int) -> type[APIView]:
    """A schema-only view of one message-tree action (``realtime.branch_views``)."""

    class BranchSchemaView(APIView):
        @extend_schema(
            tags=TAGS,
            operation_id=f"message_{action}",
            summary=summary,
            description='docs/api.md, "Branches". Refused with `conflict` while a reply is being generated.',
            parameters=[_uuid_path("conversation_id", "conversation"), _uuid_path("message_id", "message")],
            request=EditSerializer if action == "edit" else None,
            responses={status: EditResultSerializer if action == "edit" else BranchResultSerializer},
        )
        def post(self, request: Any, conversation_id: str, message_id: str) -> Any:
            raise NotImplementedError

    BranchSchemaView.__name__ = BranchSchemaView.__qualname__ = f"Message{action.title()}SchemaView"
    return BranchSchemaView


class DecisionSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["approve", "deny"])


class DecisionResultSerializer(serializers.Serializer):
    toolCallId = serializers.CharField()  # the wire's name
    decision = serializers.ChoiceField(choices=["approved", "denied"])
    run_id = serializers.UUIDField()


class ApprovalDecideSchemaView(APIView):
    """Schema only (never routed): ``realtime.http_views.approval_decide_view``."""

    @extend_schema(
        tags=TAGS,
        operation_id="approval_decide",
        summary="Approve or deny a tool call that waits for approval",
        description=(
            'The REST twin of the `approve` and `deny` frames (docs/tools.md, "Approvals"). The first '
            "decision wins; a later one answers 409 `conflict` with the decision made. The run "
            "resumes wherever an executor claims it."
        ),
        parameters=[
            _uuid_path("conversation_id", "conversation"),
            OpenApiParameter(
                "tool_call_id",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="The call's `toolCallId`.",
            ),
        ],
        request=DecisionSerializer,
        responses={
            200: DecisionResultSerializer,
            409: OpenApiResponse(description="`conflict`: already decided, or its run has ended."),
        },
    )
    def post(self, request: Any, conversation_id: str, tool_call_id: str) -> Any:
        raise NotImplementedError


# URL pattern name (realtime/http_urls.py) -> its schema-only view
SCHEMA_ONLY_VIEWS: dict[str, type[APIView]] = {
    "invoke": InvokeSchemaView,
    "agent-run": AgentRunSchemaView,
    "conversation-stop": ConversationStopSchemaView,
    "conversation-events": ConversationEventsSchemaView,
    "approval-decide": ApprovalDecideSchemaView,
    "message-regenerate": _branch_stub("regenerate", "Regenerate a reply (a new version beside it)", 202),
    "message-edit": _branch_stub("edit", "Edit a message and resend it (a new branch from it)", 202),
    "message-continue": _branch_stub("continue", "Continue a reply cut off at the length limit", 202),
    "message-select": _branch_stub("select", "Choose the version the conversation goes on from", 200),
}


def _named_routes(patterns: list[Any], prefix: str = "") -> dict[str, str]:
    """URL pattern name -> its full route regex, for the names in SCHEMA_ONLY_VIEWS."""
    found: dict[str, str] = {}
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found.update(_named_routes(pattern.url_patterns, route))
        elif isinstance(pattern, URLPattern) and pattern.name in SCHEMA_ONLY_VIEWS:
            found.setdefault(pattern.name, route)
    return found


def add_run_endpoints(
    endpoints: list[tuple[str, str, str, Any]], **kwargs: Any
) -> list[tuple[str, str, str, Any]]:
    """Preprocessing hook: add the async run endpoints, described by their schema-only views."""
    routes = _named_routes(get_resolver().url_patterns)
    missing = set(SCHEMA_ONLY_VIEWS) - set(routes)
    if missing:
        raise LookupError(f"URL patterns not found for the schema: {sorted(missing)}")
    enumerator = EndpointEnumerator()
    added = []
    for name, view in SCHEMA_ONLY_VIEWS.items():
        path_regex = routes[name]
        path = enumerator.get_path_from_regex(path_regex)
        callback = view.as_view()
        for method in ("get", "post"):
            if hasattr(view, method):
                added.append((path, path_regex, method.upper(), callback))
    return [*endpoints, *added]
