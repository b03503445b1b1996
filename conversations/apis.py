"""Conversations and messages over REST (seeds 001, 002). Thin: selectors read, services write.

The run endpoints (invoke, stop, SSE) are realtime faces (realtime/http_urls.py).
"""

from __future__ import annotations

import re
from typing import Any

from asgiref.sync import async_to_sync
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.provider_config import complete_title
from agents.selectors import agent_get_for_user
from agents.serializers import AgentStatusSerializer
from conversations import selectors, services
from conversations.export import transcript_json, transcript_markdown
from conversations.serializers import (
    ConversationAgentSerializer,
    ConversationCreateSerializer,
    ConversationDetailSerializer,
    ConversationListQuerySerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
    ExportQuerySerializer,
    FeedbackResultSerializer,
    FeedbackSerializer,
    HistoryQuerySerializer,
    MessageSerializer,
    TitleRequestSerializer,
    TitleSerializer,
)
from core.errors import NexusError
from core.pagination import PageNumberPagination
from core.throttles import AgentOpsThrottle, ConversationCreateThrottle, ConversationReadThrottle
from runs.participants import conversation_agent_switch
from runs.quotas import run_rate_admit
from runs.selectors import agent_status_for_user
from runs.sending import session_open
from runs.stopping import conversation_delete_with_runs

TAGS = ["conversations"]


def _detail(request: Request, conversation: Any, *, limit: int = 500, after_seq: int | None = None) -> dict:
    messages = selectors.message_list(conversation=conversation, after_seq=after_seq, limit=limit)
    return ConversationDetailSerializer(conversation, context={"request": request, "messages": messages}).data


