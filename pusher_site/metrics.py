"""Prometheus metrics, with reason labels (Kazoo's anchors only counted success/error)."""

import threading

from django.utils import timezone
from prometheus_client import Counter, Gauge, Histogram

PUSHES = Counter(
    "pusher_pushes_total", "Pushes by outcome", ["provider", "app", "status", "reason"]
)
PROVIDER_LATENCY = Histogram(
    "pusher_provider_latency_seconds",
    "Time from consuming a push to the provider's answer",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)
REGISTRATIONS = Counter("pusher_reg_success_total", "reg_success messages by outcome", ["outcome"])
MESSAGES = Counter("pusher_messages_total", "AMQP messages handled, by event", ["event", "outcome"])
DEAD_LETTERS = Counter("pusher_dead_letters_total", "Messages dead-lettered, by event and reason", ["event", "reason"])
KAZOO_SYNC_FAILURES = Counter("pusher_kazoo_sync_failures_total", "Failed device syncs to Kazoo Crossbar")
CREDENTIAL_EXPIRY_DAYS = Gauge(
    "pusher_credential_expiry_days", "Days until the app's credential expires", ["app", "provider"]
)
CONSUMER_CONNECTED = Gauge("pusher_consumer_connected", "1 while the consumer is connected and consuming")

_expiry_lock = threading.Lock()


def credential_expiry_refresh() -> None:
    """Set the expiry gauge from the database (called when /metrics is scraped): one series per
    app whose credential has an end date; apps removed or rotated to a dateless key drop out."""
    from pusher_site.dashboard import push_apps_with_expiry  # services import this module: import late

    rows = [
        (app.app_id[:100], app.provider, (app.credential.not_after - timezone.now()).total_seconds() / 86400)
        for app in push_apps_with_expiry()
    ]
    with _expiry_lock:
        CREDENTIAL_EXPIRY_DAYS.clear()
        for app_id, provider, days in rows:
            CREDENTIAL_EXPIRY_DAYS.labels(app=app_id, provider=provider).set(round(days, 3))
