import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="StoredFile",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=255)),
                ("folder", models.CharField(blank=True, default="", max_length=255)),
                ("content_type", models.CharField(max_length=128)),
                ("size", models.BigIntegerField()),
                ("checksum", models.CharField(max_length=64)),
                ("blob", models.FileField(max_length=512, upload_to="files/%Y/%m/")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="files",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
                "indexes": [models.Index(fields=["owner", "folder", "name"], name="files_owner_folder_name")],
                "constraints": [
                    models.UniqueConstraint(fields=("owner", "folder", "checksum"), name="files_one_copy_per_folder")
                ],
            },
        ),
    ]
