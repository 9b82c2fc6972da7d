"""The devices waiting to reach Kazoo (pending or failing), oldest change first, from a partial index
of those alone: the dashboard read them with two scans of every device. Built CONCURRENTLY on
PostgreSQL (not in a transaction), so registrations go on while it is built."""

from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """AddIndex, CONCURRENTLY on PostgreSQL (writes go on meanwhile); plain elsewhere (SQLite)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("registry", "0003_token_reporter"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="device",
            index=models.Index(
                condition=models.Q(("sync_status__in", ["pending", "failed"])),
                fields=["push_changed_at", "id"],
                name="device_waiting_sync_idx",
            ),
        ),
    ]
