from django.db import migrations, models

import agents.avatars


def derive_colours(apps, schema_editor):
    """Existing agents get the colour derived from their id, so they look different at once."""
    Agent = apps.get_model("agents", "Agent")
    for agent in Agent.objects.filter(colour="").only("id"):
        Agent.objects.filter(pk=agent.pk).update(colour=agents.avatars.default_colour(agent.pk))


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="agent",
            name="emoji",
            field=models.CharField(
                blank=True,
                default="🤖",
                help_text="One emoji, or empty.",
                max_length=16,
                validators=[agents.avatars.validate_emoji],
            ),
        ),
        migrations.AddField(
            model_name="agent",
            name="colour",
            field=models.CharField(
                blank=True,
                default="",
                help_text="The avatar's colour, #rrggbb. Empty: one derived from the agent's id.",
                max_length=7,
                validators=[agents.avatars.validate_colour],
            ),
        ),
        migrations.RunPython(derive_colours, migrations.RunPython.noop),
    ]
