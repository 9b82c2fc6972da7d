"""Retention: the delivery log (and dead devices and tokens) aged out in bounded batches.

At 1,000 pushes/s the delivery log gains 86 million rows a day. `retention_prune` deletes the
deliveries created more than PUSHER_DELIVERY_RETENTION_DAYS ago that are finished, oldest first,
`batch_size` rows per DELETE, each its own short transaction, so it runs beside the consumer: a
queued row is never deleted (the push lane's claim and lease live on it; one that old is an
orphan, counted and left for an operator), the rows it deletes are ones nothing writes any more,
and it rests between batches. On PostgreSQL one prune runs at a time (an advisory lock; every
consumer process runs the loop) and a batch's rows are locked with SKIP LOCKED. Dead devices and
tokens go after PUSHER_DEVICE_RETENTION_DAYS (registry.retention says which); the webhook
delivery log and cleared alerts with the delivery log (hooks.services.retention). 0 days keeps
everything.

One path: `manage.py prune` and the consumer's loop (kazoo.retention) call `retention_prune`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from core.errors import InvalidInput, PusherError
from core.prune import rows_delete_in_batches
from hooks.services.retention import HooksPruned, hooks_prune, hooks_prune_count
from push.models import Delivery, DeliveryStatus
from registry.retention import RegistryPruned, registry_prune, registry_prune_count

log = logging.getLogger(__name__)

# Rows per DELETE: big enough that a prune of a day at 1,000 pushes/s is a few hundred statements,
# small enough that each is a short transaction (tens of milliseconds) holding few row locks.
PRUNE_BATCH_DEFAULT = 5000
PRUNE_BATCH_MAX = 100_000
# Seconds of rest after each batch per second the batch took: 1 halves the prune's share of the
# database. bench.retention measured the push lane's outcome writes beside a prune at full speed:
# their median per batch 18 -> 27 ms, and stalls up to 0.8 s (the WAL a DELETE of 40,000 rows/s
# writes delays their commits); the log grows by 1,000 rows/s at most, a fraction of either speed.
PRUNE_REST_DEFAULT = 1.0
PRUNE_REST_MAX = 100.0
# PostgreSQL advisory lock held while a prune runs: one at a time across processes (every consumer
# process runs the loop, and `manage.py prune` may run beside them), so the rest between batches
# bounds the load whatever the number of consumers.
PRUNE_LOCK_KEY = 0x70757368_7072756E  # "pushprun"


class PruneRunning(PusherError):
    code = "prune_running"


@contextmanager
def _one_prune_at_a_time() -> Iterator[None]:
    """The advisory lock on PostgreSQL (PruneRunning if another session holds it); nothing elsewhere
    (SQLite lets one writer in at a time anyway)."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [PRUNE_LOCK_KEY])
        (locked,) = cursor.fetchone()
    if not locked:
        raise PruneRunning("another prune is running (a consumer's, or a manage.py prune): this one is skipped")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_LOCK_KEY])


RETENTION_DAYS_MAX = 36500


@dataclass(frozen=True)
class PruneSummary:
    dry_run: bool
    deliveries_days: int
    devices_days: int
    deliveries: int = 0  # deleted (in a dry run: that would be)
    deliveries_queued_kept: int = 0  # older than the cutoff but still queued: never deleted
    tokens: int = 0
    devices: int = 0
    webhook_deliveries: int = 0  # delivered or given up, older than the deliveries' cutoff
    alerts: int = 0  # cleared before the deliveries' cutoff
    batches: int = 0
    seconds: float = 0.0
    stopped: bool = False  # asked to stop before the end

    def as_line(self) -> str:
        done = []
        if self.deliveries_days:
            kept = f" (kept {self.deliveries_queued_kept} still queued)" if self.deliveries_queued_kept else ""
            done.append(f"{self.deliveries} deliveries older than {self.deliveries_days} days{kept}")
            if self.webhook_deliveries or self.alerts:
                done.append(f"{self.webhook_deliveries} webhook deliveries and {self.alerts} cleared alerts "
                            f"older than {self.deliveries_days} days")
        if self.devices_days:
            done.append(f"{self.devices} devices and {self.tokens} tokens dead for {self.devices_days} days")
        if not done:
            return "prune: nothing to do: deliveries, devices and tokens kept forever (retention 0)"
        line = ("prune: would delete " if self.dry_run else "prune: deleted ") + "; ".join(done)
        if not self.dry_run:
            line += f" in {self.batches} batch{'' if self.batches == 1 else 'es'}, {self.seconds:.1f} s"
        if self.stopped:
            line += ", stopped early"
        if not self.deliveries_days:
            line += "; deliveries kept forever (retention 0)"
        if not self.devices_days:
            line += "; devices and tokens kept forever (retention 0)"
        return line


