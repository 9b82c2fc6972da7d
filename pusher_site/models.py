"""Process-level state shared between the consumer and the web process."""

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
        ordering = ["-updated_at"]
        verbose_name_plural = "consumer status"

    def __str__(self) -> str:
        return self.name
