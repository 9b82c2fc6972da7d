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

    class Meta:
        # Moved from the pusher_site app: the table keeps its name, so no data moves.
        db_table = "pusher_site_consumerstatus"
        ordering = ["-updated_at"]
        verbose_name_plural = "consumer status"

    def __str__(self) -> str:
        return self.name
