"""Conversations, their ordered participants and messages (SPEC section 2); runs live in runs/."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class SessionType(models.TextChoices):
    HUMAN_AGENT = "human_agent"
    AGENT_AGENT = "agent_agent"


class ConversationStatus(models.TextChoices):
    ACTIVE = "active"
    COMPLETED = "completed"
    STOPPED = "stopped"
    EXPIRED = "expired"


class DoubleTextPolicy(models.TextChoices):
    ENQUEUE = "enqueue"
    REJECT = "reject"
    INTERRUPT = "interrupt"


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True, default="")
    session_type = models.CharField(
        max_length=16, choices=SessionType.choices, default=SessionType.HUMAN_AGENT
    )
    agents = models.ManyToManyField("agents.Agent", through="Participant", related_name="conversations")
    status = models.CharField(
        max_length=16, choices=ConversationStatus.choices, default=ConversationStatus.ACTIVE
    )
    context = models.JSONField(default=dict, blank=True)
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="max_turns, goal, termination_phrase, cooldown_seconds, token_budget, double_text.",
    )
    last_seq = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # The person's own filing: pinned ones lead the list; archived ones leave it (``?archived=1``).
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)
    # The id a client chose for this conversation (seed 004's ``sessionId``, e.g. "session-123"):
    # unique per owner only, so another user's "session-123" is another conversation
    # (docs/dialects.md, "Seed 004").
    client_session_id = models.CharField(max_length=128, null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"], name="conv_owner_recent"),
            models.Index(fields=["status", "expires_at"], name="conv_status_expiry"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(session_type__in=SessionType.values), name="conversation_session_type_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ConversationStatus.values), name="conversation_status_valid"
            ),
            models.CheckConstraint(condition=Q(last_seq__gte=0), name="conversation_last_seq_non_negative"),
            models.UniqueConstraint(
                fields=["owner", "client_session_id"],
                condition=Q(client_session_id__isnull=False),
                name="conversation_client_session_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {str(self.id)[:8]}"

    @property
    def double_text_policy(self) -> str:
        value = (self.settings or {}).get("double_text", DoubleTextPolicy.ENQUEUE)
        return value if value in DoubleTextPolicy.values else DoubleTextPolicy.ENQUEUE


class Participant(models.Model):
    """An agent in a conversation, in speaking order, with a role such as primary/secondary."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="participants")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="participations")
    role = models.CharField(max_length=32, default="primary")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["conversation", "position"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "position"], name="participant_position_unique"),
            models.UniqueConstraint(fields=["conversation", "agent"], name="participant_agent_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.position}"


class MessageRole(models.TextChoices):
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"
    TOOL = "tool"


class MessageType(models.TextChoices):
    MESSAGE = "message"
    THOUGHT = "thought"
    ACTION = "action"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"


class MessageStatus(models.TextChoices):
    STREAMING = "streaming"
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    STOPPED = "stopped"
    ERROR = "error"


class Opinion(models.TextChoices):
    POSITIVE = "positive"
    NEGATIVE = "negative"


class Message(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    type = models.CharField(max_length=16, choices=MessageType.choices, default=MessageType.MESSAGE)
    content = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=MessageStatus.choices, default=MessageStatus.COMPLETE)
    seq = models.BigIntegerField(null=True, blank=True, help_text="The event seq that created this message.")
    metadata = models.JSONField(default=dict, blank=True)
    opinion = models.CharField(max_length=8, choices=Opinion.choices, null=True, blank=True)
    feedback_comment = models.TextField(blank=True, default="")
    client_message_id = models.CharField(max_length=128, null=True, blank=True)
    # The message tree (regenerate, edit and resend, continue): a person's message or a reply
    # follows its ``parent`` (null: the first message, or a tool call/result, which belongs to its
    # run's reply through ``metadata.run_id``). Messages with the same parent and role are
    # siblings; ``selected`` marks the one chosen among them (the newest unless the person flips),
    # and ``hidden`` (kept by ``conversations.branches``) whether it is off the active path: it or
    # an ancestor is not selected. The provider's history and the listings follow the active path.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    selected = models.BooleanField(default=True)
    hidden = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["conversation", "seq", "created_at"]
        indexes = [
            models.Index(fields=["conversation", "seq"], name="message_conv_seq"),
            models.Index(fields=["conversation", "created_at"], name="message_conv_created"),
            models.Index(fields=["status"], name="message_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "seq"], condition=Q(seq__isnull=False), name="message_seq_unique"
            ),
            models.UniqueConstraint(
                fields=["conversation", "client_message_id"],
                condition=Q(client_message_id__isnull=False),
                name="message_client_id_unique",
            ),
            models.CheckConstraint(condition=Q(role__in=MessageRole.values), name="message_role_valid"),
            models.CheckConstraint(condition=Q(type__in=MessageType.values), name="message_type_valid"),
            models.CheckConstraint(condition=Q(status__in=MessageStatus.values), name="message_status_valid"),
            models.CheckConstraint(
                condition=Q(opinion__isnull=True) | Q(opinion__in=Opinion.values),
                name="message_opinion_valid",
            ),
            models.CheckConstraint(
                condition=~Q(role=MessageRole.AGENT) | Q(agent__isnull=False) | Q(status=MessageStatus.ERROR),
                name="message_agent_role_has_agent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.seq}"
