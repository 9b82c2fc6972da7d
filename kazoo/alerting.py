"""Webhooks and alerts, beside the consumer: every PUSHER_WEBHOOK_INTERVAL_S a thread of the consumer
(`alerting_loop`) checks the consumers' heartbeats and the credentials, queues the failed and
expired pushes the subscriptions chose, and sends what is due (hooks.services). `manage.py
send_webhooks` runs the same round once, or in a loop; run it apart from the consumers (cron, a
service of its own) to hear of an outage in which no consumer process is left to tell.

The round runs on its own thread and database connection: a receiver that is down or slow costs
the round time, never a push."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from hooks.models import WebhookEventType
from hooks.services import (
    SendSummary,
    WebhookEvent,
    alert_clear,
    alert_emails_send,
    alert_raise,
    webhook_deliveries_send_due,
)
from kazoo import selectors
from push.services.alerts import credential_alerts_check, push_outcomes_enqueue

log = logging.getLogger(__name__)

CONSUMER_DOWN_KEY = "consumer.down"


def consumer_outage_check(*, now: datetime | None = None) -> None:
    """`consumer.down` once when no consumer has said it consumes (in its heartbeat, every 5 s)
    for PUSHER_CONSUMER_DOWN_AFTER_S; `consumer.up` once when one does again. Heartbeats come from
    every consumer process and host on this database, so any process running the check can tell
    of another's outage; a process that lost the broker tells of its own."""
    now = now or timezone.now()
    last = selectors.consumer_last_connected()
    if last is None:  # no consumer ever connected here: nothing went down
        return
    consumers = [
        {"name": c.name, "connected": c.connected, "heartbeat_at": c.updated_at.isoformat(),
         "last_message_at": c.last_message_at.isoformat() if c.last_message_at else None}
        for c in selectors.consumers_recent()
    ]
    data = {"last_connected_at": last.isoformat(), "consumers": consumers}
    if last < now - timedelta(seconds=settings.PUSHER_CONSUMER_DOWN_AFTER_S):
        alert_raise(key=CONSUMER_DOWN_KEY, event_type=WebhookEventType.CONSUMER_DOWN, data=data, now=now,
                    summary=f"no consumer connected to the broker since {last:%Y-%m-%d %H:%M:%S} UTC")
    else:
        up = WebhookEvent(WebhookEventType.CONSUMER_UP, f"consumer.up:{now.isoformat()}", data)
        alert_clear(key=CONSUMER_DOWN_KEY, event=up, now=now)


@dataclass
class RoundSummary:
    queued: int = 0
    sent: SendSummary = field(default_factory=SendSummary)
    errors: list[str] = field(default_factory=list)

    def as_line(self) -> str:
        line = f"{self.queued} push event(s) queued; webhooks: {self.sent.as_line()}"
        return line + (f"; errors: {'; '.join(self.errors)}" if self.errors else "")


def alerting_round(*, consumers: bool = True) -> RoundSummary:
    """One round: the checks, the queueing, the sending. Each step on its own: one that fails is
    logged and the others still run. `consumers=False` leaves the heartbeat check out."""
    summary = RoundSummary()

    def step(name: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception as exc:  # one step must not stop the others (nor the consumer)
            summary.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            log.warning("webhooks and alerts: %s failed", name, exc_info=True)

    if consumers:
        step("consumer check", consumer_outage_check)
    step("credential check", credential_alerts_check)

    def queue() -> None:
        summary.queued = push_outcomes_enqueue()

    def send() -> None:
        summary.sent = webhook_deliveries_send_due()

    step("push events", queue)
    step("alert e-mails", alert_emails_send)
    step("sending", send)
    return summary


def alerting_loop(stop: threading.Event, *, interval: float | None = None) -> None:
    """The consumer runs this in a thread: a round every PUSHER_WEBHOOK_INTERVAL_S (0 = off). The
    heartbeat check waits until this process has had PUSHER_CONSUMER_DOWN_AFTER_S to connect, so a
    consumer starting after a stop does not first report its own absence."""
    interval = settings.PUSHER_WEBHOOK_INTERVAL_S if interval is None else interval
    if interval <= 0:
        return
    started = time.monotonic()
    try:
        while not stop.wait(interval):
            close_old_connections()
            summary = alerting_round(consumers=time.monotonic() - started >= settings.PUSHER_CONSUMER_DOWN_AFTER_S)
            if summary.queued or summary.sent.delivered or summary.sent.failed or summary.sent.gave_up:
                log.info("webhooks and alerts: %s", summary.as_line())
    finally:
        connection.close()  # this thread's
