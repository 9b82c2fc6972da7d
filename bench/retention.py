"""Retention benchmark: `python -m bench.retention [--rows 10000000] [--runs 7]`.

Fills the delivery log of its own PostgreSQL database (DATABASE_URL, default
`pusher_bench_retention`) with N rows server-side (INSERT ... SELECT generate_series, with the
table's secondary indexes dropped during the fill and rebuilt after, then VACUUM ANALYZE, as
autovacuum would leave a settled table): created over the last 60 days in insertion order,
90% sent and the rest token_invalid, failed, expired, duplicate and a few orphaned queued rows;
70% APNs, 30% FCM over 20 apps; accounts skewed (a few big ones, many small); tokens and devices
per account. Plus `--devices` devices (a fifth of them dead: no push object, inactive token, not
seen for 90 days).

Then, with a logged-in staff user through Django's test client (the whole request: middleware,
queries, templates, serialisation), `--runs` timed requests each (after one untimed) of the
operations dashboard, the API's delivery list (first page, and filtered), the admin's delivery
changelist (plain, and filtered), and /metrics: median and max, SQL statements and the slowest
one. Then the prune alone (`retention_prune`, the one `manage.py prune` and the consumer call):
rows/s, total, and the time of each DELETE batch. Then the same pages again, right after the prune
and after VACUUM ANALYZE. Last, the consumer's writes (the push lane's claim and outcome functions)
at --writer-rate rows/s, alone, then beside a prune of a further slice (down to --writer-days) at full
speed, then beside one of the next slice at the default rest: what a prune costs the push path.

Prints figures only; nothing is asserted. `--reuse` keeps a table already filled with about --rows
rows (a change to the pages measured without refilling; migrations that build an index on the filled
log are timed in the set-up line), `--no-prune` measures the pages only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import say, setup, table

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/pusher_bench_retention"
DAYS_SPREAD = 60
APPS = 20
ACCOUNTS = 2000
DEVICES_PER_ACCOUNT = 25
FILL_CHUNK = 1_000_000
# A page slower than this (a full scan of the log) is timed SLOW_PAGE_RUNS times, not --runs; one
# slower than VERY_SLOW_PAGE_S only once.
SLOW_PAGE_S = 5.0
SLOW_PAGE_RUNS = 3
VERY_SLOW_PAGE_S = 30.0
WRITER_ALONE_S = 20.0


def environ_defaults() -> None:
    """Its own database, the hosts its page requests use, fewer log lines; DEBUG is off as in every
    benchmark (`bench_environ`)."""
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
    os.environ.setdefault("LOG_LEVEL", "WARNING")


# --- fill ---------------------------------------------------------------------------------------

# One row per g: created in order over DAYS_SPREAD days (a second of jitter), as the push path
# writes them; statuses, providers, apps, accounts (skewed: r_acct cubed), devices and tokens.
_FILL_SQL = """
INSERT INTO push_delivery (
    created_at, finished_at, deadline_at, claimed_at, source, msg_id, reply_to, replied_at, call_id, account_id,
    device_id, push_app_id, app_id, provider, token, token_type, push_type, status, http_status, reason,
    provider_message_id, attempts, latency_ms, error)
SELECT created_at,
       CASE WHEN status = 'queued' THEN NULL ELSE created_at + latency * interval '1 millisecond' END,
       created_at + interval '20 seconds', created_at, 'amqp', md5('msg' || g), '', NULL,
       md5('call' || g) || '@10.0.0.1', md5('acct' || acct), md5('dev' || dev), (%(app_ids)s::bigint[])[app + 1],
       'com.example.app' || app || CASE WHEN apple THEN '.voip.prod' ELSE '' END,
       CASE WHEN apple THEN 'apple' ELSE 'firebase' END,
       CASE WHEN apple THEN md5('tok' || dev) || md5('tok2' || dev)
            ELSE md5('fcm' || dev) || ':APA91b' || md5('f1' || dev) || md5('f2' || dev) || md5('f3' || dev) END,
       CASE WHEN apple THEN 'apple' ELSE 'firebase' END, CASE WHEN apple THEN 'voip' ELSE 'data' END,
       status,
       CASE status WHEN 'sent' THEN 200 WHEN 'token_invalid' THEN CASE WHEN apple THEN 410 ELSE 404 END
                   WHEN 'failed' THEN 500 END,
       CASE status WHEN 'token_invalid' THEN CASE WHEN apple THEN 'Unregistered' ELSE 'UNREGISTERED' END
                   WHEN 'failed' THEN 'InternalServerError' WHEN 'expired' THEN 'deadline passed'
                   WHEN 'duplicate' THEN 'Msg-ID already handled' ELSE '' END,
       CASE WHEN status = 'sent' THEN md5('apns' || g) ELSE '' END,
       CASE WHEN status = 'failed' THEN 3 ELSE 1 END,
       CASE WHEN status IN ('sent', 'token_invalid', 'failed') THEN latency END,
       CASE WHEN status = 'failed' THEN 'HTTP 500 from the provider' ELSE '' END
