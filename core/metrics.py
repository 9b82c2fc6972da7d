"""Prometheus metrics, with reason labels (Kazoo's anchors only counted success/error)."""

from typing import Any

from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram

LABEL_MAX = 100


def label_value(value: Any) -> str:
    """A label value that cannot break the exposition: label values come from the wire (Token-App,
    reasons), and one lone surrogate in one of them would make every later scrape fail to encode."""
    text = str(value)[:LABEL_MAX]
    return text.encode("utf-8", "replace").decode("utf-8")


class _SafeLabels:
    def labels(self, *values: Any, **named: Any) -> Any:
        return super().labels(  # type: ignore[misc]
            *(label_value(v) for v in values), **{k: label_value(v) for k, v in named.items()}
        )


class Counter(_SafeLabels, _Counter):
    pass


class Gauge(_SafeLabels, _Gauge):
    pass


class Histogram(_SafeLabels, _Histogram):
    pass


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
TOKEN_REPORTS = Counter("pusher_token_reports_total", "Push token reports (HTTP) stored, by outcome", ["outcome"])
MESSAGES = Counter("pusher_messages_total", "AMQP messages handled, by event", ["event", "outcome"])
DEAD_LETTERS = Counter("pusher_dead_letters_total", "Messages dead-lettered, by event and reason", ["event", "reason"])
KAZOO_SYNC_FAILURES = Counter("pusher_kazoo_sync_failures_total", "Failed device syncs to Kazoo Crossbar")
CREDENTIAL_EXPIRY_DAYS = Gauge(
    "pusher_credential_expiry_days", "Days until the app's credential expires", ["app", "provider"],
    multiprocess_mode="livemin",  # the same in every consumer process (runconsumer --processes)
)
CONSUMER_CONNECTED = Gauge(
    "pusher_consumer_connected", "1 while the consumer is connected and consuming (the number of such processes "
    "under runconsumer --processes)", multiprocess_mode="livesum",
)
WEBHOOK_ATTEMPTS = Counter(
    "pusher_webhook_attempts_total", "Webhook delivery attempts by outcome (delivered, failed: will retry, gave_up)",
    ["outcome"],
)
