"""Runs: one agent producing one reply (SPEC section 2), owned by the run engine.

The model moved here from conversations/ with its data: its table is still ``conversations_run``.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from conversations.models import Conversation, Message


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    INCOMPLETE = "incomplete"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


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
            # One reply at a time per conversation: others wait (enqueue) or are refused.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status=RunStatus.RUNNING),
                name="run_one_running_per_conversation",
            ),
        ]

    def __str__(self) -> str:
        return f"Run {str(self.id)[:8]} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES
