"""The message tree: ``Message.parent``, ``selected``, ``hidden`` (regenerate, edit, continue).

Existing conversations are linear: each person's message and reply gets the previous one (in seq
order) as its parent; tool calls and results keep none (they belong to their run's reply)."""

import django.db.models.deletion
from django.db import migrations, models

TURN_ROLES = ("user", "agent", "system")


def link_linear_history(apps, schema_editor):
    Message = apps.get_model("conversations", "Message")
    turns = list(
        Message.objects.filter(type="message", role__in=TURN_ROLES)
        .order_by("conversation_id", "seq", "created_at")
        .values_list("pk", "conversation_id")
    )
    previous: tuple = (None, None)  # (conversation id, message id)
    batch = []
    for pk, conversation_id in turns:
        if previous[0] == conversation_id:
            batch.append(Message(pk=pk, parent_id=previous[1]))
        previous = (conversation_id, pk)
        if len(batch) >= 500:
            Message.objects.bulk_update(batch, ["parent"])
            batch = []
    if batch:
        Message.objects.bulk_update(batch, ["parent"])


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0002_run_moves_to_runs"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="hidden",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="children",
                to="conversations.message",
            ),
        ),
        migrations.AddField(
            model_name="message",
            name="selected",
            field=models.BooleanField(default=True),
        ),
        migrations.RunPython(link_linear_history, migrations.RunPython.noop),
    ]
