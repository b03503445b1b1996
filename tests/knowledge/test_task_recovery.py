"""Recovery of ingest tasks whose process died (knowledge.tasks._recover, called by the runs
sweeper): a stale running task is queued again, or failed after NEXUS_INGEST_MAX_ATTEMPTS claims;
a queued task whose dispatch was lost is dispatched again; the claim takes a task once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from knowledge import services, tasks
from knowledge.models import Document, IngestTask

pytestmark = pytest.mark.django_db


def _task(base, text: str, **fields) -> IngestTask:
    document, _ = services.document_add_text(base=base, text=text)
    task, created = tasks.task_create(base.owner, document)
    assert created
    IngestTask.objects.filter(pk=task.pk).update(**fields)
    task.refresh_from_db()
    return task


def test_stale_tasks_are_requeued_then_failed_and_lost_dispatches_found(base, settings):
    settings.NEXUS_INGEST_STALE_SECONDS = 5
    settings.NEXUS_INGEST_MAX_ATTEMPTS = 3
    old = timezone.now() - timedelta(seconds=60)
    retried = _task(base, "first", status="running", attempts=1, heartbeat_at=old, claimed_by="dead:1")
    spent = _task(base, "second", status="running", attempts=3, heartbeat_at=old, claimed_by="dead:1")
    Document.objects.filter(pk=spent.document_id).update(status=Document.Status.PROCESSING)
    alive = _task(
        base, "third", status="running", attempts=1, heartbeat_at=timezone.now(), claimed_by="live:2"
    )
    lost = _task(base, "fourth")
    IngestTask.objects.filter(pk=lost.pk).update(updated_at=old)
    fresh = _task(base, "fifth")

    dispatch, ended = tasks._recover()

    assert set(dispatch) == {str(retried.pk), str(lost.pk)}
    assert {t.pk for t in ended} == {retried.pk, spent.pk}
    retried.refresh_from_db()
    assert retried.status == "queued" and retried.claimed_by == "" and retried.attempts == 1
    spent.refresh_from_db()
    assert spent.status == "failed" and spent.error == tasks.STOPPED_MESSAGE
    assert Document.objects.get(pk=spent.document_id).status == Document.Status.FAILED
    alive.refresh_from_db()
    assert alive.status == "running"
    assert str(fresh.pk) not in dispatch

    # the claim: once, and it counts the attempt
    claimed = tasks.task_claim(str(retried.pk), "me:3")
    assert claimed is not None and claimed.status == "running" and claimed.attempts == 2
    assert tasks.task_claim(str(retried.pk), "other:4") is None


def test_a_duplicate_document_gets_its_task_not_a_new_one(base):
    document, created = services.document_add_text(base=base, text="once")
    first, new = tasks.task_for_document(base.owner, document, created)
    assert new
    again, _ = services.document_add_text(base=base, text="once")
    second, new = tasks.task_for_document(base.owner, again, False)
    assert not new and second.pk == first.pk
    Document.objects.filter(pk=document.pk).update(status=Document.Status.FAILED)
    IngestTask.objects.filter(pk=first.pk).update(status="failed")
    document.refresh_from_db()
    third, new = tasks.task_for_document(base.owner, document, False)
    assert new and third.pk != first.pk