class ConversationListView(APIView):
    pagination_class = PageNumberPagination
    throttle_classes = (ConversationReadThrottle, ConversationCreateThrottle)

    @extend_schema(
        tags=TAGS,
        summary="List conversations",
        description=(
            "Your conversations (staff: all): pinned first, then by last activity (the newest "
            "message, or creation). Archived ones only with `archived=1`. `search` matches titles "
            "and message text, case-insensitively."
        ),
        parameters=[ConversationListQuerySerializer],
        responses={200: ConversationSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        query = ConversationListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        conversations = selectors.conversation_list_with_agents(user=request.user, **query.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(conversations, request, view=self)
        return paginator.get_paginated_response(ConversationSerializer(page, many=True).data)

    @extend_schema(
        tags=TAGS,
        summary="Create a conversation",
        description=(
            "`agents` is a list of agent ids, or the seed-001 mapping "
            '`{"primary": {"agent_id": ...}, "secondary": {"provider": ..., "model": ...}}` where an '
            "inline config creates an agent owned by you. `agent_agent` sessions need two or more agents."
        ),
        request=ConversationCreateSerializer,
        responses={201: ConversationDetailSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = ConversationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = services.conversation_create_for_user(owner=request.user, **serializer.validated_data)
        try:
            session_open(user=request.user, conversation=conversation)
        except NexusError:  # the opening was refused (a quota): the request leaves nothing behind
            services.conversation_delete(conversation=conversation)
            raise
        return Response(_detail(request, conversation), status=status.HTTP_201_CREATED)


class ConversationDetailView(APIView):
    throttle_classes = (ConversationReadThrottle,)

    @extend_schema(
        tags=TAGS,
        summary="Get a conversation with its history",
        description="Messages oldest first: the most recent `limit`, optionally only after `after_seq`.",
        parameters=[HistoryQuerySerializer],
        responses={200: ConversationDetailSerializer},
    )
    def get(self, request: Request, conversation_id: Any) -> Response:
        query = HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        conversation = selectors.conversation_get_with_activity(
            user=request.user, conversation_id=conversation_id
        )
        return Response(_detail(request, conversation, **query.validated_data))

    @extend_schema(
        tags=TAGS,
        summary="Rename, pin or archive a conversation",
        request=ConversationUpdateSerializer,
        responses={200: ConversationSerializer},
    )
    def patch(self, request: Request, conversation_id: Any) -> Response:
        conversation = selectors.conversation_get_with_activity(
            user=request.user, conversation_id=conversation_id
        )
        serializer = ConversationUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = services.conversation_update(conversation=conversation, **serializer.validated_data)
        return Response(ConversationSerializer(conversation).data)

    @extend_schema(
        tags=TAGS,
        summary="Delete a conversation and its messages",
        description=(
            "Its messages and runs go with it. A reply in flight is stopped (its provider is no longer "
            "asked); the conversation's sockets get `run_finished` `{status: stopped}` for each run "
            "that was active, then `system` `{code: conversation_deleted}`, and close 4001."
        ),
        responses={204: OpenApiResponse(description="Deleted.")},
    )
    def delete(self, request: Request, conversation_id: Any) -> Response:
        conversation_delete_with_runs(user=request.user, conversation_id=conversation_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConversationAgentView(APIView):
    throttle_classes = (AgentOpsThrottle,)

    @extend_schema(
        tags=TAGS,
        summary="Change who answers",
        description=(
            "Makes `agent_id` the conversation's primary participant: the next message is answered by "
            "it, with the whole history. An agent already in the conversation swaps places with the "
            "primary; any other replaces it. A reply in flight finishes with the agent it started with. "
            "Person-to-agent conversations only (400 for agent-to-agent sessions); a paused or failing "
            "agent is refused (409 `agent_unavailable`); an agent you may not use is 400."
        ),
        request=ConversationAgentSerializer,
        responses={200: ConversationSerializer},
    )
    def post(self, request: Request, conversation_id: Any) -> Response:
        selectors.conversation_get_for_user(user=request.user, conversation_id=conversation_id)  # 404 first
        serializer = ConversationAgentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = conversation_agent_switch(
            user=request.user, conversation_id=conversation_id, agent_id=serializer.validated_data["agent_id"]
        )
        conversation = selectors.conversation_list_with_agents(user=request.user).get(pk=conversation.pk)
        return Response(ConversationSerializer(conversation).data)


class ConversationTitleView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Generate and save a short title",
        description=(
            "`mode: provider` (the default) asks the conversation's first agent for a title of the "
            "first messages and replaces the title; when the provider fails, the title is the first "
            "sentence of the first user message (source `fallback`). `mode: untitled` (what the web "
            "page sends after a conversation's first reply) titles an untitled conversation with "
            "that first sentence at once, without asking a provider (source `first_message`), and "
            "keeps any title already there (source `kept`)."
        ),
        request=TitleRequestSerializer,
        responses={200: TitleSerializer},
    )
    def post(self, request: Request, conversation_id: Any) -> Response:
        conversation = selectors.conversation_get_for_user(user=request.user, conversation_id=conversation_id)
        options = TitleRequestSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        if options.validated_data["mode"] == "untitled":
            title, source = services.conversation_title_untitled(conversation=conversation)
            return Response({"id": conversation.id, "title": title, "source": source})
        # It asks a provider: a run start for the per-minute quota, like every other path.
        async_to_sync(run_rate_admit)(user=request.user)
        title, source = services.conversation_generate_title(
            conversation=conversation, complete=complete_title
        )
        return Response({"id": conversation.id, "title": title, "source": source})


def _filename(conversation: Any, extension: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", (conversation.title or "conversation").lower()).strip("-")[:50]
    return f"{slug or 'conversation'}-{str(conversation.id)[:8]}.{extension}"


class ConversationExportView(APIView):
    throttle_classes = (ConversationReadThrottle,)

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # ``?format=`` names the export here, not a DRF renderer: errors stay JSON.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        tags=TAGS,
        summary="Export a conversation (a download)",
        description=(
            "`format=md`: a Markdown transcript, each message under its speaker and time (UTC); "
            "`format=json`: the conversation and all its messages, as the API shows them. Sent as "
            "an attachment (`Content-Disposition`)."
        ),
        parameters=[ExportQuerySerializer],
        responses={
            (200, "text/markdown"): OpenApiTypes.STR,
            (200, "application/json"): OpenApiTypes.OBJECT,
        },
    )
    def get(self, request: Request, conversation_id: Any) -> HttpResponse:
        query = ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        conversation = selectors.conversation_get_with_activity(
            user=request.user, conversation_id=conversation_id
        )
        messages = selectors.message_list(conversation=conversation)
        agents = selectors.conversation_participants(conversation=conversation)
        now = timezone.now()
        if query.validated_data["format"] == "json":
            data = {
                "conversation": ConversationSerializer(conversation).data,
                "messages": MessageSerializer(messages, many=True).data,
                "exported_at": now,
            }
            body, content_type, extension = transcript_json(data), "application/json", "json"
        else:
            body = transcript_markdown(
                conversation=conversation, agents=agents, messages=messages, exported_at=now
            )
            content_type, extension = "text/markdown; charset=utf-8", "md"
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{_filename(conversation, extension)}"'
        return response


class MessageFeedbackView(APIView):
    @extend_schema(
        tags=["messages"],
        summary="Rate a message",
        description="`rating`: positive, negative, or null to clear it; `comment` is optional.",
        request=FeedbackSerializer,
        responses={200: FeedbackResultSerializer},
    )
    def post(self, request: Request, message_id: Any) -> Response:
        message = selectors.message_get_for_user(user=request.user, message_id=message_id)
        serializer = FeedbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = services.message_feedback(
            message=message,
            rating=serializer.validated_data["rating"],
            comment=serializer.validated_data.get("comment", ""),
        )
        return Response(
            {
                "id": message.id,
                "conversation_id": message.conversation_id,
                "opinion": message.opinion,
                "feedback_comment": message.feedback_comment,
            }
        )


# GET /api/agents/<id>/status/ lives here, beside the conversations it counts: agents/ does not import
# conversations/. It counts runs too, so its read is runs.selectors.agent_status_for_user. (No docstring: drf-spectacular would publish it as the operation's description.)
class AgentStatusView(APIView):
    throttle_classes = (AgentOpsThrottle,)

    @extend_schema(
        tags=["agents"],
        summary="An agent's status (seed 001 AgentStatus)",
        responses={200: AgentStatusSerializer},
    )
    def get(self, request: Request, agent_id: Any) -> Response:
        agent = agent_get_for_user(user=request.user, agent_id=agent_id)
        body = agent_status_for_user(user=request.user, agent=agent)
        return Response(AgentStatusSerializer(body).data)
