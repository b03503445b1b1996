"""The admin of knowledge bases: the lists render; the re-index and retry actions queue ingest
tasks, which run (inline: in a thread of this process, as a sync caller has no server loop)."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.urls import reverse

from knowledge.models import Chunk, Document, IngestTask
from tests.knowledge.conftest import add_text

pytestmark = pytest.mark.django_db(transaction=True)


def _settled(document: Document) -> list[IngestTask]:
    for _ in range(600):
        tasks = list(IngestTask.objects.filter(document=document).order_by("created_at"))
        if tasks and all(t.status in (IngestTask.Status.DONE, IngestTask.Status.FAILED) for t in tasks):
            return tasks
        time.sleep(0.05)
    raise AssertionError("the task never ended")


def test_the_lists_render_and_the_reindex_and_retry_actions_queue_tasks(client, staff_user, base):
    if connection.vendor == "sqlite":
        # the task's thread and the test's in-memory SQLite database lock each other; tasks on a
        # SQLite file: tests/knowledge/test_tasks_live.py (daphne's embedded topology)
        pytest.skip("the admin's tasks run in a thread: not on the in-memory SQLite test database")
    document = add_text(base, "windmills grind grain", title="Mills")
    Chunk.objects.filter(document=document).delete()
    Document.objects.filter(pk=document.pk).update(status=Document.Status.FAILED, chunk_count=0)
    client.force_login(staff_user)
    for name in ("knowledgebase", "document", "chunk", "ingesttask"):
        response = client.get(reverse(f"admin:knowledge_{name}_changelist"))
        assert response.status_code == 200, name
    response = client.post(
        reverse("admin:knowledge_document_changelist"),
        {"action": "reindex", "_selected_action": [str(document.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    [task] = _settled(document)
    assert task.status == IngestTask.Status.DONE and task.attempts == 1
    document.refresh_from_db()
    assert document.status == Document.Status.READY and document.chunk_count == 1
    assert Chunk.objects.filter(document=document).count() == 1
    listed = client.get(reverse("admin:knowledge_ingesttask_changelist"))
    assert b"1/1 (100%)" in listed.content or b"index" in listed.content

    response = client.post(
        reverse("admin:knowledge_ingesttask_changelist"),
        {"action": "retry", "_selected_action": [str(task.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    first, second = _settled(document)
    assert first.pk == task.pk and second.status == IngestTask.Status.DONE