FROM (
    SELECT g, acct, acct * %(per_account)s + floor(r_dev * %(per_account)s)::int AS dev,
           (acct * %(per_account)s + floor(r_dev * %(per_account)s)::int) %% %(apps)s AS app,
           (acct * %(per_account)s + floor(r_dev * %(per_account)s)::int) %% %(apps)s < %(apple_apps)s AS apple,
           %(t0)s::timestamptz + (g * %(step)s + r_jitter) * interval '1 second' AS created_at,
           5 + r_lat * r_lat * 200 AS latency,
           CASE WHEN r_status < 0.9 THEN 'sent' WHEN r_status < 0.94 THEN 'token_invalid'
                WHEN r_status < 0.97 THEN 'failed' WHEN r_status < 0.995 THEN 'expired'
                WHEN r_status < 0.9999 THEN 'duplicate' ELSE 'queued' END AS status
    FROM (
        SELECT g, floor(%(accounts)s * power(random(), 3))::int AS acct, random() AS r_dev, random() AS r_lat,
               random() AS r_status, random() - 0.5 AS r_jitter
        FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
    ) AS r
) AS d
"""

_DEVICES_SQL = """
INSERT INTO registry_device (
    account_id, device_id, username, realm, push, push_changed_at, rule_name, registration_digest, sync_status,
    push_synced_at, sync_attempts, sync_next_at, sync_error, last_user_agent, last_contact, last_proxy_path,
    last_registration_at, last_seen_at, created_at)
SELECT md5('acct' || (g / %(per_account)s)), md5('dev' || g), 'user' || g, 'sip.example.com',
       CASE WHEN dead THEN NULL ELSE jsonb_build_object('Token-App', 'com.example.app1.voip.prod',
            'Token-Type', 'apple', 'Token-ID', md5('tok' || g) || md5('tok2' || g)) END,
       seen, 'AcmePhone', '', 'synced', seen, 0, NULL, '', 'AcmePhone/1.0', '<sip:user@10.0.0.9>', '', seen, seen,
       seen - interval '30 days'
FROM (SELECT g, g %% 5 = 0 AS dead,
             now() - CASE WHEN g %% 5 = 0 THEN interval '90 days' ELSE random() * interval '20 days' END AS seen
      FROM generate_series(1, %(devices)s) AS g) AS d
"""

_TOKENS_SQL = """
INSERT INTO registry_pushtoken (device_id, token, token_type, app, kind, sandbox, proxy, active, deactivated_at,
                                deactivated_reason, first_seen_at, last_seen_at)
SELECT id, md5('tok' || device_id) || md5('tok2' || device_id), 'apple', 'com.example.app1.voip.prod', 'voip', false,
       '', push IS NOT NULL, CASE WHEN push IS NULL THEN last_seen_at END,
       CASE WHEN push IS NULL THEN 'Unregistered' ELSE '' END, created_at, last_seen_at
