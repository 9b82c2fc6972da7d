"""The web process's /metrics tells the truth about the consumers: it reads their heartbeat rows
(written by runconsumer every 5 s) instead of exporting an in-process gauge that is always 0 there;
the consumer's own /metrics keeps its process gauge (issue 13)."""

from __future__ import annotations

import re
import socket
import threading
import urllib.request
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import DatabaseError
from django.utils import timezone

from core import metrics
from kazoo.models import ConsumerStatus
from kazoo.selectors import CONSUMER_FRESH

pytestmark = pytest.mark.django_db


def sample(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def heartbeat(name: str, *, connected: bool, age_s: float) -> None:
    now = timezone.now()
    ConsumerStatus.objects.create(
        name=name, connected=connected, started_at=now - timedelta(hours=1),
        updated_at=now - timedelta(seconds=age_s),
    )


def test_web_metrics_count_the_consumers_from_their_heartbeats(client) -> None:
    fresh = CONSUMER_FRESH.total_seconds()
    heartbeat("host-a:1", connected=True, age_s=2)
    heartbeat("host-b:2", connected=True, age_s=4)
    heartbeat("host-c:3", connected=False, age_s=1)  # alive, still waiting for RabbitMQ
    heartbeat("host-d:4", connected=True, age_s=fresh + 60)  # died without a last word

    text = client.get("/metrics").content.decode()

    assert sample(text, "pusher_consumers_connected") == 2
    assert sample(text, "pusher_consumers_alive") == 3
    # The in-process gauge would say 0 here while two consumers are connected: not exported.
    assert "pusher_consumer_connected" not in text


def test_web_metrics_say_zero_consumers_when_none_beats(client) -> None:
    text = client.get("/metrics").content.decode()
    assert sample(text, "pusher_consumers_connected") == 0 and sample(text, "pusher_consumers_alive") == 0


def test_web_metrics_leave_the_consumer_gauges_out_while_the_database_is_down(client, monkeypatch) -> None:
    def down(**kwargs: object) -> None:
        raise DatabaseError("connection refused")

    monkeypatch.setattr("pusher_site.views.consumers_alive", down)
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert "pusher_consumers_connected" not in text and "pusher_pushes_total" in text


def test_the_consumers_own_metrics_keep_its_process_gauge() -> None:
    from kazoo.management.commands.runconsumer import _serve_metrics

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = SimpleNamespace(connected=threading.Event(), messages_total=0)
    metrics.CONSUMER_CONNECTED.set(1)
    server = _serve_metrics(worker, "127.0.0.1", port)  # type: ignore[arg-type]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        metrics.CONSUMER_CONNECTED.set(0)
    assert sample(text, "pusher_consumer_connected") == 1
