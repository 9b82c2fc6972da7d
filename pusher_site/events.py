"""The one helper that publishes live-feed events, after the transaction commits.

Events are small JSON objects with no secrets (tokens masked). With REDIS_URL set they cross
from the consumer process to the web process; with the in-memory layer they only reach
websockets served by the same process.
"""

import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

GROUP = "pusher.events"
EVENT_TYPES = (
    "registration.updated",
    "token.deactivated",
    "push.sent",
    "push.failed",
    "push.expired",
    "kazoo.sync_failed",
    "consumer.connected",
    "consumer.disconnected",
)


def _send(event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(GROUP, {"type": "pusher.event", "event": event})
    except Exception:  # the live feed must never break the message path
        log.warning("live event %s not published", event.get("type"), exc_info=True)


def event_publish(event_type: str, **fields: Any) -> None:
    """Publish `event_type` once the current transaction commits (immediately outside one)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event = {"type": event_type, "time": time.time(), **{k: v for k, v in fields.items() if v is not None}}
    transaction.on_commit(lambda: _send(event))