FROM registry_device
"""


def _fill(rows: int, devices: int) -> None:
    from django.db import connection

    from push.models import Provider, PushApp

    app_ids = []
    for n in range(APPS):
        apple = n < APPS * 7 // 10
        app, _ = PushApp.objects.get_or_create(
            app_id=f"com.example.app{n}" + (".voip.prod" if apple else ""),
            provider=Provider.APPLE if apple else Provider.FIREBASE,
        )
        app_ids.append(app.pk)
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO OFF")
        cursor.execute("SET maintenance_work_mem TO '1GB'")
        cursor.execute("TRUNCATE push_delivery, registry_pushtoken, registry_device, kazoo_devicereconcile "
                       "RESTART IDENTITY")
        cursor.execute(
            "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE c.conrelid = 'push_delivery'::regclass AND c.contype IN ('u', 'f')"
        )
        constraints = cursor.fetchall()
        for name, _ in constraints:
            cursor.execute(f'ALTER TABLE push_delivery DROP CONSTRAINT "{name}"')
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'push_delivery' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'push_delivery'::regclass)"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        t0 = time.time() - DAYS_SPREAD * 86400
        for first in range(0, rows, FILL_CHUNK):
            last = min(first + FILL_CHUNK, rows) - 1
            cursor.execute(_FILL_SQL, {
                "app_ids": app_ids, "per_account": DEVICES_PER_ACCOUNT, "apps": APPS, "apple_apps": APPS * 7 // 10,
                "accounts": ACCOUNTS, "t0": _timestamp(t0), "step": DAYS_SPREAD * 86400 / rows,
                "first": first, "last": last,
            })
            say(f"  filled {last + 1:,} rows ({time.monotonic() - started:.0f} s)")
        inserted = time.monotonic()
        for _, definition in indexes:
            cursor.execute(definition)
        for name, definition in constraints:
            cursor.execute(f'ALTER TABLE push_delivery ADD CONSTRAINT "{name}" {definition}')
        indexed = time.monotonic()
        cursor.execute(_DEVICES_SQL, {"devices": devices, "per_account": DEVICES_PER_ACCOUNT})
        cursor.execute(_TOKENS_SQL)
        cursor.execute("VACUUM ANALYZE push_delivery")
        cursor.execute("VACUUM ANALYZE registry_device")
        cursor.execute("VACUUM ANALYZE registry_pushtoken")
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('push_delivery'))")
        size = cursor.fetchone()[0]
    say(f"  {rows:,} deliveries in {inserted - started:.0f} s ({rows / (inserted - started):,.0f} rows/s), "
        f"{len(indexes)} indexes and {len(constraints)} constraints rebuilt in {indexed - inserted:.0f} s, "
        f"{devices:,} devices; VACUUM ANALYZE; total {time.monotonic() - started:.0f} s; table with indexes {size}")


def _timestamp(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC)


# --- pages --------------------------------------------------------------------------------------


@dataclass
class PageResult:
    label: str
    status: int
    times_ms: list[float]
    queries: int
    slowest_ms: float
    slowest_sql: str


class QueryTimer:
    """Times every SQL statement of a request (connection.execute_wrapper)."""

    def __init__(self) -> None:
        self.times: list[tuple[float, str]] = []

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.times.append(((time.perf_counter() - started) * 1000, sql))


def pages_measure(client: Any, pages: Sequence[tuple[str, str]], runs: int) -> list[PageResult]:
    """Each page requested once untimed (caches, the first template load), then timed `runs` times;
    a page slower than SLOW_PAGE_S timed SLOW_PAGE_RUNS times, and one slower than VERY_SLOW_PAGE_S
    (full scans of the log) only once: its first request."""
    from django.db import connection

    results = []
    timer = QueryTimer()
    for label, url in pages:
        timer.times.clear()
        with connection.execute_wrapper(timer):
            started = time.perf_counter()
            response = client.get(url)
            first_ms = (time.perf_counter() - started) * 1000
        times = [first_ms] if first_ms > VERY_SLOW_PAGE_S * 1000 else []
        count = 0 if times else SLOW_PAGE_RUNS if first_ms > SLOW_PAGE_S * 1000 else runs
        for _ in range(min(runs, count)):
            timer.times.clear()
            with connection.execute_wrapper(timer):
                started = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - started) * 1000)
        slowest_ms, slowest_sql = max(timer.times, default=(0.0, ""))
        results.append(PageResult(label, response.status_code, times, len(timer.times), slowest_ms,
                                  _sql_short(slowest_sql)))
    return results


def _sql_short(sql: str, limit: int = 90) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pages_report(title: str, results: list[PageResult]) -> None:
    say(f"\n{title} (load average {os.getloadavg()[0]:.2f})")
    rows = [
        (r.label, r.status, len(r.times_ms), statistics.median(r.times_ms), max(r.times_ms), r.queries, r.slowest_ms,
         r.slowest_sql)
        for r in results
    ]
    say(table(["page", "HTTP", "runs", "median ms", "max ms", "SQL", "slowest SQL ms", "slowest SQL (last run)"],
              rows))


def pages(big_account: str, small_account: str, device: str, call_id: str) -> list[tuple[str, str]]:
    return [
        ("dashboard /admin/dashboard/", "/admin/dashboard/"),
        ("dashboard summary fragment", "/admin/dashboard/?fragment=summary"),
        ("API deliveries, first page", "/api/v1/deliveries/"),
        ("API deliveries ?status=failed", "/api/v1/deliveries/?status=failed"),
        ("API deliveries ?account=<biggest>", f"/api/v1/deliveries/?account={big_account}"),
        ("API deliveries ?account=<small>", f"/api/v1/deliveries/?account={small_account}"),
        ("API deliveries ?device=<one>", f"/api/v1/deliveries/?device={device}"),
        ("API deliveries ?ordering=-latency_ms", "/api/v1/deliveries/?ordering=-latency_ms"),
        ("API ?account=<small>&ordering=-latency_ms",
         f"/api/v1/deliveries/?account={small_account}&ordering=-latency_ms"),
        ("admin deliveries changelist", "/admin/push/delivery/"),
        ("admin deliveries ?status=failed", "/admin/push/delivery/?status__exact=failed"),
        ("admin deliveries ?q=<call id>", f"/admin/push/delivery/?q={call_id}"),
        ("/metrics", "/metrics"),
    ]


# --- prune --------------------------------------------------------------------------------------


def prune_measure(days: int, devices_days: int, batch_size: int, rest: float) -> None:
    from django.db import connection

    from push.services import retention_prune

    timer = QueryTimer()
    with connection.execute_wrapper(timer):
        summary = retention_prune(deliveries_days=days, devices_days=devices_days, batch_size=batch_size, rest=rest)
    deletes = [ms for ms, sql in timer.times if sql.startswith("DELETE")]
    seconds = summary.seconds
    say(f"\nprune alone, rest {rest:g} (load average {os.getloadavg()[0]:.2f}): {summary.as_line()}")
    rows = summary.deliveries + summary.devices + summary.tokens
    say(table(
        ["rows deleted", "seconds", "rows/s", "batches", "batch median ms", "batch p99 ms", "batch max ms"],
        [(f"{rows:,}", seconds, f"{rows / max(seconds, 1e-9):,.0f}", summary.batches, statistics.median(deletes),
          sorted(deletes)[int(len(deletes) * 0.99) - 1 if len(deletes) > 1 else 0], max(deletes))],
    ))


class Writer:
    """The consumer's writes to the delivery log at a steady rate, in a thread: claims
    (`deliveries_insert`, asynchronous commit, its own connection) then outcomes
    (`deliveries_save_finished`), `batch` rows every `batch / rate` seconds; the time of each
    batch's two writes is kept."""

    def __init__(self, rate: float, batch: int = 10) -> None:
        import threading

        self.rate, self.batch = rate, batch
        self.times_ms: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-writer", daemon=True)
        self.serial = 0

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        from django.db import connection
        from django.utils import timezone

        from push.models import Delivery, DeliveryStatus
        from push.services.deliveries import claim_connection_close, deliveries_insert, deliveries_save_finished

        interval = self.batch / self.rate
        next_at = time.monotonic()
        try:
            while not self.stop.is_set():
                rows = []
                for _ in range(self.batch):
                    self.serial += 1
                    now = timezone.now()
                    rows.append(Delivery(
                        created_at=now, claimed_at=now, deadline_at=now, source="amqp",
                        msg_id=f"bench-writer-{os.getpid()}-{time.time_ns()}-{self.serial}",
                        call_id=f"writer-{self.serial}", app_id="com.example.app1.voip.prod", provider="apple",
                        token="ab" * 32, token_type="apple",
                    ))
                started = time.perf_counter()
                deliveries_insert(rows, durable=False)
                for row in rows:
                    row.status, row.finished_at, row.attempts = DeliveryStatus.SENT, timezone.now(), 1
                deliveries_save_finished(rows)
                self.times_ms.append((time.perf_counter() - started) * 1000)
                next_at += interval
                self.stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            claim_connection_close()
            connection.close()

    def line(self, seconds: float) -> str:
        from bench.common import percentile

        return (f"{len(self.times_ms) * self.batch / max(seconds, 1e-9):,.0f} rows/s written in batches of "
                f"{self.batch}: claim + outcome per batch median {statistics.median(self.times_ms):.1f} ms, "
                f"p99 {percentile(self.times_ms, 99):.1f} ms, max {max(self.times_ms):.1f} ms")


