"""Ingestion as tasks (docs/knowledge.md "Tasks"): queue, dispatch, claim, progress, recovery.

``ingest_start(owner, document)`` records an ``IngestTask`` (queued) and dispatches it: inline
mode (``NEXUS_RUN_MODE=inline``) runs it in this process as a process-owned asyncio task (the
pipeline itself in a thread: it is CPU-bound); worker mode sends ``ingest.execute`` on the run
workers' channel (``runs/worker.py`` hands it to ``atask_execute``). Whoever gets it claims it
with one conditional UPDATE (queued -> running), so a task dispatched twice runs once.

Progress goes to the row (``stage``, ``progress_done``, ``progress_total``, ``heartbeat_at``;
throttled) and to the owner's channel group ``knowledge.user.<id>`` (the same throttle: a few
messages a second per task at most, never one per chunk), which ``/ws/knowledge/`` relays.

Recovery (``sweep_stale_tasks``, called by the runs sweeper in every web and worker process): a
running task whose heartbeat is older than ``NEXUS_INGEST_STALE_SECONDS`` lost its process; it is
queued again and dispatched, or failed once it was claimed ``NEXUS_INGEST_MAX_ATTEMPTS`` times.
A queued task whose dispatch was lost is dispatched again. No task stays queued or running.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from core.tasks import process_task
from knowledge.models import Document, IngestTask
from knowledge.services import IngestError, document_ingest

logger = logging.getLogger(__name__)

ACTIVE = (IngestTask.Status.QUEUED, IngestTask.Status.RUNNING)
PROGRESS_INTERVAL = 0.25  # seconds between two progress writes/messages of one task
LOST_DISPATCH_SECONDS = 10.0
STOPPED_MESSAGE = "The process ingesting this document stopped."
# Tasks this process is running, by id (inline mode and workers): the heartbeat loop beats them.
_running: dict[str, asyncio.Task[Any]] = {}


def user_group(user_id: Any) -> str:
    """The channel group of a user's task progress (``/ws/knowledge/`` joins it)."""
    return f"knowledge.user.{user_id}"


def task_frame(task: IngestTask) -> dict[str, Any]:
    """A task as the progress frames and the REST API show it."""
    return {
        "id": str(task.id),
        "status": task.status,
        "stage": task.stage,
        "done": task.progress_done,
        "total": task.progress_total,
        "document": str(task.document_id) if task.document_id else None,
        "base": str(task.base_id),
        "attempts": task.attempts,
        "error": task.error,
        "created_at": task.created_at.isoformat() if task.created_at else None,
        "updated_at": task.updated_at.isoformat() if task.updated_at else None,
    }


def tasks_active_for_user(user: Any) -> list[IngestTask]:
    return list(IngestTask.objects.filter(owner=user, status__in=ACTIVE).order_by("created_at")[:200])


def _close_connections() -> None:
    """The connections of this worker thread, closed: the threads that run a task's steps are a
    pool's, and an idle connection left in one holds a database session for nothing."""
    connections.close_all()


# --- Publishing progress ------------------------------------------------------------------------


