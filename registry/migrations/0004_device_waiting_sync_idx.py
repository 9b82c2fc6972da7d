"""The devices waiting to reach Kazoo (pending or failing), oldest change first, from a partial index
of those alone: the dashboard read them with two scans of every device. Built CONCURRENTLY on
PostgreSQL (not in a transaction), so registrations go on while it is built."""

from django.db import migrations, models

from core.indexes import AddIndexConcurrentlyOnPostgres


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
