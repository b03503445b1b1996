"""An agent's knowledge: which bases it may search for whom, and what a passage found becomes.

The scope of a search is the agent's ``knowledge_bases`` that the conversation's user may read
(``knowledge.selectors.bases_readable``): a shared agent listing someone's base never searches it
for anyone else. A passage found becomes a *source* (``source_of``), the shape stored in a
reply's ``metadata["sources"]`` and shown under it (docs/knowledge.md, "Agents and sources").
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import get_user_model

from agents.models import Agent, KnowledgeMode
from core.errors import ValidationFailed
from knowledge.models import KnowledgeBase
from knowledge.search import Hit
from knowledge.selectors import bases_readable

MAX_AGENT_BASES = 20
# A source keeps this much of its passage (the model saw the whole chunk).
SOURCE_TEXT_CHARS = 4000


def knowledge_scope(agent: Agent, user_id: int | None) -> list[KnowledgeBase]:
    """The bases ``agent`` searches for the user ``user_id``: its bases that user may read."""
    wanted = _ids(agent.knowledge_bases)
    if not wanted or user_id is None or agent.knowledge_mode == KnowledgeMode.OFF:
        return []
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return []
    return list(bases_readable(user).filter(id__in=wanted).order_by("name"))


def _ids(values: Any) -> list[uuid.UUID]:
    ids = []
    for value in values or []:
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return ids


def knowledge_bases_validate(value: Any, *, owner: Any, current: Any = ()) -> list[str]:
    """Check an agent's ``knowledge_bases``: a list of base ids its owner may read (a shared agent,
    owner None: bases that exist). Ids it already lists whose base is gone are dropped quietly."""
    if not isinstance(value, list) or len(value) > MAX_AGENT_BASES:
        raise ValidationFailed(
            "knowledge_bases must be a list of base ids.",
            details={"knowledge_bases": [f"A list of at most {MAX_AGENT_BASES} knowledge base ids."]},
        )
    ids: list[uuid.UUID] = []
    for item in value:
        try:
            ids.append(uuid.UUID(str(item)))
        except ValueError:
            raise ValidationFailed(
                "knowledge_bases must be a list of base ids.",
                details={"knowledge_bases": [f"{str(item)[:60]!r} is not a knowledge base id."]},
            ) from None
    ids = list(dict.fromkeys(ids))
    readable = KnowledgeBase.objects.all() if owner is None else bases_readable(owner)
    found = set(readable.filter(id__in=ids).values_list("id", flat=True))
    kept = {str(i) for i in _ids(current)}
    missing = [i for i in ids if i not in found and str(i) not in kept]
    if missing:
        raise ValidationFailed(
            "Unknown knowledge base.",
            details={"knowledge_bases": [f"Knowledge base {missing[0]} not found."]},
        )
    return [str(i) for i in ids if i in found]


def source_of(hit: Hit) -> dict[str, Any]:
    """A passage found, as a reply's source."""
    metadata = hit.metadata or {}
    return {
        "chunk_id": hit.chunk_id,
        "title": str(hit.document_title or metadata.get("title") or hit.title or hit.filename or hit.source)[
            :300
        ],
        "text": hit.text[:SOURCE_TEXT_CHARS],
        "source_type": hit.source_type,
        "url": hit.source if hit.source_type == "url" else "",
        "filename": hit.filename,
        "published_date": str(metadata.get("date") or metadata.get("creation_date") or "") or None,
        "score": round(float(hit.score), 6),
        "score_details": {key: round(float(value), 6) for key, value in (hit.score_details or {}).items()},
        "document_id": str(hit.document_id),
        "base": hit.base,
        "section": hit.title,
    }


def knowledge_bases_readable(value: Any, *, owner: Any) -> tuple[list[str], int]:
    """Of ``value`` (imported base ids), those ``owner`` may read, and how many were left out:
    a configuration imported from elsewhere names bases this user may not have."""
    ids = _ids(value if isinstance(value, list) else [])[:MAX_AGENT_BASES]
    found = set(bases_readable(owner).filter(id__in=ids).values_list("id", flat=True))
    kept = [str(i) for i in dict.fromkeys(ids) if i in found]
    return kept, len(value if isinstance(value, list) else []) - len(kept)
