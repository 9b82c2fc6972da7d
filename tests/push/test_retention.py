"""Retention of the delivery log (push.services.retention, `manage.py prune`, the consumer's loop):
finished rows older than the cutoff go in bounded batches that each commit on their own; queued
rows and newer rows stay; 0 days keeps everything; a dry run deletes nothing."""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.errors import InvalidInput
from kazoo import retention as retention_loop_module
from kazoo.retention import prune_loop
from push.models import Delivery, DeliverySource, DeliveryStatus
from push.services import retention_prune

pytestmark = pytest.mark.django_db

NOW = timezone.now()
FINISHED = [s for s in DeliveryStatus.values if s != DeliveryStatus.QUEUED]


def deliveries(n: int, *, age: timedelta, status: str = DeliveryStatus.SENT, now: datetime = NOW) -> list[int]:
    """n deliveries created `age` before `now` (one microsecond apart); their pks."""
    rows = [
        Delivery(created_at=now - age - timedelta(microseconds=i), status=status, source=DeliverySource.AMQP,
                 app_id="com.acme.phone.voip.prod", provider="apple", token=f"{i:064x}", call_id=f"call-{i}")
        for i in range(n)
    ]
    return [d.pk for d in Delivery.objects.bulk_create(rows)]


def remaining() -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Delivery.objects.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def command(*args: str) -> str:
    out = io.StringIO()
    call_command("prune", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_finished_rows_older_than_the_cutoff_go_and_the_rest_stay():
    old = []
    for status in FINISHED:
        old += deliveries(3, age=timedelta(days=31), status=status)
    old_queued = deliveries(4, age=timedelta(days=90), status=DeliveryStatus.QUEUED)
    recent = deliveries(5, age=timedelta(days=29))
    recent_queued = deliveries(2, age=timedelta(seconds=5), status=DeliveryStatus.QUEUED)

    summary = retention_prune(deliveries_days=30, devices_days=0, now=NOW)

    assert summary.deliveries == len(old) == 3 * len(FINISHED)
    assert summary.deliveries_queued_kept == 4
    assert set(Delivery.objects.values_list("pk", flat=True)) == {*old_queued, *recent, *recent_queued}
    line = summary.as_line()
    assert line.startswith(f"prune: deleted {len(old)} deliveries older than 30 days (kept 4 still queued) in 1 "
                           "batch, ")
    assert line.endswith(" s; devices and tokens kept forever (retention 0)")


def test_the_cutoff_is_exact_to_the_microsecond():
    cutoff = NOW - timedelta(days=30)
    Delivery.objects.create(created_at=cutoff, status=DeliveryStatus.SENT, source=DeliverySource.AMQP)
    gone = Delivery.objects.create(created_at=cutoff - timedelta(microseconds=1), status=DeliveryStatus.FAILED,
                                   source=DeliverySource.AMQP)

    assert retention_prune(deliveries_days=30, devices_days=0, now=NOW).deliveries == 1
    assert not Delivery.objects.filter(pk=gone.pk).exists()
    assert Delivery.objects.filter(created_at=cutoff).count() == 1


def test_batches_are_bounded_and_oldest_first():
    oldest = deliveries(5, age=timedelta(days=50))
    deliveries(18, age=timedelta(days=40))
    kept = deliveries(3, age=timedelta(days=1))

    with CaptureQueriesContext(connection) as queries:
        summary = retention_prune(deliveries_days=30, devices_days=0, batch_size=5, now=NOW, stop=None)

    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "push_delivery"')]
    assert summary.deliveries == 23
    assert summary.batches == 5  # 5 + 5 + 5 + 5 + 3
    assert len(deletes) == 5
    for sql in deletes:
        assert "LIMIT 5" in sql
        assert 'ORDER BY U0."created_at" ASC' in sql
        assert ("FOR UPDATE SKIP LOCKED" in sql) == (connection.vendor == "postgresql")
    assert set(Delivery.objects.values_list("pk", flat=True)) == set(kept)
    assert not Delivery.objects.filter(pk__in=oldest).exists()


def test_a_batch_exactly_full_costs_one_more_empty_statement_and_no_more():
    deliveries(10, age=timedelta(days=40))

    summary = retention_prune(deliveries_days=30, devices_days=0, batch_size=5, now=NOW)

    assert (summary.deliveries, summary.batches) == (10, 3)


@pytest.mark.django_db(transaction=True)
def test_each_batch_is_committed_before_the_next_one_starts():
    deliveries(9, age=timedelta(days=40))
    seen_elsewhere: list[int] = []

    def other_session_count() -> None:  # another thread: another database connection
        seen_elsewhere.append(Delivery.objects.count())
        connection.close()

    def before_each_delete(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith('DELETE FROM "push_delivery"'):
            thread = threading.Thread(target=other_session_count)
            thread.start()
            thread.join(10)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(before_each_delete):
        summary = retention_prune(deliveries_days=30, devices_days=0, batch_size=4, now=NOW)

    assert summary.batches == 3
    assert seen_elsewhere == [9, 5, 1]  # what another session sees before each DELETE


def test_stop_ends_the_prune_after_the_batch_in_hand():
    deliveries(12, age=timedelta(days=40))
    stop = threading.Event()

    def stop_after_a_delete(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith("DELETE"):
            stop.set()
        return result

    with connection.execute_wrapper(stop_after_a_delete):
        summary = retention_prune(deliveries_days=30, devices_days=0, batch_size=5, now=NOW, stop=stop)

    assert (summary.deliveries, summary.batches, summary.stopped) == (5, 1, True)
    assert Delivery.objects.count() == 7
    assert ", stopped early; devices and tokens kept forever" in summary.as_line()


class RecordingStop(threading.Event):
    """A stop event that is never set and records the rests asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return False


@pytest.mark.parametrize(("rest", "rests"), [(1.0, 2), (0, 0)])
def test_the_prune_rests_between_batches_in_proportion(rest: float, rests: int):
    deliveries(12, age=timedelta(days=40))
    stop = RecordingStop()

    summary = retention_prune(deliveries_days=30, devices_days=0, batch_size=5, rest=rest, now=NOW, stop=stop)

    assert (summary.deliveries, summary.batches) == (12, 3)
    assert len(stop.waits) == rests  # between batches: not after the last
    assert all(0 < wait < 10 for wait in stop.waits)


def test_retention_zero_deletes_nothing(settings):
    deliveries(3, age=timedelta(days=3000))
    settings.PUSHER_DELIVERY_RETENTION_DAYS = 0
    settings.PUSHER_DEVICE_RETENTION_DAYS = 0

    with CaptureQueriesContext(connection) as queries:
        summary = retention_prune(now=NOW)

    assert Delivery.objects.count() == 3
    assert summary.deliveries == summary.batches == 0
    assert queries.captured_queries == []
    assert summary.as_line() == "prune: nothing to do: deliveries, devices and tokens kept forever (retention 0)"


def test_dry_run_counts_and_deletes_nothing():
    deliveries(7, age=timedelta(days=40), status=DeliveryStatus.FAILED)
    deliveries(2, age=timedelta(days=40), status=DeliveryStatus.QUEUED)
    deliveries(1, age=timedelta(days=2))

    summary = retention_prune(deliveries_days=30, devices_days=0, dry_run=True, now=NOW)

    assert (summary.deliveries, summary.deliveries_queued_kept, summary.batches) == (7, 2, 0)
    assert remaining() == {DeliveryStatus.FAILED: 7, DeliveryStatus.QUEUED: 2, DeliveryStatus.SENT: 1}
    assert summary.as_line() == ("prune: would delete 7 deliveries older than 30 days (kept 2 still queued); "
                                 "devices and tokens kept forever (retention 0)")


def test_the_settings_are_the_defaults(settings):
    deliveries(2, age=timedelta(days=8))
    deliveries(2, age=timedelta(days=6))
    settings.PUSHER_DELIVERY_RETENTION_DAYS = 7
    settings.PUSHER_DEVICE_RETENTION_DAYS = 0

    assert retention_prune(now=NOW).deliveries == 2
    assert Delivery.objects.count() == 2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"deliveries_days": -1}, "deliveries days must be a whole number of days from 0 (keep forever) to 36500, "
                                  "not -1"),
        ({"devices_days": 36501}, "devices days must be a whole number of days from 0 (keep forever) to 36500"),
        ({"deliveries_days": 1.5}, "not 1.5"),
        ({"batch_size": 0}, "batch size must be a whole number from 1 to 100000, not 0"),
        ({"batch_size": True}, "batch size must be a whole number from 1 to 100000, not True"),
        ({"rest": -0.5}, "rest must be a number of seconds per second of work from 0 to 100, not -0.5"),
    ],
)
def test_bad_numbers_are_refused(kwargs: dict, words: str):
    deliveries(1, age=timedelta(days=400))

    with pytest.raises(InvalidInput, match=words.replace("(", r"\(").replace(")", r"\)")):
        retention_prune(**kwargs)
    assert Delivery.objects.count() == 1


# --- manage.py prune ---------------------------------------------------------------------------------


def test_command_prints_one_summary_line(settings):
    settings.PUSHER_DELIVERY_RETENTION_DAYS = 30
    settings.PUSHER_DEVICE_RETENTION_DAYS = 0
    deliveries(6, age=timedelta(days=31))
    deliveries(1, age=timedelta(days=31), status=DeliveryStatus.QUEUED)

    dry = command("--dry-run")
    assert dry == ("dry run: prune: would delete 6 deliveries older than 30 days (kept 1 still queued); "
                   "devices and tokens kept forever (retention 0)\n")
    assert Delivery.objects.count() == 7

    out = command("--batch-size", "4")
    assert out.startswith("prune: deleted 6 deliveries older than 30 days (kept 1 still queued) in 2 batches, ")
    assert out.endswith(" s; devices and tokens kept forever (retention 0)\n") and out.count("\n") == 1
    assert list(Delivery.objects.values_list("status", flat=True)) == [DeliveryStatus.QUEUED]


def test_command_options_override_the_settings(settings):
    settings.PUSHER_DELIVERY_RETENTION_DAYS = 0
    settings.PUSHER_DEVICE_RETENTION_DAYS = 0
    deliveries(2, age=timedelta(days=11))
    deliveries(2, age=timedelta(days=9))

    assert command("--deliveries-days", "0") == (
        "prune: nothing to do: deliveries, devices and tokens kept forever (retention 0)\n"
    )
    assert Delivery.objects.count() == 4
    assert command("--deliveries-days", "10").startswith("prune: deleted 2 deliveries older than 10 days in 1 batch, ")
    assert Delivery.objects.count() == 2


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--batch-size", "0"], "batch size must be a whole number from 1 to 100000, not 0"),
        (["--deliveries-days", "-3"], "deliveries days must be a whole number of days"),
        (["--devices-days", "-1"], "devices days must be a whole number of days"),
        (["--batch-size", "lots"], "invalid int value: 'lots'"),
        (["--rest", "-1"], "rest must be a number of seconds per second of work from 0 to 100, not -1.0"),
    ],
)
def test_command_refuses_bad_options(args: list[str], words: str):
    deliveries(1, age=timedelta(days=400))

    with pytest.raises(CommandError, match=words):
        command(*args)
    assert Delivery.objects.count() == 1


# --- The consumer's loop ------------------------------------------------------------------------------


def test_prune_loop_off_at_zero_and_stops(settings):
    settings.PUSHER_PRUNE_INTERVAL_S = 0
    started = time.monotonic()
    prune_loop(threading.Event())  # returns at once
    settings.PUSHER_PRUNE_INTERVAL_S = 3600
    stop = threading.Event()
    stop.set()
    prune_loop(stop)  # returns at once when stopping
    assert time.monotonic() - started < 5


@pytest.mark.django_db(transaction=True)
def test_prune_loop_prunes_every_interval_and_survives_a_failure(settings, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture):
    settings.PUSHER_PRUNE_INTERVAL_S = 1
    settings.PUSHER_DELIVERY_RETENTION_DAYS = 30
    monkeypatch.setattr(retention_loop_module, "PRUNE_FIRST_DELAY_S", 0.01)
    deliveries(3, age=timedelta(days=31))
    calls: list[str] = []

    def prune_failing_once(**kwargs: Any) -> Any:
        calls.append("call")
        if len(calls) == 1:
            raise RuntimeError("database gone")
        return retention_prune(**kwargs)

    monkeypatch.setattr(retention_loop_module, "retention_prune", prune_failing_once)
    stop = threading.Event()
    thread = threading.Thread(target=prune_loop, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while Delivery.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)

    assert not thread.is_alive()
    assert not Delivery.objects.exists()
    assert len(calls) >= 2
    assert "prune failed (RuntimeError: database gone); next try in 1 s" in caplog.text


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="advisory lock: PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_one_prune_at_a_time_across_sessions(caplog: pytest.LogCaptureFixture):
    from push.services import PruneRunning
    from push.services.retention import PRUNE_LOCK_KEY

    deliveries(3, age=timedelta(days=40))
    locked, release = threading.Event(), threading.Event()

    def another_prune() -> None:  # another process's session holding the lock
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [PRUNE_LOCK_KEY])
            locked.set()
            release.wait(10)
            cursor.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_LOCK_KEY])
        connection.close()

    thread = threading.Thread(target=another_prune)
    thread.start()
    try:
        assert locked.wait(10)
        with pytest.raises(PruneRunning, match="another prune is running"):
            retention_prune(deliveries_days=30, devices_days=0, now=NOW)
        with pytest.raises(CommandError, match=r"^another prune is running \(a consumer's, or a manage.py prune\)"):
            command("--deliveries-days", "30")
        assert Delivery.objects.count() == 3
    finally:
        release.set()
        thread.join(10)

    assert retention_prune(deliveries_days=30, devices_days=0, now=NOW).deliveries == 3
    assert retention_prune(deliveries_days=30, devices_days=0, now=NOW).deliveries == 0  # the lock was let go


# --- the webhook delivery log and cleared alerts go with the delivery log ---------------------------


def _webhook_rows(status: str, n: int, *, age: timedelta) -> None:
    from hooks.models import WebhookDelivery

    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(subscription_name="ops", event_type="token.deactivated", event_key=f"{status}-{age}-{i}",
                        status=status, created_at=NOW - age)
        for i in range(n)
    )


def _alert(key: str, *, active: bool, cleared_age: timedelta | None) -> None:
    from hooks.models import Alert

    cleared_at = None if cleared_age is None else NOW - cleared_age
    Alert.objects.create(key=key, event_type="consumer.down", active=active, summary=key,
                         raised_at=NOW - timedelta(days=90), cleared_at=cleared_at)


def _hooks_fixture() -> None:
    from hooks.models import WebhookDeliveryStatus as S

    _webhook_rows(S.DELIVERED, 3, age=timedelta(days=31))
    _webhook_rows(S.GAVE_UP, 2, age=timedelta(days=31))
    _webhook_rows(S.PENDING, 1, age=timedelta(days=31))  # still to be sent: kept
    _webhook_rows(S.FAILED, 1, age=timedelta(days=31))  # being retried: kept
    _webhook_rows(S.DELIVERED, 4, age=timedelta(days=29))
    _alert("old-cleared", active=False, cleared_age=timedelta(days=40))
    _alert("recently-cleared", active=False, cleared_age=timedelta(days=3))
    _alert("still-up", active=True, cleared_age=None)


def _hooks_left() -> tuple[dict[str, int], set[str]]:
    from hooks.models import Alert, WebhookDelivery

    counts: dict[str, int] = {}
    for status in WebhookDelivery.objects.values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts, set(Alert.objects.values_list("key", flat=True))


def test_done_webhook_deliveries_and_cleared_alerts_age_out_with_the_delivery_log():
    _hooks_fixture()

    dry = retention_prune(deliveries_days=30, devices_days=0, dry_run=True, now=NOW)
    assert (dry.webhook_deliveries, dry.alerts) == (5, 1)
    assert _hooks_left()[0] == {"delivered": 7, "gave_up": 2, "pending": 1, "failed": 1}

    summary = retention_prune(deliveries_days=30, devices_days=0, batch_size=2, now=NOW)

    assert (summary.webhook_deliveries, summary.alerts) == (5, 1)
    # The deliveries' one statement (nothing to delete), webhook deliveries 2 + 2 + 1, one alert.
    assert summary.batches == 5
    assert _hooks_left() == ({"delivered": 4, "pending": 1, "failed": 1}, {"recently-cleared", "still-up"})
    assert summary.as_line().startswith("prune: deleted 0 deliveries older than 30 days; 5 webhook deliveries and "
                                        "1 cleared alerts older than 30 days in 5 batches, ")


def test_the_prune_command_ages_out_webhook_deliveries_too(settings):
    settings.PUSHER_DELIVERY_RETENTION_DAYS = 30
    settings.PUSHER_DEVICE_RETENTION_DAYS = 0
    _hooks_fixture()

    out = command()

    assert out.startswith("prune: deleted 0 deliveries older than 30 days; 5 webhook deliveries and 1 cleared alerts ")
    assert _hooks_left() == ({"delivered": 4, "pending": 1, "failed": 1}, {"recently-cleared", "still-up"})


def test_delivery_retention_zero_keeps_the_webhook_log_too():
    _hooks_fixture()

    summary = retention_prune(deliveries_days=0, devices_days=0, now=NOW)

    assert (summary.webhook_deliveries, summary.alerts) == (0, 0)
    assert _hooks_left()[0] == {"delivered": 7, "gave_up": 2, "pending": 1, "failed": 1}
