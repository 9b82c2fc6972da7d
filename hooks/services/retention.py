"""Retention of the webhook delivery log and of cleared alerts: `push.services.retention_prune`
ages them out with the push delivery log (PUSHER_DELIVERY_RETENTION_DAYS), in the same bounded
batches. A webhook delivery still pending or failing (being retried) is never deleted, nor an
alert that is up. Deleting a cleared alert changes nothing about when it is raised again: a
cleared alert's key is raised afresh the next time its condition holds, row or no row."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from django.db import connection, transaction
from django.db.models import Model, QuerySet

from hooks.models import Alert, WebhookDelivery, WebhookDeliveryStatus

M = TypeVar("M", bound=Model)
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
    webhook_deliveries, wd_batches = _prune(_webhook_deliveries_done(cutoff), batch_size, stop, pace)
    alerts, alert_batches = _prune(_alerts_cleared(cutoff), batch_size, stop, pace)
    return HooksPruned(webhook_deliveries=webhook_deliveries, alerts=alerts, batches=wd_batches + alert_batches)


def _prune(
    rows: QuerySet[M], batch_size: int, stop: threading.Event | None, pace: Callable[[float], None] | None,
) -> tuple[int, int]:
    """(rows deleted, statements that deleted some)."""
    deleted = batches = 0
    while not (stop and stop.is_set()):
        started = time.monotonic()
        batch = rows.order_by("pk").values("pk")[:batch_size]
        if connection.vendor == "postgresql":
            batch = batch.select_for_update(skip_locked=True)  # the lock re-reads the row: one retried meanwhile stays
        with transaction.atomic():
            count, _ = rows.model._default_manager.filter(pk__in=batch).delete()
        deleted += count
        batches += 1 if count else 0
        if count < batch_size:
            break
        if pace:
            pace(time.monotonic() - started)
    return deleted, batches
