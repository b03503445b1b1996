"""Per-user quotas on starting runs (SPEC section 12), checked where every run starts.

``message_send`` (every message path: WebSocket ``user_message``/``text``/``query``,
``POST /api/invoke/``, ``POST /api/agents/{id}/run/``, an agent-agent session's opening and a
person's message that resumes one) and the generate-title endpoint call these, so a new front
door that sends through ``message_send`` inherits them.

- :func:`content_admit`: a message's content is at most ``NEXUS_MAX_CONTENT_CHARS`` characters
  (``TooLarge``: 413 / ``message_too_large``).
- :func:`run_rate_admit`: at most ``NEXUS_RUNS_PER_MINUTE_PER_USER`` starts per sliding minute,
  shared by every process (``RateLimited`` with ``retry_after``).
- :func:`active_runs_admit`: at most ``NEXUS_MAX_ACTIVE_RUNS_PER_USER`` runs queued or running in
  the conversations of one owner, checked in the send's transaction (``RateLimited``).

An agent-agent session's automatic turns are not starts: a session runs one turn at a time, so a
running session holds one active run; only its opening and a person's messages to it count.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model

from core.auth import User
from core.errors import RateLimited, TooLarge
from core.ratelimit import get_rate_limiter
from runs.models import Run, RunStatus

# An active-run refusal cannot know when a run will end; a client waits this long and tries again.
ACTIVE_RUNS_RETRY_AFTER = 5.0


def content_admit(content: str, *, field: str = "content") -> None:
    """Refuse content longer than ``NEXUS_MAX_CONTENT_CHARS``."""
    limit = settings.NEXUS_MAX_CONTENT_CHARS
    if len(content) > limit:
        raise TooLarge(
            f"The message is longer than {limit} characters.",
            details={field: [f"At most {limit} characters."]},
        )


async def run_rate_admit(*, user: User) -> None:
    """Count one run start of ``user`` against the per-minute quota, or raise RateLimited."""
    limit = settings.NEXUS_RUNS_PER_MINUTE_PER_USER
    decision = await get_rate_limiter().hit(f"runs:rate:{user.pk}", limit=limit, window=60)
    if not decision.allowed:
        raise RateLimited(
            f"At most {limit} runs per minute; try again in a moment.",
            retry_after=max(decision.retry_after, 0.001),
        )


def active_runs_admit(*, owner_id: int) -> None:
    """Inside the send's transaction, before its run is created: refuse a run past the owner's
    quota of active runs. The owner's row is locked first so that concurrent sends to different
    conversations of one owner are counted one after the other (PostgreSQL; SQLite's writes are
    serialised already)."""
    limit = settings.NEXUS_MAX_ACTIVE_RUNS_PER_USER
    list(get_user_model().objects.select_for_update().filter(pk=owner_id).values_list("pk", flat=True))
    # A run paused for a decision (waiting) costs nothing while it waits: it does not count.
    active = Run.objects.filter(
        conversation__owner_id=owner_id, status__in=(RunStatus.QUEUED, RunStatus.RUNNING)
    ).count()
    if active >= limit:
        raise RateLimited(
            f"At most {limit} replies may be queued or running at once; wait for one to finish.",
            retry_after=ACTIVE_RUNS_RETRY_AFTER,
        )
