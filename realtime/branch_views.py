"""The message tree over REST: regenerate, edit and resend, continue, choose a branch.

The REST twins of the ``regenerate``, ``edit``, ``continue`` and ``select`` frames; async views
(as ``stop`` is) because each starts a run through the run engine (``runs.branching``,
``runs.sending``).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from realtime import protocol
from realtime.http_views import _json_body, _string, authenticated_endpoint
from runs.branching import BranchResult, message_choose, message_continue, message_regenerate
from runs.sending import message_send


def _answer(result: BranchResult, status: int = 202) -> JsonResponse:
    return JsonResponse(
        {
            "action": result.action,
            "message_id": result.message_id,
            "run_id": result.run_id,
            "conversation_id": result.conversation_id,
        },
        status=status,
    )


@require_http_methods(["POST"])
@authenticated_endpoint
async def message_regenerate_view(
    request: HttpRequest, conversation_id: str, message_id: str, *, user: Any
) -> HttpResponse:
    """``POST /api/conversations/{id}/messages/{mid}/regenerate/``: a new reply beside this one."""
    _json_body(request)
    result = await message_regenerate(user=user, conversation_id=conversation_id, message_id=message_id)
    return _answer(result)


@require_http_methods(["POST"])
@authenticated_endpoint
async def message_continue_view(
    request: HttpRequest, conversation_id: str, message_id: str, *, user: Any
) -> HttpResponse:
    """``POST /api/conversations/{id}/messages/{mid}/continue/``: go on with a reply cut by length."""
    _json_body(request)
    result = await message_continue(user=user, conversation_id=conversation_id, message_id=message_id)
    return _answer(result)


@require_http_methods(["POST"])
@authenticated_endpoint
async def message_select_view(
    request: HttpRequest, conversation_id: str, message_id: str, *, user: Any
) -> HttpResponse:
    """``POST /api/conversations/{id}/messages/{mid}/select/``: the active path goes through it."""
    _json_body(request)
    result = await message_choose(user=user, conversation_id=conversation_id, message_id=message_id)
    return _answer(result, status=200)


@require_http_methods(["POST"])
@authenticated_endpoint
async def message_edit_view(
    request: HttpRequest, conversation_id: str, message_id: str, *, user: Any
) -> HttpResponse:
    """``POST /api/conversations/{id}/messages/{mid}/edit/`` ``{content, client_message_id?}``: the
    edited message is stored beside this one and answered."""
    body = _json_body(request)
    content = _string(body, "content")
    client_message_id = _string(body, "client_message_id", required=False, limit=protocol.MAX_ID_CHARS)
    result = await message_send(
        user=user,
        conversation_id=conversation_id,
        content=content or "",
        client_message_id=client_message_id,
        edit_of=message_id,
    )
    return JsonResponse(
        {
            "action": "edit",
            "message_id": result.message_id,
            "edited_id": message_id,
            "run_id": result.run_id,
            "conversation_id": result.conversation_id,
            "client_message_id": result.client_message_id,
            "duplicate": result.duplicate,
        },
        status=202,
    )
