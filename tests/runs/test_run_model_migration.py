"""``Run`` moved from conversations/ to runs/ by migration (conversations/0002 and runs/0001, state
only): a database at the old state keeps its runs, their links, and the permissions on them.

Run on whichever database the suite uses (SQLite here; PostgreSQL with ``DATABASE_URL``)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from conversations.models import Conversation
from runs.models import Run, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_MOVE = [("conversations", "0001_initial")]


def _migrate(targets: list[tuple[str, str | None]]) -> None:
    MigrationExecutor(connection).migrate(targets)


def _latest() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def _state_as_applied():
    """The historical models matching the migrations applied to the database right now."""
    loader = MigrationExecutor(connection).loader
    return loader.project_state(list(loader.applied_migrations), at_end=True).apps


def _old_database_with_runs(user) -> dict[str, object]:
    """Migrate back to before the move and write what an old deployment had: runs (one queued,
    one finished with a reply), and the content type and a permission of ``conversations.run``."""
    _migrate(BEFORE_THE_MOVE)
    old = _state_as_applied()
    assert "run" in old.all_models["conversations"]
    assert "run" not in old.all_models["runs"]

    Agent = old.get_model("agents", "Agent")
    OldConversation = old.get_model("conversations", "Conversation")
    OldMessage = old.get_model("conversations", "Message")
    OldRun = old.get_model("conversations", "Run")
    agent = Agent.objects.create(name="Helper", provider="local", model="smollm2")
    conversation = OldConversation.objects.create(owner_id=user.pk, title="before the move")
    question = OldMessage.objects.create(conversation=conversation, role="user", content="hi", seq=1)
    answer = OldMessage.objects.create(
        conversation=conversation, role="agent", agent=agent, content="hello", seq=2
    )
    finished = OldRun.objects.create(
        conversation=conversation,
        agent=agent,
        trigger_message=question,
        reply_message=answer,
        status="completed",
        usage={"output_tokens": 1},
    )
    queued = OldRun.objects.create(conversation=conversation, agent=agent, status="queued")

    # The content type as the old code had it (migrating back relabelled runs.run), and a permission.
    assert not ContentType.objects.filter(app_label="runs", model="run").exists()
    content_type, _ = ContentType.objects.get_or_create(app_label="conversations", model="run")
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename="change_run", defaults={"name": "Can change run"}
    )
    user.user_permissions.add(permission)
    ContentType.objects.clear_cache()
    return {
        "conversation": conversation.pk,
        "finished": finished.pk,
        "queued": queued.pk,
        "question": question.pk,
        "answer": answer.pk,
        "content_type": content_type.pk,
        "permission": permission.pk,
    }


def test_migrating_from_run_in_conversations_keeps_every_run_and_its_links(user):
    old = _old_database_with_runs(user)

    _migrate(_latest())

    assert Run._meta.db_table == "conversations_run"
    finished = Run.objects.select_related("conversation", "trigger_message", "reply_message").get(
        pk=old["finished"]
    )
    assert finished.status == RunStatus.COMPLETED
    assert finished.usage == {"output_tokens": 1}
    assert finished.conversation.title == "before the move"
    assert finished.trigger_message.pk == old["question"]
    assert finished.reply_message.pk == old["answer"]
    assert finished.reply_message.reply_run == finished
    conversation = Conversation.objects.get(pk=old["conversation"])
    assert {run.pk for run in conversation.runs.all()} == {old["finished"], old["queued"]}
    assert Run.objects.get(pk=old["queued"]).is_active

    # The table keeps its constraints: one running run per conversation.
    Run.objects.filter(pk=old["queued"]).update(status=RunStatus.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(conversation=conversation, agent=finished.agent, status=RunStatus.RUNNING)


def test_the_content_type_and_its_permissions_follow_the_model(user):
    old = _old_database_with_runs(user)

    _migrate(_latest())
    ContentType.objects.clear_cache()

    content_type = ContentType.objects.get_for_model(Run)
    assert (content_type.pk, content_type.app_label) == (old["content_type"], "runs")
    assert not ContentType.objects.filter(app_label="conversations", model="run").exists()
    assert Permission.objects.get(pk=old["permission"]).content_type_id == content_type.pk
    user = type(user).objects.get(pk=user.pk)  # a fresh user: permissions are cached per instance
    assert user.has_perm("runs.change_run")


def test_migrating_back_keeps_the_runs_too(user):
    old = _old_database_with_runs(user)
    _migrate(_latest())

    _migrate(BEFORE_THE_MOVE)
    back = _state_as_applied()
    OldRun = back.get_model("conversations", "Run")
    assert set(OldRun.objects.values_list("pk", flat=True)) == {old["finished"], old["queued"]}
    assert ContentType.objects.filter(pk=old["content_type"], app_label="conversations").exists()

    _migrate(_latest())
    assert Run.objects.count() == 2


def test_the_models_and_the_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
