"""Deliveries by account and by device, newest first, from an index: (account_id, created_at) replaces
account_id's own two indexes (btree and varchar_pattern_ops), (device_id, created_at) is new.

On PostgreSQL the indexes are built CONCURRENTLY (so not in a transaction): a plain CREATE INDEX
blocks every insert into the delivery log for as long as it takes to read the table, and the push
lane would stall for minutes on a big log."""

from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(migrations.AddIndex):
    """AddIndex, CONCURRENTLY on PostgreSQL (inserts go on meanwhile); plain elsewhere (SQLite)."""

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
        ("push", "0004_apns_provider_token"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="delivery",
            index=models.Index(fields=["account_id", "created_at"], name="delivery_account_created_idx"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="delivery",
            index=models.Index(fields=["device_id", "created_at"], name="delivery_device_created_idx"),
        ),
        migrations.AlterField(
            model_name="delivery",
            name="account_id",
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
