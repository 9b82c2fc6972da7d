"""The consumers' heartbeats, shared with the web process (dashboard, readiness)."""

from django.db import models


class ConsumerStatus(models.Model):
    """Heartbeat row of one consumer process, for the dashboard and readiness."""

    name = models.CharField(max_length=200, unique=True, help_text="host:pid")
    connected = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    last_message_at = models.DateTimeField(null=True, blank=True)
    messages_total = models.BigIntegerField(default=0)
    messages_per_s = models.FloatField(default=0)
    updated_at = models.DateTimeField()
    # The last heartbeat that said connected: how long the consumers have been down (consumer.down).
    last_connected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Moved from the pusher_site app: the table keeps its name, so no data moves.
        db_table = "pusher_site_consumerstatus"
        ordering = ["-updated_at"]
        verbose_name_plural = "consumer status"

    def __str__(self) -> str:
        return self.name


class ReconcileResult(models.TextChoices):
    OK = "ok", "in step with Kazoo"
    DRIFTED = "drifted", "drifted (queued for sync)"
    MISSING = "missing", "device missing in Kazoo"
    ERROR = "error", "check failed"


class DeviceReconcile(models.Model):
    """The last drift check of one device: Kazoo's device document's `push` against pusher's copy
    (kazoo.reconcile). Kept here so the registry holds no Kazoo words."""

    device = models.OneToOneField(
        "registry.Device", on_delete=models.CASCADE, primary_key=True, related_name="reconcile"
    )
    checked_at = models.DateTimeField(db_index=True)
    result = models.CharField(max_length=16, choices=ReconcileResult.choices)
    detail = models.CharField(max_length=500, blank=True, help_text="What differed, or the error")
    drifted_at = models.DateTimeField(null=True, blank=True, help_text="When drift was last found")
    drift_count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "device reconcile state"

    def __str__(self) -> str:
        return f"{self.device_id}: {self.result}"
