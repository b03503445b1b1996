"""Files attached to a person's message (docs/files.md, "Attachments").

A message names stored files of its sender (``files.StoredFile``: by id, or seed 002's object
name ``folder/name``). Their text is read once, when the message is sent (``knowledge.extract``),
cut to ``ATTACHMENT_FILE_CHARS`` per file and ``ATTACHMENT_TOTAL_CHARS`` in all, and stored with
the message (``metadata["attachments"]`` the references, ``metadata["attachments_text"]`` the
block): the history (``runs.history``) appends the block to the message's content every time the
model is asked, so a regenerate or a resumed run sees the same text. An image (no text) is listed
by name only.
"""

from __future__ import annotations

from typing import Any

from core.errors import ValidationFailed
from files.models import StoredFile
from files.selectors import file_get_by_object_name, file_get_for_user
from knowledge.extract import ExtractionError, extract

MAX_ATTACHMENTS = 20
ATTACHMENT_FILE_CHARS = 20_000
ATTACHMENT_TOTAL_CHARS = 60_000


def attachments_resolve(*, user: Any, file_ids: Any = None, object_names: Any = None) -> list[StoredFile]:
    """The user's files named by id or by object name, in order, each once; NotFound for a file
    that is not theirs (it does not exist for them)."""
    found: list[StoredFile] = []
    for value, what in ((file_ids, "attachments"), (object_names, "minio_files")):
        if value is None:
            continue
        if not isinstance(value, list) or len(value) > MAX_ATTACHMENTS:
            raise ValidationFailed(
                f"{what} is a list of at most {MAX_ATTACHMENTS} files.",
                details={what: [f"A list of at most {MAX_ATTACHMENTS}."]},
            )
        for item in value:
            found.append(_one(user, item, by_name=what == "minio_files"))
    unique = list({f.pk: f for f in found}.values())
    if len(unique) > MAX_ATTACHMENTS:
        raise ValidationFailed(f"At most {MAX_ATTACHMENTS} files per message.")
    return unique


def _one(user: Any, item: Any, *, by_name: bool) -> StoredFile:
    if isinstance(item, dict):  # a client's file object: its id, object_name or name
        item = item.get("file_id") or item.get("id") or item.get("object_name") or item.get("name")
    if not isinstance(item, str) or not item:
        raise ValidationFailed("An attachment is a file id or an object name.")
    if by_name:
        return file_get_by_object_name(user=user, object_name=item)
    return file_get_for_user(user=user, file_id=item)


def attachments_metadata(files: list[StoredFile]) -> dict[str, Any]:
    """What the message stores: the references and the text block the model gets."""
    if not files:
        return {}
    refs = [
        {"file_id": str(f.pk), "name": f.name, "content_type": f.content_type, "size": f.size} for f in files
    ]
    parts = []
    left = ATTACHMENT_TOTAL_CHARS
    for file in files:
        text = _text(file)
        if text is None:
            parts.append(f'<attachment name="{file.name}" type="{file.content_type}">(no text)</attachment>')
            continue
        cut = min(len(text), ATTACHMENT_FILE_CHARS, left)
        left -= cut
        note = "" if cut == len(text) else f"\n[... cut: {len(text) - cut} more characters]"
        parts.append(
            f'<attachment name="{file.name}" type="{file.content_type}">\n{text[:cut]}{note}\n</attachment>'
        )
    return {"attachments": refs, "attachments_text": "Attached files:\n" + "\n".join(parts)}


def _text(file: StoredFile) -> str | None:
    try:
        with file.blob.open("rb") as handle:
            data = handle.read()
        return extract(data, filename=file.name, content_type=file.content_type).text
    except (ExtractionError, OSError):
        return None
