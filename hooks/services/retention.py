"""Retention of the webhook delivery log and of cleared alerts: `push.services.retention_prune`
ages them out with the push delivery log (PUSHER_DELIVERY_RETENTION_DAYS), in the same bounded
batches. A webhook delivery still pending or failing (being retried) is never deleted, nor an
alert that is up. Deleting a cleared alert changes nothing about when it is raised again: a
cleared alert's key is raised afresh the next time its condition holds, row or no row."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from core.prune import rows_delete_in_batches
from hooks.models import Alert, WebhookDelivery, WebhookDeliveryStatus

_FINAL = (WebhookDeliveryStatus.DELIVERED, WebhookDeliveryStatus.GAVE_UP)


@dataclass(frozen=True)
class HooksPruned:
    webhook_deliveries: int = 0
    alerts: int = 0
    batches: int = 0


def _webhook_deliveries_done(cutoff: datetime) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(created_at__lt=cutoff, status__in=_FINAL)


def _alerts_cleared(cutoff: datetime) -> QuerySet[Alert]:
    return Alert.objects.filter(active=False, cleared_at__lt=cutoff)


def hooks_prune_count(*, cutoff: datetime) -> HooksPruned:
    """What `hooks_prune` would delete now (a dry run)."""
    return HooksPruned(webhook_deliveries=_webhook_deliveries_done(cutoff).count(),
                       alerts=_alerts_cleared(cutoff).count())


def hooks_prune(
    *, cutoff: datetime, batch_size: int, stop: threading.Event | None = None,
    pace: Callable[[float], None] | None = None,
) -> HooksPruned:
    """Delete the delivered or given-up webhook deliveries created before `cutoff`, then the alerts
    cleared before it, at most `batch_size` rows per statement, each batch committed on its own;
    `pace(seconds the batch took)` between two batches. `stop` set: ends after the batch in hand."""
    webhook_deliveries = rows_delete_in_batches(_webhook_deliveries_done(cutoff), order_by="pk",
                                                batch_size=batch_size, stop=stop, pace=pace)
    alerts = rows_delete_in_batches(_alerts_cleared(cutoff), order_by="pk", batch_size=batch_size, stop=stop, pace=pace)
    # Batches that deleted something: with nothing to age out, the prune's line is the delivery log's alone.
    return HooksPruned(webhook_deliveries=sum(webhook_deliveries), alerts=sum(alerts),
                       batches=sum(1 for count in webhook_deliveries + alerts if count))
