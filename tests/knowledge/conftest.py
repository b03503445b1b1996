from __future__ import annotations

import pytest

from knowledge import services


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Stored files (documents added as bytes) go to the test's own directory."""
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def base(user):
    return services.base_create(owner=user, name="handbook")


def add_text(base, text: str, *, title: str = "", source: str = "text", metadata=None):
    """A text document of ``base``, run through the whole pipeline."""
    document, _ = services.document_add_text(
        base=base, text=text, title=title, source=source, metadata=metadata or {}
    )
    return services.document_ingest(document)