def writer_phase(days: int, batch_size: int, rate: float) -> None:
    """The consumer's writes alone for a while, then beside a prune of the next slice at full speed
    (rest 0, down to `days`), then beside one of the slice after at the default rest (down to days / 2)."""
    from push.services import PRUNE_REST_DEFAULT, retention_prune

    say(f"\nwrites beside the prune (load average {os.getloadavg()[0]:.2f}): a writer at {rate:g} rows/s "
        "(the push lane's claim and outcome writes)")
    with Writer(rate) as alone:
        time.sleep(WRITER_ALONE_S)
    say(f"  writer alone, {WRITER_ALONE_S:g} s: {alone.line(WRITER_ALONE_S)}")
    for rest, down_to in ((0.0, days), (PRUNE_REST_DEFAULT, days // 2)):
        with Writer(rate) as beside:
            started = time.monotonic()
            summary = retention_prune(deliveries_days=down_to, devices_days=0, batch_size=batch_size, rest=rest)
            seconds = time.monotonic() - started
        say(f"  writer beside a prune at rest {rest:g} (load average {os.getloadavg()[0]:.2f}), {seconds:.0f} s: "
            f"{beside.line(seconds)}")
        say(f"    the prune meanwhile: {summary.deliveries:,} deliveries down to {down_to} days, "
            f"{summary.deliveries / max(summary.seconds, 1e-9):,.0f} rows/s, {summary.batches} batches")


def busy_hour(rows: int, client: Any, runs: int) -> None:
    """`rows` more deliveries created within the last hour (1,000 pushes/s is 3.6 million), then the
    pages that read that hour: the dashboard's figures cover the last hour whatever the log's length."""
    from django.db import connection

    from push.models import PushApp

    app_ids = list(PushApp.objects.order_by("pk").values_list("pk", flat=True)[:APPS])
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM push_delivery")
        first = cursor.fetchone()[0] + 1
        started = time.monotonic()
        cursor.execute("SET synchronous_commit TO OFF")
        now = time.time()
        for chunk in range(first, first + rows, FILL_CHUNK):
            last = min(chunk + FILL_CHUNK, first + rows) - 1
            cursor.execute(_FILL_SQL, {
                "app_ids": app_ids, "per_account": DEVICES_PER_ACCOUNT, "apps": APPS, "apple_apps": APPS * 7 // 10,
                "accounts": ACCOUNTS, "t0": _timestamp(now - 3600 - first * 3600 / rows), "step": 3600 / rows,
                "first": chunk, "last": last,
            })
        cursor.execute("ANALYZE push_delivery")
    say(f"\n{rows:,} more deliveries in the last hour ({rows / 3600:,.0f}/s), inserted with the indexes in "
        f"{time.monotonic() - started:.0f} s, ANALYZE")
    pages_report(f"pages reading the last hour with {rows:,} deliveries in it, {runs} runs each", pages_measure(
        client, [("dashboard /admin/dashboard/", "/admin/dashboard/"),
                 ("dashboard summary fragment", "/admin/dashboard/?fragment=summary"),
                 ("API deliveries, first page", "/api/v1/deliveries/"), ("/metrics", "/metrics")], runs,
    ))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="deliveries to fill (default 10,000,000)")
    parser.add_argument("--devices", type=int, default=100_000, help="devices to fill, a fifth dead")
    parser.add_argument("--runs", type=int, default=7, help="timed requests per page")
    parser.add_argument("--days", type=int, default=30, help="delivery retention the prune applies (default 30)")
    parser.add_argument("--devices-days", type=int, default=30, help="device retention the prune applies")
    parser.add_argument("--batch-size", type=int, default=5000, help="rows per DELETE (default 5000)")
    parser.add_argument("--rest", type=float, default=0.0,
                        help="the prune alone rests this long per second of work between batches (default 0: its "
                             "full speed; the consumer's default is 1)")
    parser.add_argument("--reuse", action="store_true", help="keep an existing fill of about --rows rows")
    parser.add_argument("--no-prune", action="store_true", help="measure the pages only")
    parser.add_argument("--busy-hour-rows", type=int, default=0,
                        help="last, this many more deliveries in the last hour and the pages that read it (3600000: "
                             "1,000 pushes/s); default 0: off")
    parser.add_argument("--writer-rate", type=float, default=500.0,
                        help="last, a writer at this many rows/s alone, then beside a prune of --writer-days more "
                             "days (0: skip)")
    parser.add_argument("--writer-days", type=int, default=20,
                        help="the writer phase prunes down to this many days at rest 0, then to half as many at "
                             "the default rest")
    args = parser.parse_args(argv)
    if not 1000 <= args.rows <= 100_000_000 or not 1 <= args.runs <= 100:
        parser.error("--rows must be 1,000..100,000,000 and --runs 1..100")

    environ_defaults()
    # WhiteNoise notes, with DEBUG off, that nobody ran collectstatic (the pages do not need it).
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    started = time.monotonic()
    setup(log_name="bench_retention")  # migrates: on a filled log, a new index's build is timed here
    setup_s = time.monotonic() - started
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    say(f"retention bench: database {connection.settings_dict['NAME']} on PostgreSQL "
        f"{connection.cursor().connection.info.server_version}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}; set-up and migrations {setup_s:.1f} s")
    estimate = _estimated_rows()
    if args.reuse and abs(estimate - args.rows) <= args.rows * 0.02:
        say(f"  reusing the fill: about {estimate:,} deliveries")
    else:
        say(f"filling {args.rows:,} deliveries over {DAYS_SPREAD} days and {args.devices:,} devices")
        _fill(args.rows, args.devices)

    user_model = get_user_model()
    user = user_model.objects.filter(username="bench-staff").first() or user_model.objects.create_superuser(
        "bench-staff", "bench@example.com", "bench-staff-password-0"
    )
    client = Client()
    client.force_login(user)
    big = _md5("acct0")  # the fill's biggest account (about 8% of the rows)
    small = _md5(f"acct{ACCOUNTS - 7}")
    device = _md5(f"dev{3 * DEVICES_PER_ACCOUNT + 5}")
    call_id = _md5(f"call{args.rows - 12345}") + "@10.0.0.1"  # a recent push: kept by the prune
    page_list = pages(big, small, device, call_id)

    pages_report(f"pages with {_estimated_rows():,} deliveries (estimate), {args.runs} runs each",
                 pages_measure(client, page_list, args.runs))
    if args.no_prune:
        if args.busy_hour_rows:
            busy_hour(args.busy_hour_rows, client, args.runs)
        return
    prune_measure(args.days, args.devices_days, args.batch_size, args.rest)
    pages_report(f"pages right after the prune, {_estimated_rows():,} deliveries (estimate)",
                 pages_measure(client, page_list, args.runs))
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE push_delivery")
    say(f"\nVACUUM ANALYZE push_delivery: {time.monotonic() - started:.1f} s")
    pages_report(f"pages after VACUUM ANALYZE, {_estimated_rows():,} deliveries (estimate)",
                 pages_measure(client, page_list, args.runs))
    if args.writer_rate > 0:
        writer_phase(args.writer_days, args.batch_size, args.writer_rate)
    if args.busy_hour_rows:
        busy_hour(args.busy_hour_rows, client, args.runs)


def _md5(text: str) -> str:
    """md5 hex, as the fill's SQL names its accounts, devices and calls."""
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()


def _estimated_rows() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'push_delivery'::regclass")
        return max(int(cursor.fetchone()[0]), 0)


if __name__ == "__main__":
    main()
