"""Where each device's push object stands with Kazoo's copy (kazoo.sync talks to Crossbar; this
module keeps the state in the device row, so a restart resumes it).

A device whose push object changed is PENDING with `sync_next_at` = now; a sync loop (one in each
consumer process, maybe on several hosts) claims it by moving `sync_next_at` a lease ahead
(compare-and-set on the value it read, so of two loops that read the same row one wins), PATCHes
Kazoo, then marks it SYNCED or FAILED with backoff. A loop that dies mid-sync leaves the lease to
run out, and the device is tried again."""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import metrics
from core.events import event_publish
from registry import selectors
from registry.models import Device, SyncStatus

log = logging.getLogger(__name__)

# Longer than a Crossbar call can take (kazoo.crossbar's timeout is 5 s, a connect and a PATCH).
SYNC_LEASE = timedelta(seconds=60)

_sync_event = threading.Event()


def kazoo_configured() -> bool:
    return bool(settings.KAZOO_CROSSBAR_URL and settings.KAZOO_API_KEY)


def sync_fields(now: Any) -> dict[str, Any]:
    """What a changed push object does to the device's sync state."""
    if kazoo_configured():
        return {"sync_status": SyncStatus.PENDING, "sync_next_at": now, "sync_attempts": 0, "sync_error": ""}
    return {"sync_status": SyncStatus.LOCAL}


def sync_mark_pending(device: Device, now: Any) -> None:
    for key, value in sync_fields(now).items():
        setattr(device, key, value)


def sync_wake() -> None:
    """Tell the sync loop (if this process runs one) that a device waits."""
    _sync_event.set()


def sync_wait(timeout: float) -> None:
    _sync_event.wait(timeout)
    _sync_event.clear()


def device_sync_local(*, device: Device) -> Device:
    """No Kazoo to sync with: the push object is kept here only."""
    Device.objects.filter(pk=device.pk).update(sync_status=SyncStatus.LOCAL)
    device.sync_status = SyncStatus.LOCAL
    return device


def device_sync_failed(*, device: Device, error: str) -> Device:
    """Kazoo refused or could not be reached: retry later, with backoff."""
    attempts = device.sync_attempts + 1
    delay = min(600.0, 2.0 ** min(attempts, 10)) * random.uniform(0.8, 1.2)
    Device.objects.filter(pk=device.pk).update(
        sync_status=SyncStatus.FAILED,
        sync_attempts=attempts,
        sync_error=error[:500],
        sync_next_at=timezone.now() + timedelta(seconds=delay),
    )
    device.refresh_from_db()
    metrics.KAZOO_SYNC_FAILURES.inc()
    log.warning("kazoo sync failed for device %s/%s (attempt %d, next in %.0fs): %s",
                device.account_id, device.device_id, attempts, delay, error)
    event_publish("kazoo.sync_failed", account=device.account_id, device=device.device_id, outcome=error[:200])
    return device


def device_sync_done(*, device: Device, changed_at: Any) -> Device:
    """Kazoo took the push object as it was at `changed_at`: synced, unless it changed meanwhile."""
    Device.objects.filter(pk=device.pk, push_changed_at=changed_at).update(
        sync_status=SyncStatus.SYNCED, push_synced_at=timezone.now(), sync_attempts=0, sync_error="",
        sync_next_at=None,
    )
    device.refresh_from_db()
    log.info("kazoo sync ok for device %s/%s", device.account_id, device.device_id)
    return device


def device_sync_pending(*, device: Device, reason: str) -> Device:
    """Have the sync loop write the device's push object again (it is found to differ from the
    copy the other side holds); the push object itself is unchanged. A device already waiting to
    sync keeps its turn and backoff."""
    if not kazoo_configured():
        return device
    now = timezone.now()
    fields = sync_fields(now)
    updated = Device.objects.filter(pk=device.pk, sync_status__in=[SyncStatus.SYNCED, SyncStatus.LOCAL]).update(
        **fields
    )
    if updated:
        for key, value in fields.items():
            setattr(device, key, value)
        log.info("device %s/%s queued for sync: %s", device.account_id, device.device_id, reason)
        transaction.on_commit(sync_wake)
    return device


def devices_sync_claim(*, limit: int) -> list[Device]:
    """Devices whose turn to sync has come, each claimed for this caller alone for SYNC_LEASE:
    another sync loop that read the same rows finds them moved on and leaves them."""
    lease_end = timezone.now() + SYNC_LEASE
    claimed = []
    for device in selectors.devices_sync_due(limit=limit):
        won = Device.objects.filter(
            pk=device.pk, sync_status=device.sync_status, sync_next_at=device.sync_next_at,
            push_changed_at=device.push_changed_at,
        ).update(sync_next_at=lease_end)
        if won:
            device.sync_next_at = lease_end
            claimed.append(device)
    return claimed
