# Run moved to runs/ (runs/migrations/0001_initial.py creates it there, on the same table).
# Here it only leaves this app's state: the table conversations_run and its rows stay as they are.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='Run')],
            database_operations=[],
        ),
    ]
