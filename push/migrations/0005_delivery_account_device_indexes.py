"""Deliveries by account and by device, newest first, from an index: (account_id, created_at) replaces
account_id's own two indexes (btree and varchar_pattern_ops), (device_id, created_at) is new.

On PostgreSQL the indexes are built and dropped CONCURRENTLY (so not in a transaction): a plain CREATE INDEX
blocks every insert into the delivery log for as long as it takes to read the table, and the push
lane would stall for minutes on a big log."""

from django.db import migrations, models

from core.indexes import AddIndexConcurrentlyOnPostgres, RemoveFieldIndexConcurrentlyOnPostgres


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
        RemoveFieldIndexConcurrentlyOnPostgres(
            model_name="delivery",
            name="account_id",
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
