"""Reads of the consumers' state (their heartbeat rows)."""

from datetime import datetime, timedelta

from django.db.models import QuerySet

from kazoo.models import ConsumerStatus

CONSUMER_FRESH = timedelta(seconds=30)


def consumers_alive(*, now: datetime) -> QuerySet[ConsumerStatus]:
    """Consumer processes whose heartbeat (every 5 s) is recent."""
    return ConsumerStatus.objects.filter(updated_at__gte=now - CONSUMER_FRESH).order_by("name")
