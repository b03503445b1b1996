# Run moves here from conversations/ with its rows: the model keeps its table (conversations_run),
# its indexes and its constraints, so this migration changes the project's state only. The
# content type follows the model, so the permissions and admin history attached to it stay.

import uuid

import django.db.models.deletion
from django.db import migrations, models


def content_type_to_runs(apps, schema_editor):
    _content_type_move(apps, schema_editor, source='conversations', target='runs')


def content_type_to_conversations(apps, schema_editor):
    _content_type_move(apps, schema_editor, source='runs', target='conversations')


def _content_type_move(apps, schema_editor, *, source, target):
    ContentType = apps.get_model('contenttypes', 'ContentType')
    db = schema_editor.connection.alias
    if ContentType.objects.using(db).filter(app_label=target, model='run').exists():
        return  # created already (post_migrate ran between the two migrations): keep both
    ContentType.objects.using(db).filter(app_label=source, model='run').update(app_label=target)


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('agents', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('conversations', '0002_run_moves_to_runs'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Run',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('completed', 'Completed'), ('stopped', 'Stopped'), ('failed', 'Failed'), ('incomplete', 'Incomplete')], default='queued', max_length=16)),
                        ('owner', models.CharField(blank=True, default='', help_text='Process or channel executing it.', max_length=200)),
                        ('cancel_requested', models.BooleanField(default=False)),
                        ('heartbeat_at', models.DateTimeField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('usage', models.JSONField(blank=True, default=dict)),
                        ('error', models.JSONField(blank=True, default=dict)),
                        ('agent', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='runs', to='agents.agent')),
                        ('conversation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='runs', to='conversations.conversation')),
                        ('reply_message', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='reply_run', to='conversations.message')),
                        ('trigger_message', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='triggered_runs', to='conversations.message')),
                    ],
                    options={
                        'db_table': 'conversations_run',
                        'ordering': ['-created_at'],
                        'indexes': [
                            models.Index(fields=['status', 'heartbeat_at'], name='run_status_heartbeat'),
                            models.Index(fields=['conversation', 'status'], name='run_conversation_status'),
                        ],
                        'constraints': [
                            models.CheckConstraint(condition=models.Q(('status__in', ['queued', 'running', 'completed', 'stopped', 'failed', 'incomplete'])), name='run_status_valid'),
                            models.UniqueConstraint(condition=models.Q(('status', 'running')), fields=('conversation',), name='run_one_running_per_conversation'),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to_runs, content_type_to_conversations),
    ]
