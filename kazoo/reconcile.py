"""Drift repair: Kazoo's device documents checked against pusher's push objects.

The sync loop writes a push object only when pusher's copy changes, so a `push` edited or removed
in Kazoo (the Kazoo UI, a script, a restored database) stays wrong until the phone's token changes.
`devices_reconcile` reads the device documents of devices pusher believes in step (GET through
Crossbar, outside any transaction), compares their `push` with pusher's and queues each that
differs for the sync loop (`registry.syncstate.device_sync_pending`), which PATCHes it again. Each
check's result is kept per device in `kazoo.models.DeviceReconcile`. Run by `manage.py
kazoo_reconcile` and, a bounded batch per tick, by the consumer (`reconcile_loop`).

A device pusher holds no push object for (one it cleared) is in step when Kazoo's `push` is
absent or empty (`{}` is what pusher writes to clear it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from kazoo import selectors
from kazoo.crossbar import CrossbarClient, KazooSyncError
from kazoo.models import DeviceReconcile, ReconcileResult
from kazoo.sync import kazoo_client
from registry.models import Device
from registry.pushobject import push_object_equal
from registry.syncstate import device_sync_pending, kazoo_configured

log = logging.getLogger(__name__)

_DETAIL_LIMIT = 500
# Errors in a row after which a batch stops: Crossbar down or the API key refused fails every
# device alike; the rest keep their turn for the next batch.
ERRORS_IN_A_ROW_MAX = 5


@dataclass
class ReconcileOutcome:
    device: Device
    result: ReconcileResult
    detail: str = ""


@dataclass
class ReconcileSummary:
    dry_run: bool = False
    outcomes: list[ReconcileOutcome] = field(default_factory=list)
    stopped: str = ""  # why the batch ended early, if it did

    def count(self, result: ReconcileResult) -> int:
        return sum(1 for outcome in self.outcomes if outcome.result == result)

    @property
    def checked(self) -> int:
        return len(self.outcomes)

    def as_line(self) -> str:
        counts = ", ".join(f"{self.count(result)} {result.value}" for result in ReconcileResult)
        queued = "would be queued for sync" if self.dry_run else "queued for sync"
        stopped = f"; stopped early: {self.stopped}" if self.stopped else ""
        return (f"{self.checked} device(s) checked against Kazoo: {counts}; "
                f"{self.count(ReconcileResult.DRIFTED)} {queued}{stopped}")


def _push_normal(push: Any) -> dict[str, Any] | None:
    """None for no push object (absent, null or `{}`, which Kazoo treats alike)."""
    return dict(push) if isinstance(push, Mapping) and push else None


def _difference(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> str:
    if theirs is None:
        return "push object missing in Kazoo"
    if ours is None:
        return "Kazoo holds a push object pusher cleared"
    keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    return "push object differs in Kazoo: " + ", ".join(keys)[:400]


def device_reconcile(*, device: Device, client: CrossbarClient, dry_run: bool = False) -> ReconcileOutcome:
    """Check one device's document in Kazoo; on drift queue the device for sync (not in a dry run)."""
    try:
        document = client.device_get(device.account_id, device.device_id)
    except KazooSyncError as exc:
        if exc.status == 404:
            outcome = ReconcileOutcome(device, ReconcileResult.MISSING, "device document not found in Kazoo")
        else:
            outcome = ReconcileOutcome(device, ReconcileResult.ERROR, exc.message)
    else:
        theirs = _push_normal(document.get("push"))
        ours = _push_normal(device.push)
        if not push_object_equal(ours, theirs):
            # Read before the GET: the push object may have changed (and reached Kazoo) meanwhile.
            device.refresh_from_db(fields=["push", "push_changed_at", "sync_status"])
            ours = _push_normal(device.push)
        if push_object_equal(ours, theirs):
            outcome = ReconcileOutcome(device, ReconcileResult.OK)
        else:
            outcome = ReconcileOutcome(device, ReconcileResult.DRIFTED, _difference(ours, theirs))
    if dry_run:
        return outcome
    if outcome.result == ReconcileResult.DRIFTED:
        device_sync_pending(device=device, reason=outcome.detail)
        log.warning("kazoo drift on device %s/%s: %s", device.account_id, device.device_id, outcome.detail)
    _record(outcome)
    return outcome


def _record(outcome: ReconcileOutcome) -> None:
    now = timezone.now()
    values: dict[str, Any] = {
        "checked_at": now, "result": outcome.result, "detail": outcome.detail[:_DETAIL_LIMIT],
    }
    if outcome.result == ReconcileResult.DRIFTED:
        previous = DeviceReconcile.objects.filter(device_id=outcome.device.pk).values_list(
            "drift_count", flat=True
        ).first()
        values["drifted_at"] = now
        values["drift_count"] = (previous or 0) + 1
    DeviceReconcile.objects.update_or_create(device_id=outcome.device.pk, defaults=values)


def devices_reconcile(
    *, account_id: str | None = None, limit: int | None = None, dry_run: bool = False,
    client: CrossbarClient | None = None,
) -> ReconcileSummary:
    """Check up to `limit` devices (all when None), least recently checked first. Without Kazoo
    configured there is nothing to compare with: an empty summary."""
    summary = ReconcileSummary(dry_run=dry_run)
    client = client or kazoo_client()
    if client is None or not kazoo_configured():
        return summary
    errors = 0
    for device in selectors.devices_reconcile_due(limit=limit, account_id=account_id):
        outcome = device_reconcile(device=device, client=client, dry_run=dry_run)
        summary.outcomes.append(outcome)
        errors = errors + 1 if outcome.result == ReconcileResult.ERROR else 0
        if errors >= ERRORS_IN_A_ROW_MAX:
            summary.stopped = f"{errors} errors in a row (last: {outcome.detail})"
            log.warning("kazoo reconcile stopped: %s", summary.stopped)
            break
    return summary


def reconcile_loop(stop: threading.Event) -> None:
    """The consumer runs this in a thread: one bounded batch every PUSHER_RECONCILE_INTERVAL_S."""
    interval = float(settings.PUSHER_RECONCILE_INTERVAL_S)
    if interval <= 0:
        return
    while not stop.wait(interval):
        if not kazoo_configured():
            continue
        try:
            close_old_connections()
            summary = devices_reconcile(limit=settings.PUSHER_RECONCILE_BATCH)
            if summary.checked:
                log.info("kazoo reconcile: %s", summary.as_line())
        except Exception:
            log.warning("kazoo reconcile loop error", exc_info=True)
    connection.close()