async def apublish(task: IngestTask) -> None:
    """One progress message to the owner's group; a layer that is down loses it (the row has it)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(
            user_group(task.owner_id), {"type": "knowledge.progress", "task": task_frame(task)}
        )
    except Exception as exc:
        logger.warning("knowledge: progress of task %s not published (%s)", task.id, exc.__class__.__name__)


def publish(task: IngestTask) -> None:
    try:
        async_to_sync(apublish)(task)
    except Exception as exc:  # no loop to reach (e.g. during interpreter shutdown)
        logger.warning("knowledge: progress of task %s not published (%s)", task.id, exc.__class__.__name__)


# --- Starting -----------------------------------------------------------------------------------


def task_create(owner: Any, document: Document) -> tuple[IngestTask, bool]:
    """A queued task for ``document``, or the task already queued/running for it (False)."""
    with transaction.atomic():
        existing = (
            IngestTask.objects.select_for_update()
            .filter(document=document, status__in=ACTIVE)
            .order_by("-created_at")
            .first()
        )
        if existing is not None:
            return existing, False
        task = IngestTask.objects.create(owner_id=owner.pk, base_id=document.base_id, document=document)
    return task, True


def task_for_document(owner: Any, document: Document, created: bool) -> tuple[IngestTask, bool]:
    """The task for a document just added: a new one if the document is new (or failed, or never
    ingested); for a duplicate, its latest task (dedupe: the same file is not ingested twice)."""
    if not created and document.status != Document.Status.FAILED:
        latest = IngestTask.objects.filter(document=document).order_by("-created_at").first()
        if latest is not None:
            return latest, False
    return task_create(owner, document)


def ingest_start(owner: Any, document: Document, *, created: bool = True) -> IngestTask:
    """Queue ``document``'s ingest and dispatch it (sync code: a view, the admin)."""
    task, new = task_for_document(owner, document, created)
    if new:
        publish(task)
        dispatch_sync(task.id)
    return task


async def aingest_start(owner: Any, document: Document, *, created: bool = True) -> IngestTask:
    """``ingest_start`` from async code."""
    task, new = await sync_to_async(task_for_document)(owner, document, created)
    if new:
        await apublish(task)
        await task_dispatch(task.id)
    return task


def task_retry(task: IngestTask) -> IngestTask:
    """A new queued task over the same document (the admin's retry; the old one stays as it ended)."""
    if task.document_id is None:
        raise IngestError("The task's document was deleted.")
    document = Document.objects.select_related("base").get(pk=task.document_id)
    new, created = task_create(task.owner, document)
    if created:
        publish(new)
        dispatch_sync(new.id)
    return new


async def task_dispatch(task_id: uuid.UUID | str) -> None:
    """Hand a queued task to this process (inline) or to the worker pool."""
    task_id = str(task_id)
    if settings.NEXUS_RUN_MODE == "worker":
        layer = get_channel_layer()
        for attempt in range(4):
            try:
                assert layer is not None
                await layer.send(settings.NEXUS_RUN_CHANNEL, {"type": "ingest.execute", "task_id": task_id})
                return
            except Exception as exc:
                if attempt == 3:  # the sweeper dispatches it again (lost dispatch)
                    logger.warning("ingest task %s not dispatched (%s)", task_id, exc.__class__.__name__)
                else:
                    await asyncio.sleep(0.05 * (attempt + 1))
    else:
        launch(task_id)


def launch(task_id: str) -> None:
    """Run a task in this process, on the running loop, owned by the process."""
    try:
        task_id = str(uuid.UUID(str(task_id)))
    except ValueError:
        logger.warning("ingest task id %r is not a task id; ignored", str(task_id)[:64])
        return
    if task_id in _running:
        return
    task = process_task(atask_execute(task_id, owner_tag()), name=f"ingest-{task_id}")
    _running[task_id] = task
    task.add_done_callback(lambda _t: _running.pop(task_id, None))


def dispatch_sync(task_id: uuid.UUID | str) -> None:
    """``task_dispatch`` from sync code. Under an ASGI server a sync view runs in a thread whose
    event loop is the server's: the task goes there. Elsewhere (a management command, a sync test
    client) there is no loop that outlives the call, and inline the task runs in a thread."""
    main_loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if settings.NEXUS_RUN_MODE == "worker" or (main_loop is not None and main_loop.is_running()):
        async_to_sync(task_dispatch)(task_id)
        return
    threading.Thread(target=_thread_execute, args=(str(task_id),), daemon=True).start()


def _thread_execute(task_id: str) -> None:
    try:
        asyncio.run(atask_execute(task_id, owner_tag()))
    finally:
        _close_connections()


def owner_tag() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


