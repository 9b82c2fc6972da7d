"""Kazoo's device documents follow pusher's push objects: PATCHed through Crossbar off the message
path, retried with backoff (the state lives in the device row, so a restart resumes it)."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from kazoo.crossbar import CrossbarClient, KazooSyncError
from registry.models import Device
from registry.syncstate import (
    device_sync_done,
    device_sync_failed,
    device_sync_local,
    devices_sync_claim,
    kazoo_configured,
    sync_wait,
)

log = logging.getLogger(__name__)

_client_lock = threading.Lock()
_client: CrossbarClient | None = None


def kazoo_client() -> CrossbarClient | None:
    global _client
    if not kazoo_configured():
        return None
    with _client_lock:
        if _client is None or _client.base_url != settings.KAZOO_CROSSBAR_URL.rstrip("/"):
            _client = CrossbarClient(
                settings.KAZOO_CROSSBAR_URL, settings.KAZOO_API_KEY, ca_file=settings.KAZOO_CA_FILE
            )
        return _client


def device_sync(*, device: Device) -> Device:
    """Push the device's push object to Kazoo's device document now (outside any transaction:
    a network call must not hold database locks)."""
    client = kazoo_client()
    if client is None:
        return device_sync_local(device=device)
    changed_at = device.push_changed_at
    try:
        client.device_push_set(device.account_id, device.device_id, device.push or {})
    except KazooSyncError as exc:
        return device_sync_failed(device=device, error=exc.message)
    return device_sync_done(device=device, changed_at=changed_at)


def device_sync_due(*, limit: int = 50) -> int:
    """Sync the devices whose turn has come; returns how many were tried."""
    if not kazoo_configured():
        return 0
    due = devices_sync_claim(limit=limit)
    for device in due:
        device_sync(device=device)
    return len(due)


def sync_loop(stop: threading.Event) -> None:
    """The consumer runs this in a thread: wake on a changed push object, else every second."""
    while not stop.is_set():
        sync_wait(1.0)
        if stop.is_set():
            break
        if not kazoo_configured():
            continue
        try:
            close_old_connections()
            device_sync_due(limit=50)
        except Exception:
            log.warning("kazoo sync loop error", exc_info=True)
    connection.close()
