"""Reads for the admin dashboard (and the credential-expiry gauge): plain queries that run the
same on SQLite and PostgreSQL, aggregated in Python where SQL dialects differ (percentiles)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from kazoo.models import ConsumerStatus
from kazoo.selectors import consumers_alive
from push.models import Credential, DeliveryStatus, Provider
from push.selectors import credentials_expiring, delivery_counts, delivery_counts_per_minute, delivery_latencies
from registry.models import Device, SyncStatus
from registry.selectors import devices_waiting_sync

WINDOW = timedelta(hours=1)

# Latency percentiles read at most this many of the window's newest deliveries: plenty for a
# median and a p95, and bounded memory on a busy hour.
LATENCY_SAMPLE_MAX = 100_000
# Stacking order (bottom first) and colours of the chart; also the outcome columns' order.
OUTCOMES = (
    (DeliveryStatus.SENT, "#2e7d32"),
    (DeliveryStatus.TOKEN_INVALID, "#ef6c00"),
    (DeliveryStatus.FAILED, "#c62828"),
    (DeliveryStatus.EXPIRED, "#6d4c41"),
    (DeliveryStatus.QUEUED, "#1565c0"),
)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of sorted `values`, interpolating linearly between the two
    nearest ranks (numpy's default); None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    position = (len(values) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return values[low] + (values[high] - values[low]) * (position - low)



# --- aggregations ------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeRow:
    provider: str
    label: str
    counts: tuple[int, ...]  # in OUTCOMES order
    total: int

    @property
    def nonzero(self) -> list[tuple[str, int]]:
        return [(str(status), n) for (status, _), n in zip(OUTCOMES, self.counts, strict=True) if n]


@dataclass(frozen=True)
class LatencyRow:
    provider: str
    label: str
    count: int
    median_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_height: int
    bars: tuple[Bar, ...]
    max_per_minute: int
    ticks: tuple[tuple[float, str, str], ...]  # (x, "HH:MM", SVG text-anchor) along the time axis
    legend: tuple[tuple[str, str], ...]  # (outcome, colour)

    @property
    def middle(self) -> float:
        return self.width / 2


@dataclass(frozen=True)
class DashboardSummary:
    now: datetime
    since: datetime
    outcomes: tuple[str, ...]
    pushes: tuple[OutcomeRow, ...]
    pushes_total: OutcomeRow
    latency: tuple[LatencyRow, ...]
    chart: Chart
    credentials: tuple[Credential, ...]
    consumers: tuple[ConsumerStatus, ...]
    consumer_last_seen: ConsumerStatus | None
    devices_waiting: tuple[Device, ...]
    devices_waiting_count: int
    devices_failing_count: int
    messages_per_s: float = field(default=0.0)


def _provider_label(provider: str) -> str:
    return Provider(provider).label if provider in Provider.values else (provider or "unknown")


def pushes_by_outcome(*, since: datetime) -> tuple[tuple[OutcomeRow, ...], OutcomeRow]:
    """Deliveries created since `since`, counted by provider and outcome, and the totals."""
    names = [str(status) for status, _ in OUTCOMES]
    grid: dict[str, list[int]] = {}
    for row in delivery_counts(since=since):
        if row["status"] not in names:
            continue
        grid.setdefault(row["provider"], [0] * len(names))[names.index(row["status"])] += row["n"]
    out = tuple(
        OutcomeRow(provider, _provider_label(provider), tuple(counts), sum(counts))
        for provider, counts in sorted(grid.items())
    )
    totals = tuple(sum(r.counts[i] for r in out) for i in range(len(names)))
    return out, OutcomeRow("", "all", totals, sum(totals))


def provider_latency(*, since: datetime) -> tuple[LatencyRow, ...]:
    """Median and p95 of the provider round trip (Delivery.latency_ms) per provider, then overall."""
    samples = delivery_latencies(since=since, limit=LATENCY_SAMPLE_MAX)
    by_provider: dict[str, list[float]] = {}
    for provider, latency in samples:
        if latency is not None:  # (the query's own filter)
            by_provider.setdefault(provider, []).append(latency)
    rows = []
    everything: list[float] = []
    for provider, values in sorted(by_provider.items()):
        values.sort()
        everything.extend(values)
        rows.append(LatencyRow(provider, _provider_label(provider), len(values),
                               percentile(values, 50), percentile(values, 95)))
    if len(rows) > 1:
        everything.sort()
        rows.append(LatencyRow("", "all", len(everything), percentile(everything, 50), percentile(everything, 95)))
    return tuple(rows)


def pushes_per_minute(*, now: datetime, minutes: int = 60) -> list[tuple[datetime, dict[str, int]]]:
    """(minute, {outcome: count}) for each of the last `minutes` minutes, oldest first, empty minutes included."""
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    buckets: dict[datetime, dict[str, int]] = {start + timedelta(minutes=i): {} for i in range(minutes)}
    for row in delivery_counts_per_minute(since=start):
        minute = row["minute"]
        if minute in buckets:
            buckets[minute][row["status"]] = buckets[minute].get(row["status"], 0) + row["n"]
    return sorted(buckets.items())


def chart_build(
    series: list[tuple[datetime, dict[str, int]]], *, width: int = 960, height: int = 150
) -> Chart:
    """Stacked bars, one per minute, laid out for an inline SVG (pure: no ORM, no clock)."""
    axis = 18  # room for the time labels under the bars
    plot_height = height - axis
    peak = max((sum(counts.values()) for _, counts in series), default=0)
    scale_max = max(peak, 1)
    slot = width / max(len(series), 1)
    bars: list[Bar] = []
    ticks: list[tuple[float, str, str]] = []
    for i, (minute, counts) in enumerate(series):
        x = i * slot
        y = float(plot_height)
        for status, color in OUTCOMES:
            n = counts.get(str(status), 0)
            if not n:
                continue
            h = n / scale_max * (plot_height - 4)
            y -= h
            bars.append(Bar(round(x + 1, 2), round(y, 2), round(max(slot - 2, 1), 2), round(h, 2), color,
                            f"{minute:%H:%M} {status}: {n}"))
        # A label every 10 minutes and on the last one; the edge labels lean inwards so they show whole.
        if i == 0:
            ticks.append((round(x, 2), f"{minute:%H:%M}", "start"))
        elif i == len(series) - 1:
            ticks.append((round(x + slot, 2), f"{minute:%H:%M}", "end"))
        elif i % 10 == 0 and len(series) - i > 4:
            ticks.append((round(x + slot / 2, 2), f"{minute:%H:%M}", "middle"))
    legend = tuple((str(status), color) for status, color in OUTCOMES)
    return Chart(width, height, plot_height, tuple(bars), peak, tuple(ticks), legend)


def dashboard_summary(*, now: datetime | None = None) -> DashboardSummary:
    now = now or timezone.now()
    since = now - WINDOW
    pushes, total = pushes_by_outcome(since=since)
    consumers = tuple(consumers_alive(now=now))
    waiting = devices_waiting_sync()
    waiting_counts = waiting.aggregate(all=Count("pk"), failing=Count("pk", filter=Q(sync_status=SyncStatus.FAILED)))
    return DashboardSummary(
        now=now,
        since=since,
        outcomes=tuple(str(status) for status, _ in OUTCOMES),
        pushes=pushes,
        pushes_total=total,
        latency=provider_latency(since=since),
        chart=chart_build(pushes_per_minute(now=now)),
        credentials=tuple(credentials_expiring(now=now)),
        consumers=consumers,
        consumer_last_seen=None if consumers else ConsumerStatus.objects.order_by("-updated_at").first(),
        devices_waiting=tuple(waiting[:20]),
        devices_waiting_count=waiting_counts["all"],
        devices_failing_count=waiting_counts["failing"],
        messages_per_s=sum(c.messages_per_s for c in consumers if c.connected),
    )
