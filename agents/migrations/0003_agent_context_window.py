# Agent.context_window (issue 15, "Context that fits"). Hand-written; renumber freely on merge.

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0002_avatar_colour"),
    ]

    operations = [
        migrations.AddField(
            model_name="agent",
            name="context_window",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Tokens the model reads at once (prompt and reply). Empty: the provider's default "
                "(local: the loaded context; see docs/providers.md).",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(256),
                    django.core.validators.MaxValueValidator(10000000),
                ],
            ),
        ),
    ]
