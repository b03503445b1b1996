"""Runs: one agent producing one reply (SPEC section 2), owned by the run engine.

The model moved here from conversations/ with its data: its table is still ``conversations_run``.
"""

from __future__ import annotations

import uuid

from django.conf import settings as django_settings
from django.db import models
from django.db.models import Q

from conversations.models import Conversation, Message


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    # Paused at a tool call that waits for a person (an approval) or a client (a client tool):
    # stored, owned by no process (runs.approvals); a decision queues it again.
    WAITING = "waiting"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    INCOMPLETE = "incomplete"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)
# The statuses that hold a conversation: one such run per conversation at a time.
HOLDING_RUN_STATUSES = (RunStatus.RUNNING, RunStatus.WAITING)


class Run(models.Model):
    """One agent producing one reply. Owned by the run executor, never by a socket."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="runs")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="runs")
    trigger_message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="triggered_runs"
    )
    reply_message = models.OneToOneField(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="reply_run"
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    owner = models.CharField(
        max_length=200, blank=True, default="", help_text="Process or channel executing it."
    )
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    error = models.JSONField(default=dict, blank=True)
    # A waiting run's place: the round it paused in and the calls of that round still to run
    # (runs.approvals.Pause); empty for a run that never paused.
    paused = models.JSONField(default=dict, blank=True)

    class Meta:
        # The table keeps the name it had when Run lived in conversations/ (migration
        # runs/0001_initial moved the model without touching its rows).
        db_table = "conversations_run"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat"),
            models.Index(fields=["conversation", "status"], name="run_conversation_status"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RunStatus.values), name="run_status_valid"),
            # One reply at a time per conversation (running, or paused waiting for a decision):
            # others wait (enqueue) or are refused.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status__in=HOLDING_RUN_STATUSES),
                name="run_one_running_per_conversation",
            ),
        ]

    def __str__(self) -> str:
        return f"Run {str(self.id)[:8]} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES


class PendingStatus(models.TextChoices):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    TIMED_OUT = "timed_out"
    ANSWERED = "answered"  # a client tool's answer came
    CANCELLED = "cancelled"  # its run was stopped or deleted first


class PendingKind(models.TextChoices):
    APPROVAL = "approval"  # a server tool waiting for a person's approve/deny
    CLIENT = "client"  # a client tool waiting for its client's tool_result


class PendingToolCall(models.Model):
    """A tool call a paused run waits on: stored, so the pause outlives every process. The first
    decision wins (a conditional update from ``pending``); see runs.approvals."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="pending_calls")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    tool_call_id = models.CharField(max_length=200)
    tool = models.CharField(max_length=200)
    parameters = models.JSONField(default=dict, blank=True)
    agent_id = models.CharField(max_length=64, blank=True, default="")
    kind = models.CharField(max_length=16, choices=PendingKind.choices)
    status = models.CharField(max_length=16, choices=PendingStatus.choices, default=PendingStatus.PENDING)
    decided_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["status", "expires_at"], name="pending_status_expiry")]
        constraints = [
            models.UniqueConstraint(fields=["run", "tool_call_id"], name="pending_one_per_call"),
            models.CheckConstraint(condition=Q(status__in=PendingStatus.values), name="pending_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.tool} ({self.status})"