# --- Executing ----------------------------------------------------------------------------------


def task_claim(task_id: str, owner: str) -> IngestTask | None:
    """Queued -> running, at most once (one conditional UPDATE); the task, or None if not taken."""
    now = timezone.now()
    taken = IngestTask.objects.filter(pk=task_id, status=IngestTask.Status.QUEUED).update(
        status=IngestTask.Status.RUNNING,
        claimed_by=owner[:200],
        heartbeat_at=now,
        attempts=F("attempts") + 1,
        stage="",
        progress_done=0,
        progress_total=0,
        error="",
        updated_at=now,
    )
    if not taken:
        return None
    return IngestTask.objects.select_related("document", "document__base", "document__stored_file").get(
        pk=task_id
    )


class _Progress:
    """The pipeline's ``progress(stage, done, total)``: writes the row and publishes, throttled."""

    def __init__(self, task: IngestTask) -> None:
        self.task = task
        self.last = 0.0
        self.delay = float(getattr(settings, "NEXUS_INGEST_TEST_BATCH_DELAY", 0.0))

    def __call__(self, stage: str, done: int, total: int) -> None:
        changed = stage != self.task.stage
        self.task.stage, self.task.progress_done, self.task.progress_total = stage, done, total
        now = time.monotonic()
        if changed or now - self.last >= PROGRESS_INTERVAL or done >= total:
            self.last = now
            self.flush()
        if self.delay and stage == "embed":  # TEST ONLY (NEXUS_INGEST_TEST_BATCH_DELAY)
            time.sleep(self.delay)

    def flush(self) -> None:
        task = self.task
        task.heartbeat_at = task.updated_at = timezone.now()
        IngestTask.objects.filter(pk=task.pk, status=IngestTask.Status.RUNNING).update(
            stage=task.stage,
            progress_done=task.progress_done,
            progress_total=task.progress_total,
            heartbeat_at=task.heartbeat_at,
            updated_at=task.updated_at,
        )
        publish(task)


def _finish(task: IngestTask, status: str, error: str = "", results: dict[str, Any] | None = None) -> None:
    now = timezone.now()
    task.status, task.error, task.updated_at = status, error, now
    fields: dict[str, Any] = {"status": status, "error": error, "updated_at": now}
    if results is not None:
        task.results = fields["results"] = results
    IngestTask.objects.filter(pk=task.pk, status=IngestTask.Status.RUNNING).update(**fields)


def _pipeline(task: IngestTask) -> None:
    """The pipeline over the task's document, and the task's end (sync: run in a thread)."""
    try:
        document = task.document
        if document is None:
            _finish(task, IngestTask.Status.FAILED, "The document was deleted.")
            return
        progress = _Progress(task)
        try:
            document_ingest(document, progress=progress)
        except IngestError as exc:
            if exc.retryable and task.attempts < settings.NEXUS_INGEST_MAX_ATTEMPTS:
                now = timezone.now()
                IngestTask.objects.filter(pk=task.pk, status=IngestTask.Status.RUNNING).update(
                    status=IngestTask.Status.QUEUED, claimed_by="", error=exc.message, updated_at=now
                )
                task.status, task.error = IngestTask.Status.QUEUED, exc.message
                task.requeued = True  # type: ignore[attr-defined]
            else:
                _finish(task, IngestTask.Status.FAILED, exc.message)
            return
        _finish(
            task,
            IngestTask.Status.DONE,
            results={"document": str(document.pk), "chunks": document.chunk_count, "title": document.title},
        )
    finally:
        publish(task)
        _close_connections()


