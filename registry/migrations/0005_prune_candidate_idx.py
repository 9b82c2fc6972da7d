"""Partial indexes of the retention prune's candidates (registry.retention): devices with no push
object and inactive tokens, few among the live ones, so a prune round reads those instead of every
device and token (0.6 s a round at a million live devices before). Built CONCURRENTLY on
PostgreSQL (not in a transaction), so registrations go on while they are built."""

from django.db import migrations, models

from core.indexes import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("registry", "0004_device_waiting_sync_idx"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="device",
            index=models.Index(condition=models.Q(("push__isnull", True)), fields=["id"], name="device_no_push_idx"),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="pushtoken",
            index=models.Index(condition=models.Q(("active", False)), fields=["id"], name="pushtoken_inactive_idx"),
        ),
    ]
