"""Provider connections warmed beside the consumer, never in front of it: once it is consuming, the
APNs connection of every enabled Apple app (with its JWT signed) and the FCM access token of every
enabled Firebase app are opened in the background (push.services.provider_connections_warm), then
again every WARM_INTERVAL_S for what changed since: a new app, or a credential replaced in the
admin or the API (its old connections are dropped, its new ones opened). PUSHER_PROVIDER_WARMUP=0
turns it off: each connection then opens on its app's first push."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection

from push.services import provider_connections_warm

log = logging.getLogger("pusher.consumer")

WARM_INTERVAL_S = 30.0


def warm_thread_start(connected: threading.Event, stopping: threading.Event) -> threading.Thread | None:
    """Start the consumer's warm-up thread (`warm_loop`), unless PUSHER_PROVIDER_WARMUP is off:
    then say so in one line and return None."""
    if not settings.PUSHER_PROVIDER_WARMUP:
        log.info("provider warm-up off (PUSHER_PROVIDER_WARMUP=0): each provider connection opens on its first push")
        return None
    thread = threading.Thread(target=warm_loop, args=(connected, stopping), name="provider-warm", daemon=True)
    thread.start()
    return thread


def warm_loop(connected: threading.Event, stopping: threading.Event, *, interval: float = WARM_INTERVAL_S) -> None:
    """Until `stopping`: wait for the consumer to be `connected` (consuming first), then warm, and
    warm again every `interval` seconds. A failure is logged and left for the next round."""
    while not connected.wait(0.5):
        if stopping.is_set():
            return
    try:
        while not stopping.is_set():
            try:
                close_old_connections()
                provider_connections_warm()
            except Exception as exc:  # noqa: BLE001 - the warm-up must never take the consumer down
                log.warning("provider warm-up failed (%s: %s); the first push will connect", type(exc).__name__, exc)
            stopping.wait(interval)
    finally:
        connection.close()  # this thread's
