"""Webhook benchmark: `python -m bench.webhooks [--failed 1000,10000,50000] [--send 2000]`.

What reading failed and expired pushes from the delivery log costs the consumer's webhook thread
(push.services.alerts.push_outcomes_enqueue), against a subscription to push.failed:

  first read   N failed deliveries not queued yet: queued in batches of 500, rows/s
  each round   once they are queued, what every round (every PUSHER_WEBHOOK_INTERVAL_S) costs while
               they are younger than SETTLE and are read again: ms per round

and what the sender does against a local receiver answering 200 at once (deliveries/s), and what
a deactivated token costs with a subscription to token.deactivated (its event is written in the
same transaction) and without. The push path itself is not touched by webhooks: nothing to measure
there. Own database (pusher_bench_hooks) unless DATABASE_URL says otherwise; its rows are deleted
at the end. Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import database_label, say, setup, table

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/pusher_bench_hooks")


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _failed_deliveries(n: int, marker: str) -> None:
    from django.utils import timezone

    from push.models import Delivery

    now = timezone.now()
    rows = [
        Delivery(created_at=now - timedelta(seconds=300 * i / n), finished_at=now, source="amqp", status="failed",
                 reason="BadDeviceToken", account_id="a" * 32, device_id="d" * 32, app_id=marker, provider="apple",
                 token=f"{i:064x}", token_type="apple", call_id=f"{marker}-{i}", attempts=1)
        for i in range(n)
    ]
    Delivery.objects.bulk_create(rows, batch_size=2000)
    _vacuum()


def _vacuum() -> None:
    """Fresh planner statistics and no dead index entries left by an earlier run (autovacuum's job
    in production, too slow to wait for here)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE push_delivery, hooks_webhookdelivery")


def _scan(n: int, rounds: int) -> list[str]:
    from django.utils import timezone

    from hooks.models import WebhookDelivery, WebhookSubscription
    from hooks.services import webhook_subscription_create
    from push.models import Delivery
    from push.services.alerts import push_outcomes_enqueue

    marker = f"bench-hooks-{n}"
    subscription = webhook_subscription_create(name=marker, url="http://127.0.0.1:9/", secret="b" * 20,
                                               event_types=["push.failed"])
    WebhookSubscription.objects.filter(pk=subscription.pk).update(
        push_scan_from=timezone.now() - timedelta(minutes=6))
    try:
        _failed_deliveries(n, marker)
        started = time.perf_counter()
        queued = 0
        while True:
            got = push_outcomes_enqueue()
            queued += got
            if not got:
                break
        first = time.perf_counter() - started
        timings = []
        for _ in range(rounds):
            started = time.perf_counter()
            assert push_outcomes_enqueue() == 0
            timings.append((time.perf_counter() - started) * 1000)
        return [f"{n:,}", f"{queued:,}", f"{first:.2f} s", f"{queued / first:,.0f}",
                f"{statistics.median(timings):.1f}", f"{max(timings):.1f}"]
    finally:
        WebhookDelivery.objects.filter(subscription=subscription).delete()
        subscription.delete()
        Delivery.objects.filter(app_id=marker).delete()


def _send(n: int) -> list[str]:
    from hooks.models import WebhookDelivery
    from hooks.services import (
        WebhookEvent,
        webhook_deliveries_send_due,
        webhook_events_queue,
        webhook_subscription_create,
    )

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    subscription = webhook_subscription_create(name="bench-send", url=f"http://127.0.0.1:{server.server_port}/in",
                                               secret="b" * 20, event_types=["push.failed"])
    try:
        webhook_events_queue(subscription=subscription, events=[
            WebhookEvent("push.failed", f"bench:{i}", {"delivery": i, "reason": "BadDeviceToken"}) for i in range(n)])
        started = time.perf_counter()
        delivered = 0
        while delivered < n:
            got = webhook_deliveries_send_due().delivered
            if not got:
                break
            delivered += got
        elapsed = time.perf_counter() - started
        return [f"{n:,}", f"{delivered:,}", f"{elapsed:.2f} s", f"{delivered / elapsed:,.0f}"]
    finally:
        server.shutdown()
        WebhookDelivery.objects.filter(subscription=subscription).delete()
        subscription.delete()


def _deactivations(n: int) -> list[list[str]]:
    from django.utils import timezone

    from hooks.models import WebhookDelivery
    from hooks.services import webhook_subscription_create
    from registry.models import Device, PushToken
    from registry.services import push_token_deactivate

    rows = []
    for subscribed in (False, True):
        subscription = (webhook_subscription_create(name="bench-tokens", url="http://127.0.0.1:9/", secret="b" * 20,
                                                    event_types=["token.deactivated"]) if subscribed else None)
        device = Device.objects.create(account_id="b" * 32, device_id=f"bench-{subscribed}")
        tokens = PushToken.objects.bulk_create(
            [PushToken(device=device, token=f"bench-{subscribed}-{i:060x}", token_type="apple", app="bench",
                       last_seen_at=timezone.now()) for i in range(n)])
        try:
            started = time.perf_counter()
            for token in tokens:
                push_token_deactivate(token=token, reason="bench")
            per = (time.perf_counter() - started) / n * 1000
            rows.append(["with a subscription" if subscribed else "no subscription", f"{n:,}", f"{per:.2f}"])
        finally:
            device.delete()
            if subscription is not None:
                WebhookDelivery.objects.filter(subscription=subscription).delete()
                subscription.delete()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failed", default="1000,10000,50000", help="failed deliveries in the window, per run")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--send", type=int, default=2000, help="deliveries for the sender run")
    parser.add_argument("--tokens", type=int, default=300, help="tokens deactivated per case")
    args = parser.parse_args()
    setup(log_name="bench_webhooks")
    say(f"database: {database_label()}")
    scans = [_scan(int(n), args.rounds) for n in args.failed.split(",")]
    say(table(["failed in window", "queued", "first read", "rows/s", "round ms (median)", "round ms (max)"], scans))
    say()
    say(table(["deliveries", "delivered", "time", "deliveries/s"], [_send(args.send)]))
    say()
    say(table(["token deactivation", "tokens", "ms each"], _deactivations(args.tokens)))


if __name__ == "__main__":
    main()
