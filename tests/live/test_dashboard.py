"""The admin dashboard (/admin/dashboard/), its selectors, and the web process's /metrics and /healthz."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from kazoo.models import ConsumerStatus
from push.models import Credential, Delivery, DeliveryStatus, Provider, PushApp
from pusher_site import dashboard
from registry.models import Device, SyncStatus

NOW = timezone.now().replace(second=30, microsecond=0)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7.0], 50, 7.0),
        ([7.0], 95, 7.0),
        ([1.0, 2.0], 50, 1.5),
        ([1.0, 2.0, 3.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([float(i) for i in range(1, 101)], 95, 95.05),
        ([float(i) for i in range(1, 101)], 0, 1.0),
        ([float(i) for i in range(1, 101)], 100, 100.0),
        ([10.0, 10.0, 10.0, 1000.0], 95, 851.5),
    ],
)
def test_percentile(values, q, expected):
    got = dashboard.percentile(values, q)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_percentile_rejects_out_of_range():
    with pytest.raises(ValueError):
        dashboard.percentile([1.0], 101)


def test_chart_stacks_outcomes_per_minute():
    t0 = NOW.replace(second=0)
    series = [
        (t0 - timedelta(minutes=2), {}),
        (t0 - timedelta(minutes=1), {"sent": 3, "failed": 1}),
        (t0, {"sent": 2}),
    ]
    chart = dashboard.chart_build(series, width=300, height=118)
    assert chart.max_per_minute == 4 and chart.plot_height == 100
    sent, failed, sent2 = chart.bars
    assert sent.color == "#2e7d32" and failed.color == "#c62828"
    assert sent.height == pytest.approx(72) and failed.height == pytest.approx(24)  # 3/4 and 1/4 of 96
    assert sent.y + sent.height == pytest.approx(100)  # sits on the axis
    assert failed.y + failed.height == pytest.approx(sent.y)  # stacked on top
    assert sent2.x > sent.x and "sent: 2" in sent2.title
    assert chart.ticks[0][1] == f"{t0 - timedelta(minutes=2):%H:%M}"


def _delivery(status, provider=Provider.APPLE, latency=None, ago=timedelta(minutes=1), **extra):
    d = Delivery.objects.create(source="amqp", status=status, provider=provider, app_id="com.acme",
                                latency_ms=latency, **extra)
    Delivery.objects.filter(pk=d.pk).update(created_at=NOW - ago)
    return d


@pytest.fixture
def activity(db):
    for latency in (10, 20, 30, 40, 500):
        _delivery(DeliveryStatus.SENT, latency=latency)
    _delivery(DeliveryStatus.FAILED, latency=80)
    _delivery(DeliveryStatus.TOKEN_INVALID, provider=Provider.FIREBASE, latency=60)
    _delivery(DeliveryStatus.EXPIRED, provider=Provider.FIREBASE)
    _delivery(DeliveryStatus.SENT, latency=9999, ago=timedelta(hours=2))  # outside the window
    soon = Credential.objects.create(name="acme voip", kind="apns_certificate", secret="x",
                                     not_after=NOW + timedelta(days=12, hours=1))
    Credential.objects.create(name="far", kind="apns_certificate", secret="x", not_after=NOW + timedelta(days=300))
    Credential.objects.create(name="p8 key", kind="apns_token", secret="x")  # no end date
    PushApp.objects.create(app_id="com.acme.voip", provider=Provider.APPLE, credential=soon)
    ConsumerStatus.objects.create(name="host:1", connected=True, started_at=NOW, messages_total=42,
                                  messages_per_s=3.5, updated_at=NOW - timedelta(seconds=4), last_message_at=NOW)
    ConsumerStatus.objects.create(name="host:gone", connected=True, started_at=NOW,
                                  updated_at=NOW - timedelta(minutes=5))
    Device.objects.create(account_id="acc1", device_id="dev1", sync_status=SyncStatus.PENDING, push_changed_at=NOW)
    Device.objects.create(account_id="acc1", device_id="dev2", sync_status=SyncStatus.FAILED, sync_attempts=3,
                          sync_error="Kazoo device update failed: HTTP 500", push_changed_at=NOW)
    Device.objects.create(account_id="acc1", device_id="dev3", sync_status=SyncStatus.SYNCED)


def test_summary_figures(activity):
    s = dashboard.dashboard_summary(now=NOW)
    assert s.outcomes[:4] == ("sent", "token_invalid", "failed", "expired")
    by_provider = {row.provider: row for row in s.pushes}
    assert by_provider["apple"].counts[:4] == (5, 0, 1, 0) and by_provider["apple"].total == 6
    assert by_provider["firebase"].counts[:4] == (0, 1, 0, 1)
    assert s.pushes_total.total == 8 and s.pushes_total.nonzero == [
        ("sent", 5), ("token_invalid", 1), ("failed", 1), ("expired", 1)]
    latency = {row.provider: row for row in s.latency}
    assert latency["apple"].count == 6 and latency["apple"].median_ms == pytest.approx(35.0)
    assert latency["apple"].p95_ms == pytest.approx(395.0)
    assert latency["firebase"].median_ms == 60 and latency[""].count == 7
    assert [c.name for c in s.credentials] == ["acme voip"]
    assert [c.name for c in s.consumers] == ["host:1"] and s.messages_per_s == 3.5
    assert s.devices_waiting_count == 2 and s.devices_failing_count == 1
    assert sum(int(re.search(r": (\d+)$", b.title).group(1)) for b in s.chart.bars) == 8


def test_summary_when_nothing_happened(db):
    s = dashboard.dashboard_summary(now=NOW)
    assert s.pushes == () and s.pushes_total.total == 0 and s.latency == ()
    assert s.chart.bars == () and len(s.chart.ticks) >= 6
    assert s.consumers == () and s.consumer_last_seen is None and s.devices_waiting_count == 0


def test_dashboard_page_for_staff(activity, staff_client):
    response = staff_client.get("/admin/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    for fragment in ('id="pd-feed"', "/ws/events/", "<svg", "Pushes per minute", "acme voip", "host:1",
                     "acc1 / dev2", "HTTP 500", "push.sent", "Operations dashboard"):
        assert fragment in html, fragment
    assert "host:gone" not in html
    # Self-contained: no CDN, no build, nothing of its own in static files (only the admin's own).
    assert all(src.startswith("/static/admin/") for src in re.findall(r'src="([^"]+)"', html))
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_dashboard_summary_fragment(activity, staff_client):
    response = staff_client.get("/admin/dashboard/?fragment=summary")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<svg" in html and "pd-cards" in html and "<html" not in html


@pytest.mark.parametrize("user", ["anonymous", "plain"])
def test_dashboard_is_for_staff_only(db, client, django_user_model, user):
    if user == "plain":
        client.force_login(django_user_model.objects.create_user("joe", password="a-long-password-123"))
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_admin_index_links_to_the_dashboard(staff_client):
    html = staff_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in html and "pusher-dashboard-module" in html
    assert "Push apps" in html or "push" in html.lower()  # the app list is still there


def test_web_metrics_refresh_the_credential_expiry_gauge_from_the_database(activity, client):
    text = client.get("/metrics").content.decode()
    match = re.search(r'pusher_credential_expiry_days\{app="com.acme.voip",provider="apple"\} ([0-9.e+]+)', text)
    assert match and 12 < float(match.group(1)) < 13.1
    PushApp.objects.all().delete()
    text = client.get("/metrics").content.decode()
    assert 'pusher_credential_expiry_days{app="com.acme.voip"' not in text


def test_healthz(db, client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}


def test_a_lone_surrogate_in_a_label_cannot_break_metrics(db, client):
    from core import metrics

    metrics.PUSHES.labels(provider="apple", app="bad\ud800app", status="failed", reason="app_unusable").inc()
    response = client.get("/metrics")
    assert response.status_code == 200
    assert 'app="bad?app"' in response.content.decode()