def _days_check(name: str, days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= RETENTION_DAYS_MAX:
        raise InvalidInput(f"{name} must be a whole number of days from 0 (keep forever) to {RETENTION_DAYS_MAX}, "
                           f"not {days!r}")
    return days


def _finished_before(cutoff: datetime) -> QuerySet[Delivery]:
    return Delivery.objects.filter(created_at__lt=cutoff).exclude(status=DeliveryStatus.QUEUED)


def deliveries_prune(
    *, cutoff: datetime, batch_size: int, stop: threading.Event | None = None,
    pace: Callable[[float], None] | None = None,
) -> tuple[int, int]:
    """Delete the finished deliveries created before `cutoff`, oldest first, at most `batch_size`
    per statement, each its own transaction; `pace(seconds the batch took)` between two batches.
    Returns (deleted, batches)."""
    counts = rows_delete_in_batches(_finished_before(cutoff), order_by="created_at", batch_size=batch_size,
                                    stop=stop, pace=pace)
    return sum(counts), len(counts)


def _pace(rest: float, stop: threading.Event | None) -> Callable[[float], None] | None:
    """Rest `rest` seconds per second of work between two batches (woken by `stop`)."""
    if not rest:
        return None

    def pause(seconds: float) -> None:
        if stop is not None:
            stop.wait(seconds * rest)
        else:
            time.sleep(seconds * rest)

    return pause


def retention_prune(
    *, deliveries_days: int | None = None, devices_days: int | None = None, batch_size: int = PRUNE_BATCH_DEFAULT,
    rest: float = PRUNE_REST_DEFAULT, dry_run: bool = False, now: datetime | None = None,
    stop: threading.Event | None = None,
) -> PruneSummary:
    """Age out the delivery log and dead devices and tokens. `deliveries_days` and `devices_days`
    default to PUSHER_DELIVERY_RETENTION_DAYS and PUSHER_DEVICE_RETENTION_DAYS (0: keep forever).
    Between two batches it rests `rest` seconds per second the batch took (0: none). `dry_run`
    counts what would go and deletes nothing. Raises InvalidInput for a bad number, PruneRunning
    when another prune (not a dry run) runs (on PostgreSQL)."""
    deliveries_days = _days_check(
        "deliveries days", settings.PUSHER_DELIVERY_RETENTION_DAYS if deliveries_days is None else deliveries_days
    )
    devices_days = _days_check(
        "devices days", settings.PUSHER_DEVICE_RETENTION_DAYS if devices_days is None else devices_days
    )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= PRUNE_BATCH_MAX:
        raise InvalidInput(f"batch size must be a whole number from 1 to {PRUNE_BATCH_MAX}, not {batch_size!r}")
    if isinstance(rest, bool) or not isinstance(rest, int | float) or not 0 <= rest <= PRUNE_REST_MAX:
        raise InvalidInput(f"rest must be a number of seconds per second of work from 0 to {PRUNE_REST_MAX:g}, "
                           f"not {rest!r}")
    pace = _pace(float(rest), stop)
    now = now or timezone.now()
    started = time.monotonic()
    deliveries = queued_kept = batches = 0
    registry = RegistryPruned()
    hooks = HooksPruned()
    deleting = not dry_run and bool(deliveries_days or devices_days)
    with _one_prune_at_a_time() if deleting else nullcontext():
        if deliveries_days:
            cutoff = now - timedelta(days=deliveries_days)
            queued_kept = Delivery.objects.filter(created_at__lt=cutoff, status=DeliveryStatus.QUEUED).count()
            if dry_run:
                deliveries = _finished_before(cutoff).count()
                hooks = hooks_prune_count(cutoff=cutoff)
            else:
                deliveries, batches = deliveries_prune(cutoff=cutoff, batch_size=batch_size, stop=stop, pace=pace)
                hooks = hooks_prune(cutoff=cutoff, batch_size=batch_size, stop=stop, pace=pace)
        if devices_days:
            cutoff = now - timedelta(days=devices_days)
            if dry_run:
                registry = registry_prune_count(cutoff=cutoff)
            else:
                registry = registry_prune(cutoff=cutoff, batch_size=batch_size, stop=stop, pace=pace)
    summary = PruneSummary(
        dry_run=dry_run, deliveries_days=deliveries_days, devices_days=devices_days, deliveries=deliveries,
        deliveries_queued_kept=queued_kept, tokens=registry.tokens, devices=registry.devices,
        webhook_deliveries=hooks.webhook_deliveries, alerts=hooks.alerts,
        batches=batches + registry.batches + hooks.batches, seconds=time.monotonic() - started,
        stopped=bool(stop and stop.is_set()),
    )
    log.info("%s", summary.as_line())
    return summary
