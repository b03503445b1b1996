"""The admin of knowledge bases: the lists render, the re-index action runs the pipeline."""

from __future__ import annotations

import pytest
from django.urls import reverse

from knowledge.models import Chunk, Document
from tests.knowledge.conftest import add_text

pytestmark = pytest.mark.django_db


def test_the_lists_render_and_the_reindex_action_runs(client, staff_user, base):
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
    document.refresh_from_db()
    assert document.status == Document.Status.READY and document.chunk_count == 1
    assert Chunk.objects.filter(document=document).count() == 1
