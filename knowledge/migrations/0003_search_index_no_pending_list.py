from django.db import migrations


def _no_pending_list(apps, schema_editor):
    """The lexical index of PostgreSQL takes new rows directly (``knowledge.index.schema``)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("ALTER INDEX IF EXISTS knowledge_chunk_search SET (fastupdate = off)")


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0002_default_embedding_model"),
    ]

    operations = [migrations.RunPython(_no_pending_list, migrations.RunPython.noop)]
