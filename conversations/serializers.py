"""Conversation and message shapes of the REST API. Rules live in conversations.services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from conversations.branches import siblings_for
from conversations.models import Conversation, Message, Opinion, Participant, SessionType
from conversations.selectors import SEARCH_MAX_CHARS
from conversations.text import preview
from core.fields import StrictCharField

_AGENT_REF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"agent_id": {"type": "string", "format": "uuid"}},
    "required": ["agent_id"],
    "additionalProperties": False,
}
_INLINE_AGENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A new agent owned by you (seed 001 AgentConfig).",
    "properties": {
        "provider": {"type": "string", "minLength": 1, "maxLength": 32},
        "model": {"type": "string", "minLength": 1, "maxLength": 200},
        "name": {"type": "string", "maxLength": 120},
        "emoji": {"type": "string", "maxLength": 16},
        "colour": {"type": "string", "maxLength": 7, "pattern": "^(#[0-9a-fA-F]{6})?$"},
        "description": {"type": "string"},
        "workspace": {"type": "string", "maxLength": 64},
        "base_url": {"type": "string", "format": "uri"},
        "system_prompt": {"type": "string"},
        "personality": {"type": "string"},
        "capabilities": {"type": "array", "items": {"type": "string"}},
        "interaction_modes": {"type": "array", "items": {"type": "string"}},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "nullable": True},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "nullable": True},
        "context_window": {"type": "integer", "minimum": 256, "maximum": 10_000_000, "nullable": True},
        "tools": {"type": "array", "items": {"type": "object"}},
        "knowledge_bases": {"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 20},
        "knowledge_mode": {"type": "string", "enum": ["tool", "retrieve", "off"]},
        "config": {"type": "object", "additionalProperties": {}},
        "metadata": {"type": "object", "additionalProperties": {}},
    },
    "required": ["provider", "model"],
    "additionalProperties": False,
}
AGENTS_FIELD_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "type": "array",
            "items": {"type": "string", "format": "uuid"},
            "minItems": 1,
            "maxItems": 10,
            "description": "Agent ids in speaking order (roles primary, secondary, participant_3...).",
        },
        {
            "type": "object",
            "description": 'Seed 001: {"primary": {...}, "secondary": {...}}, each an agent_id or an inline config.',
            "minProperties": 1,
            "maxProperties": 10,
            "additionalProperties": {"oneOf": [_AGENT_REF_SCHEMA, _INLINE_AGENT_SCHEMA]},
        },
    ]
}


@extend_schema_field(AGENTS_FIELD_SCHEMA)
class AgentsField(serializers.Field):
    """A list of agent ids or a ``{role: agent}`` mapping; resolved by the service."""

    default_error_messages = {"invalid": "A list of agent ids, or an object of {{role: agent}}."}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, list):
            for value in data:
                if not isinstance(value, str):
                    raise serializers.ValidationError("Agent ids are strings.")
            return data
        if isinstance(data, dict):
            for role, value in data.items():
                if not isinstance(value, dict | str):
                    raise serializers.ValidationError(f"{role}: an object with agent_id, or an agent config.")
            return data
        self.fail("invalid")

    def to_representation(self, value: Any) -> Any:
        return value


class ParticipantSerializer(serializers.ModelSerializer):
    agent_id = serializers.UUIDField(source="agent.id", read_only=True)
    name = serializers.CharField(source="agent.name", read_only=True)
    emoji = serializers.CharField(source="agent.emoji", read_only=True)
    colour = serializers.CharField(source="agent.colour", read_only=True)
    provider = serializers.CharField(source="agent.provider", read_only=True)
    model = serializers.CharField(source="agent.model", read_only=True)
    status = serializers.CharField(source="agent.status", read_only=True)

    class Meta:
        model = Participant
        fields = ("agent_id", "name", "emoji", "colour", "provider", "model", "status", "role", "position")
        read_only_fields = fields


class ConversationSerializer(serializers.ModelSerializer):
    """A conversation (a seed-001 session) without its messages."""

    owner_id = serializers.IntegerField(read_only=True)
    agents = ParticipantSerializer(source="participants", many=True, read_only=True)
    context = serializers.DictField(read_only=True)
    settings = serializers.DictField(read_only=True)
    last_message_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the newest message was written; null before the first.",
    )
    preview = serializers.SerializerMethodField(
        help_text="The newest message with text, as plain text, cut to 100 characters."
    )

    class Meta:
        model = Conversation
        fields = (
            "id",
            "owner_id",
            "title",
            "session_type",
            "status",
            "agents",
            "context",
            "settings",
            "pinned",
            "archived",
            "last_seq",
            "created_at",
            "updated_at",
            "expires_at",
            "last_message_at",
            "preview",
        )
        read_only_fields = fields

    def get_preview(self, conversation: Conversation) -> str:
        return preview(getattr(conversation, "preview_source", None) or "")


class MessageSerializer(serializers.ModelSerializer):
    conversation_id = serializers.UUIDField(read_only=True)
    agent_id = serializers.UUIDField(read_only=True, allow_null=True)
    agent_name = serializers.SerializerMethodField()
    metadata = serializers.DictField(read_only=True)
    parent_id = serializers.UUIDField(read_only=True, allow_null=True)
    sibling_ids = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = (
            "id",
            "conversation_id",
            "seq",
            "role",
            "type",
            "content",
            "status",
            "agent_id",
            "agent_name",
            "metadata",
            "opinion",
            "feedback_comment",
            "client_message_id",
            "parent_id",
            "sibling_ids",
            "hidden",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.UUIDField()))
    def get_sibling_ids(self, message: Message) -> list[str]:
        """The message's siblings, oldest first, itself included (``< 2/3 >``): other replies to
        the same message (regenerate), other versions of the same message (edit)."""
        siblings = self.context.get("siblings") or {}
        found = siblings.get(message.pk)
        return found.ids if found is not None else [str(message.pk)]

    def get_agent_name(self, message: Message) -> str | None:
        return message.agent.name if message.agent_id and message.agent else None

    def to_representation(self, instance: Message) -> dict[str, Any]:
        data = super().to_representation(instance)
        # the attached files' text is the model's (runs.attachments); the references stay
        if isinstance(data.get("metadata"), dict):
            data["metadata"] = {k: v for k, v in data["metadata"].items() if k != "attachments_text"}
        return data


class ConversationDetailSerializer(ConversationSerializer):
    """A conversation with its history, oldest first."""

    messages = serializers.SerializerMethodField()

    class Meta(ConversationSerializer.Meta):
        fields = (*ConversationSerializer.Meta.fields, "messages")
        read_only_fields = fields

    @extend_schema_field(MessageSerializer(many=True))
    def get_messages(self, conversation: Conversation) -> list[dict[str, Any]]:
        messages = self.context.get("messages", [])
        return MessageSerializer(messages, many=True, context={"siblings": siblings_for(messages)}).data


class ConversationCreateSerializer(serializers.Serializer):
    session_type = serializers.ChoiceField(
        choices=SessionType.choices, required=False, default=SessionType.HUMAN_AGENT
    )
    agents = AgentsField()
    title = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    context = serializers.DictField(required=False, default=dict)
    settings = serializers.DictField(
        required=False,
        default=dict,
        help_text="max_turns (1-100), goal, termination_phrase, cooldown_seconds, token_budget, "
        "opening_message, double_text (enqueue|reject|interrupt).",
    )


class ConversationAgentSerializer(serializers.Serializer):
    agent_id = serializers.UUIDField(help_text="The agent who answers from now on (one you may use).")


class ConversationUpdateSerializer(serializers.Serializer):
    """Any of the three; at least one."""

    title = StrictCharField(max_length=200, required=False, help_text="A title of your own: never replaced.")
    pinned = serializers.BooleanField(required=False, help_text="Pinned conversations lead the list.")
    archived = serializers.BooleanField(
        required=False, help_text="Archived ones leave the list (`?archived=1`)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("Send title, pinned or archived.")
        return attrs


class ConversationListQuerySerializer(serializers.Serializer):
    search = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=SEARCH_MAX_CHARS,
        help_text="Only conversations whose title or any message contains this (case-insensitive).",
    )
    archived = serializers.BooleanField(
        required=False, default=False, help_text="1: the archived conversations instead of the others."
    )


class ExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(
        choices=["md", "json"],
        required=False,
        default="md",
        help_text="md: a Markdown transcript; json: data.",
    )


class HistoryQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=1000, required=False, default=500, help_text="The most recent N messages."
    )
    after_seq = serializers.IntegerField(
        min_value=0, required=False, help_text="Only messages after this seq."
    )


class TitleRequestSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=["provider", "untitled"],
        required=False,
        default="provider",
        help_text="provider: ask the agent, replace the title; untitled: the first sentence of the "
        "first user message, only when there is no title yet.",
    )


class TitleSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    source = serializers.ChoiceField(
        choices=["provider", "fallback", "first_message", "kept"],
        help_text="fallback and first_message: the first sentence of the first user message; "
        "kept: the conversation already had a title.",
    )


class FeedbackSerializer(serializers.Serializer):
    rating = serializers.ChoiceField(choices=Opinion.choices, allow_null=True)
    comment = StrictCharField(max_length=4000, required=False, allow_blank=True, default="")


class FeedbackResultSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    conversation_id = serializers.UUIDField()
    opinion = serializers.ChoiceField(choices=Opinion.choices, allow_null=True)
    feedback_comment = serializers.CharField(allow_blank=True)
