"""The consumer's retention loop: `push.services.retention_prune` every PUSHER_PRUNE_INTERVAL_S, beside
the consumer, never in front of it (its own thread and database connection; a batch is a short
transaction of its own, so the push lane's writes never wait long on it)."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from push.services import PruneRunning, retention_prune

log = logging.getLogger("pusher.consumer")

# The first prune comes this soon after the start (or after one interval, if shorter): a consumer
# restarted more often than every PUSHER_PRUNE_INTERVAL_S (deploys) would otherwise never prune.
PRUNE_FIRST_DELAY_S = 60.0


def prune_loop(stop: threading.Event) -> None:
    """Until `stop`: prune, then again every PUSHER_PRUNE_INTERVAL_S (0: never). A failure is one
    log line and waits for the next round; `stop` ends a prune between two batches."""
    interval = float(settings.PUSHER_PRUNE_INTERVAL_S)
    if interval <= 0:
        return
    wait = min(interval, PRUNE_FIRST_DELAY_S)
    try:
        while not stop.wait(wait):
            wait = interval
            if not (settings.PUSHER_DELIVERY_RETENTION_DAYS or settings.PUSHER_DEVICE_RETENTION_DAYS):
                continue
            try:
                close_old_connections()
                retention_prune(stop=stop)  # logs its summary line
            except PruneRunning as exc:  # another consumer process prunes this round
                log.info("prune skipped: %s", exc.message)
            except Exception as exc:  # noqa: BLE001 - retention must never take the consumer down
                log.warning("prune failed (%s: %s); next try in %.0f s", type(exc).__name__, exc, interval)
    finally:
        connection.close()  # this thread's
