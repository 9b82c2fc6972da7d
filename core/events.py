"""The one helper that publishes live-feed events, after the transaction commits.

Events are small JSON objects with no secrets (tokens masked). With REDIS_URL set they cross
from the consumer process to the web process; with the in-memory layer they only reach
websockets served by the same process (docs/live.md).
"""

import asyncio
import atexit
import logging
import queue
import threading
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from core.text import mask_token

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
# What an event may carry. A closed list, so a secret can't slip into the feed by a new keyword.
EVENT_FIELDS = frozenset(
    {"account", "device", "app", "provider", "token", "call_id", "outcome", "reason", "latency_ms", "delivery", "rule"}
)
MAX_TEXT = 300
SEND_TIMEOUT_S = 5.0


def _mask(token: str) -> str:
    # Callers may hand a token over masked already; one that arrives unmasked is masked here.
    return token if "…" in token else mask_token(token)


class _RemoteSender:
    """Sends to a cross-process layer (channels-redis) from one thread with its own event loop.

    The message path never waits on Redis (a slow or unreachable Redis must not hold a push
    thread), events keep the order they were published in, and the layer keeps one connection
    pool instead of opening one per event (async_to_sync would run a new loop for each call)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    def submit(self, event: dict[str, Any]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="live-events", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("live feed backlog full: %d event(s) dropped", self.dropped)

    def flush(self, timeout: float = 2.0) -> None:
        """Give queued events a moment to leave (the consumer's last `consumer.disconnected`)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        while True:
            event = self._queue.get()
            try:
                layer = get_channel_layer()
                if layer is not None:
                    loop.run_until_complete(
                        asyncio.wait_for(layer.group_send(GROUP, {"type": "pusher.event", "event": event}),
                                         SEND_TIMEOUT_S)
                    )
            except Exception:  # the live feed must never break anything else
                log.warning("live event %s not published", event.get("type"), exc_info=True)
            finally:
                self._queue.task_done()


_remote = _RemoteSender()


def _send(event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    if not isinstance(layer, InMemoryChannelLayer):
        _remote.submit(event)
        return
    # The in-memory layer lives in this process: with nobody subscribed (the consumer process
    # serves no websockets) there is nothing to do, and async_to_sync per event is costly.
    if not getattr(layer, "groups", {}).get(GROUP):
        return
    # Deliver on the loop that serves the websockets (async_to_sync from a request thread runs on it).
    try:
        async_to_sync(layer.group_send)(GROUP, {"type": "pusher.event", "event": event})
    except Exception:  # the live feed must never break the message path
        log.warning("live event %s not published", event.get("type"), exc_info=True)


def _clean(value: Any) -> Any:
    if isinstance(value, bool | int | float):
        return value
    return str(value)[:MAX_TEXT]


def event_publish(event_type: str, **fields: Any) -> None:
    """Publish `event_type` once the current transaction commits (immediately outside one).

    Fields (None values are left out): account, device, app, provider, token (masked), call_id,
    outcome, reason, latency_ms, delivery (its id), rule."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    unknown = set(fields) - EVENT_FIELDS
    if unknown:
        raise ValueError(f"unknown event field(s) {', '.join(sorted(unknown))}")
    if fields.get("token") is not None:  # masked before _clean cuts it: the tail shown is the token's own
        fields["token"] = _mask(str(fields["token"]))
    event: dict[str, Any] = {"type": event_type, "time": round(time.time(), 3)}
    event.update({k: _clean(v) for k, v in fields.items() if v is not None})
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _send(event))
    else:
        # Outside a transaction: send now. (on_commit would open a database connection in this
        # thread just to check autocommit, and a thread like the AMQP one would never close it.)
        _send(event)