async def atask_execute(task_id: str, owner: str) -> None:
    """Claim a task and run it; a heartbeat keeps its row fresh meanwhile. Not claimed (another
    process has it, or it ended): nothing happens."""
    task = await sync_to_async(_claim_closing, thread_sensitive=False)(str(task_id), owner)
    if task is None:
        return
    await apublish(task)
    beat = asyncio.get_running_loop().create_task(_heartbeat(str(task.pk)))
    try:
        # sync_to_async, not to_thread: the thread reaches this loop back (publish, the embedder)
        await sync_to_async(_pipeline, thread_sensitive=False)(task)
    finally:
        beat.cancel()
    if getattr(task, "requeued", False):  # a retryable failure: again, after a pause
        await asyncio.sleep(min(10.0, 0.5 * 2**task.attempts))
        await task_dispatch(task.pk)


def _claim_closing(task_id: str, owner: str) -> IngestTask | None:
    try:
        return task_claim(task_id, owner)
    finally:
        _close_connections()


def task_execute(task_id: str, owner_tag: str) -> None:
    """Claim and run a task here, synchronously (tests, management commands)."""
    async_to_sync(atask_execute)(task_id, owner_tag)


def _beat(task_id: str) -> None:
    try:
        IngestTask.objects.filter(pk=task_id, status=IngestTask.Status.RUNNING).update(
            heartbeat_at=timezone.now()
        )
    finally:
        _close_connections()


async def _heartbeat(task_id: str) -> None:
    interval = min(settings.NEXUS_RUN_HEARTBEAT_SECONDS, settings.NEXUS_INGEST_STALE_SECONDS / 3)
    while True:
        await asyncio.sleep(interval)
        try:
            await sync_to_async(_beat, thread_sensitive=False)(task_id)
        except Exception:
            logger.exception("ingest heartbeat failed")


# --- Recovery -----------------------------------------------------------------------------------


def _recover() -> tuple[list[str], list[IngestTask]]:
    """Stale running tasks queued again or failed; lost queued ones. (ids to dispatch, ended)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.NEXUS_INGEST_STALE_SECONDS)
    dispatch: list[str] = []
    ended: list[IngestTask] = []
    for task in IngestTask.objects.filter(status=IngestTask.Status.RUNNING, heartbeat_at__lt=stale)[:100]:
        if task.attempts >= settings.NEXUS_INGEST_MAX_ATTEMPTS:
            if IngestTask.objects.filter(
                pk=task.pk, status=IngestTask.Status.RUNNING, heartbeat_at__lt=stale
            ).update(status=IngestTask.Status.FAILED, error=STOPPED_MESSAGE, updated_at=now):
                Document.objects.filter(id=str(task.document_id), status=Document.Status.PROCESSING).update(
                    status=Document.Status.FAILED, error=STOPPED_MESSAGE
                )
                task.status, task.error = IngestTask.Status.FAILED, STOPPED_MESSAGE
                ended.append(task)
        elif IngestTask.objects.filter(
            pk=task.pk, status=IngestTask.Status.RUNNING, heartbeat_at__lt=stale
        ).update(status=IngestTask.Status.QUEUED, claimed_by="", updated_at=now):
            task.status = IngestTask.Status.QUEUED
            ended.append(task)
            dispatch.append(str(task.pk))
    lost = now - timedelta(seconds=max(LOST_DISPATCH_SECONDS, settings.NEXUS_INGEST_STALE_SECONDS))
    queued = IngestTask.objects.filter(Q(status=IngestTask.Status.QUEUED), updated_at__lt=lost)
    for task_id in queued.values_list("pk", flat=True)[:100]:
        if str(task_id) not in dispatch:
            dispatch.append(str(task_id))
    return dispatch, ended


async def sweep_stale_tasks() -> int:
    """Recover tasks whose process died and dispatches that were lost; how many were recovered."""
    dispatch, ended = await sync_to_async(_recover_closing, thread_sensitive=False)()
    for task in ended:
        await apublish(task)
    for task_id in dispatch:
        if task_id not in _running:
            await task_dispatch(task_id)
    return len(ended)


def _recover_closing() -> tuple[list[str], list[IngestTask]]:
    try:
        return _recover()
    finally:
        _close_connections()
