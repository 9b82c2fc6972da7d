"""push_req benchmark: `python -m bench.push [--rate 100 --seconds 10] [--throughput 5000] [--delay-ms 30]`,
or `python -m bench.push --steady 100,500 --seconds 10 --repeat 3 [--disk-busy]` (bench/steady.py),
or `python -m bench.push --first-push --repeat 5`: first push with and without warm-up (bench/firstpush.py),
or `python -m bench.push --peer --repeat 3`: B against django-push-notifications' bulk send (bench/peer.py).

The fake APNs (HTTP/2 + TLS, tests/fakes/apns.py) runs in this process and answers every push
after --delay-ms. The consumer runs as it does in production, as a separate process
(`manage.py runconsumer --queue <bench queue> --prefetch N`) trusting the fake's CA, on the same
database; its RSS is sampled from /proc. Push_req messages are the Kamailio sample with a unique
Msg-ID and Call-ID, published as Kamailio publishes them; `Payload` carries `bench_sent_ns`,
which APNs receives at the top level of the body. Runs with DEBUG off (production-shaped) unless
the environment sets DEBUG, as every benchmark here does.

  A (latency)     push_req at a fixed rate (--rate/s for --seconds s); publish-to-receipt at the fake
  B (throughput)  --throughput push_req published as fast as possible; pushes/s received at the fake
                  (first to last receipt) and how many deliveries ended `sent` in the database
  steady          --steady RATES: instead of A and B, each rate for --seconds, --repeat times (rates
                  alternating), one line per run: publish-to-receipt p50/p99/max, consumer CPU per
                  push, load average; --disk-busy adds a dd/fsync loop beside PostgreSQL's WAL

--prefetch takes a comma-separated list (e.g. 200,1000): a fresh consumer per value. The push engine
keeps every unacked push_req in flight and batches its database writes by what is in hand, so
the prefetch is the consumer's main throughput knob.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    CpuMeter,
    broker_channel,
    broker_cleanup,
    cpu_seconds_tree,
    database_label,
    log_problems,
    percentile,
    process_tree,
    require_loopback,
    rss_mb,
    run_id,
    say,
    setup,
    table,
    wait_until,
)
from bench.profile import Profiler, summary

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "com.acme.phone.voip.prod"
TARGET_PUSHES_PER_S = 1000
TARGET_P99_MS = 25.0
TARGET_RSS_MB = 200.0
WARMUP_PUSHES = 5


# --- the consumer process -----------------------------------------------------------------


@dataclass
class Consumer:
    process: subprocess.Popen[bytes]
    queue: str
    dead_letter_exchange: str
    dead_letter_queue: str
    log_path: str
    processes: int = 1
    rss_max_mb: float = 0.0
    db_connections_max: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def sample_start(self) -> None:
        def sample() -> None:
            import psycopg
            from django.conf import settings

            db = settings.DATABASES["default"]
            conn = None
            with contextlib.suppress(Exception):
                conn = psycopg.connect(
                    host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"],
                    password=db.get("PASSWORD") or None, autocommit=True, connect_timeout=5,
                )
            n = 0
            while not self._stop.wait(0.1):
                self.rss_max_mb = max(self.rss_max_mb, sum(rss_mb(pid)[0] for pid in process_tree(self.pid)))
                n += 1
                if conn is not None and n % 5 == 0:
                    with contextlib.suppress(Exception):
                        row = conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        ).fetchone()
                        # Less this sampler's own connection.
                        self.db_connections_max = max(self.db_connections_max, int(row[0]) - 1)
            if conn is not None:
                conn.close()

        self._sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        self._sampler.start()

    def stop(self) -> tuple[int | None, float, float]:
        """SIGTERM, wait (bounded), SIGKILL if needed. Returns (exit code, seconds to stop, VmHWM MB;
        summed over the processes under --processes)."""
        tree = process_tree(self.pid)
        hwm = sum(rss_mb(pid)[1] for pid in tree)
        self.rss_max_mb = max(self.rss_max_mb, sum(rss_mb(pid)[0] for pid in tree))
        started = time.monotonic()
        code: int | None = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                say(f"  ! consumer {self.pid} did not stop within 45 s of SIGTERM: killed")
                self.process.kill()
                self.process.wait(timeout=10)
        else:
            code = self.process.returncode
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        return code, time.monotonic() - started, hwm


def consumer_start(
    *, run: str, workers: int, prefetch: int, ca_file: str, extra_env: dict[str, str] | None = None,
    processes: int = 1,
) -> Consumer:
    suffix = f"{run}_p{prefetch}"
    queue = f"pusher_bench_{suffix}"
    dlx, dlq = f"pusher_bench_dlx_{suffix}", f"pusher_bench_dlq_{suffix}"
    log_path = f"/tmp/bench_push_{suffix}.consumer.log"
    env = dict(os.environ)
    env.update({
        "PUSHER_APNS_CA_FILE": ca_file,
        "PUSHER_DEAD_LETTER_EXCHANGE": dlx,
        "PUSHER_DEAD_LETTER_QUEUE": dlq,
        # pusher's own queue declaration (kazoo.topology.PUSHER_OWN_QUEUE): a burst leaves thousands
        # of messages ready, which Kazoo's 100-message limit would drop.
        "PUSHER_QUEUE_AUTO_DELETE": "0",
        "PUSHER_QUEUE_MAX_LENGTH": "none",
        "PUSHER_QUEUE_MESSAGE_TTL_MS": "none",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra_env or {})
    command = [sys.executable, "manage.py", "runconsumer", "--queue", queue, "--workers", str(workers),
               "--prefetch", str(prefetch), "--processes", str(processes)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    consumer = Consumer(process=process, processes=processes, queue=queue, dead_letter_exchange=dlx,
                        dead_letter_queue=dlq, log_path=log_path)
    consumer.sample_start()
    if not _wait_consuming(consumer, timeout=60):
        consumer.stop()
        raise SystemExit(f"the consumer did not start consuming from {queue} within 60 s; see {log_path}")
    return consumer


def _wait_consuming(consumer: Consumer, *, timeout: float) -> bool:
    import pika.exceptions

    deadline = time.monotonic() + timeout
    with broker_channel() as channel:
        while time.monotonic() < deadline:
            if consumer.process.poll() is not None:
                return False
            try:
                if channel.queue_declare(consumer.queue, passive=True).method.consumer_count >= consumer.processes:
                    return True
            except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet
                channel = channel.connection.channel()
            time.sleep(0.1)
    return False


# --- publishing -----------------------------------------------------------------------------


def push_body(template: dict[str, Any], *, tag: str, index: int) -> dict[str, Any]:
    body = copy.deepcopy(template)
    call_id = str(uuid.uuid4())
    body["Msg-ID"] = f"{tag}-{index:07d}"
    body["Call-ID"] = call_id
    body["Payload"]["call-id"] = call_id
    body["Payload"]["bench_run"] = tag
    return body


def _publish(channel: Any, body: dict[str, Any], properties: Any, queue: str | None = None) -> None:
    # As Kamailio's kazoo module: exchange `pushes`, key notification.push.<type>.<token>,
    # content type only. With `queue`: straight to that queue (the default exchange), where no
    # consumer bound to `pushes` sees it.
    body["Payload"]["bench_sent_ns"] = time.time_ns()
    if queue is not None:
        channel.basic_publish("", queue, json.dumps(body).encode(), properties)
        return
    channel.basic_publish("pushes", f"notification.push.{body['Token-Type']}.{body['Token-ID']}",
                          json.dumps(body).encode(), properties)


def publish_at_rate(template: dict[str, Any], *, tag: str, rate: float, seconds: float,
                    queue: str | None = None) -> tuple[int, float]:
    """Publish rate*seconds push_req on a fixed schedule (to the `pushes` exchange, or straight to
    `queue`). Returns (count, achieved rate)."""
    import pika

    props = pika.BasicProperties(content_type="application/json")
    count = int(rate * seconds)
    bodies = [push_body(template, tag=tag, index=i) for i in range(count)]
    with broker_channel() as channel:
        started = time.perf_counter()
        for i, body in enumerate(bodies):
            pause = started + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            _publish(channel, body, props, queue)
        elapsed = time.perf_counter() - started
    return count, count / elapsed if elapsed > 0 else float("nan")


def publish_burst(template: dict[str, Any], *, tag: str, count: int) -> tuple[float, float]:
    """Publish `count` push_req as fast as one connection can. Returns (seconds, rate)."""
    import pika

    props = pika.BasicProperties(content_type="application/json")
    bodies = [push_body(template, tag=tag, index=i) for i in range(count)]
    with broker_channel() as channel:
        started = time.perf_counter()
        for body in bodies:
            _publish(channel, body, props)
        elapsed = time.perf_counter() - started
    return elapsed, count / elapsed if elapsed > 0 else float("nan")


# --- measuring ------------------------------------------------------------------------------


def received(fake: Any, tag: str) -> list[Any]:
    return [r for r in fake.requests if isinstance(r.body, dict) and r.body.get("bench_run") == tag]


def answered(fake: Any) -> int:
    """Requests the fake has recorded so far (cheap: its counters, not its records)."""
    return sum(n for name, n in fake.stats.items() if name != "connections")


def wait_received(fake: Any, tag: str, count: int, *, base: int, timeout: float) -> list[Any]:
    """Wait for `count` requests of `tag`. Polls the fake's counters (`base` = the count before
    publishing), not its record list: copying thousands of records every tick would take the
    fake's lock and the GIL away from the server being measured."""
    deadline = time.monotonic() + timeout
    wait_until(lambda: answered(fake) >= base + count, timeout=timeout, interval=0.05)
    got = received(fake, tag)
    while len(got) < count and time.monotonic() < deadline:  # foreign pushes counted too
        time.sleep(0.5)
        got = received(fake, tag)
    return got


def latencies_ms(requests: list[Any]) -> list[float]:
    return [r.received_at * 1000 - int(r.body["bench_sent_ns"]) / 1e6 for r in requests]


def deliveries(tag: str, expected: int, *, timeout: float) -> collections.Counter[str]:
    """Delivery statuses of a scenario once none is still queued (bounded wait)."""
    from push.models import Delivery, DeliveryStatus

    rows = Delivery.objects.filter(msg_id__startswith=f"{tag}-")

    def settled() -> bool:
        return rows.count() >= expected and not rows.filter(status=DeliveryStatus.QUEUED).exists()

    wait_until(settled, timeout=timeout, interval=0.25)
    return collections.Counter(rows.values_list("status", flat=True))


def warm_up(fake: Any, template: dict[str, Any], tag: str) -> int:
    """The first push opens the TLS + HTTP/2 connection and fills the app cache: not counted.
    Returns how many warm-up pushes the fake received."""
    base = answered(fake)
    publish_burst(template, tag=tag, count=WARMUP_PUSHES)
    warm = wait_received(fake, tag, WARMUP_PUSHES, base=base, timeout=30)
    say(f"  warm-up: {len(warm)}/{WARMUP_PUSHES} pushes received (not counted)")
    return len(warm)


@dataclass
class ConsumerEnd:
    exit_code: int | None
    stop_s: float
    rss_max_mb: float
    rss_hwm_mb: float
    db_connections_max: int
    problems: tuple[int, list[str]]


def consumer_finish(consumer: Consumer) -> ConsumerEnd:
    """Stop the consumer, delete its bench queues, and say how it ended."""
    db_connections_max = consumer.db_connections_max
    exit_code, stop_s, hwm = consumer.stop()
    broker_cleanup(queues=[consumer.queue, consumer.dead_letter_queue], exchanges=[consumer.dead_letter_exchange])
    end = ConsumerEnd(exit_code, stop_s, consumer.rss_max_mb, hwm, db_connections_max, log_problems(consumer.log_path))
    say(f"  consumer stopped (SIGTERM) in {end.stop_s:.1f} s, exit code {end.exit_code}; RSS max "
        f"{end.rss_max_mb:.1f} MB sampled, VmHWM {end.rss_hwm_mb:.1f} MB; PostgreSQL connections to the "
        f"bench database up to {end.db_connections_max}; {end.problems[0]} WARNING/ERROR log lines")
    for line in end.problems[1]:
        say(f"    {line}")
    return end


@dataclass
class Round:
    prefetch: int
    latency: dict[str, float] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    rss_max_mb: float = 0.0
    rss_hwm_mb: float = 0.0
    db_connections_max: int = 0
    exit_code: int | None = None
    stop_s: float = 0.0
    problems: tuple[int, list[str]] = (0, [])


def run_round(args: argparse.Namespace, *, run: str, prefetch: int, fake: Any, template: dict[str, Any]) -> Round:
    result = Round(prefetch=prefetch)
    consumer = consumer_start(run=run, workers=args.workers, prefetch=prefetch, ca_file=fake.ca_file,
                              extra_env=args.consumer_env_dict, processes=args.processes)
    say(f"\n--prefetch {prefetch}: consumer pid {consumer.pid} consuming from {consumer.queue} "
        f"(--workers {args.workers}); its log: {consumer.log_path}")
    try:
        warm_up(fake, template, f"bench-{run}-p{prefetch}-warm")

        if args.seconds > 0 and args.rate > 0:
            tag = f"bench-{run}-p{prefetch}-A"
            load = os.getloadavg()[0]
            base = answered(fake)
            with CpuMeter({"consumer": consumer.pid, "bench + fake APNs": os.getpid()}) as meter_a:
                count, achieved = publish_at_rate(template, tag=tag, rate=args.rate, seconds=args.seconds)
                got = wait_received(fake, tag, count, base=base, timeout=30)
            lat = latencies_ms(got)
            statuses = deliveries(tag, count, timeout=30)
            result.latency = {
                "published": count, "rate": achieved, "received": len(got), "p50": percentile(lat, 50),
                "p90": percentile(lat, 90), "p99": percentile(lat, 99), "max": max(lat, default=float("nan")),
                "sent": statuses.get("sent", 0), "statuses": dict(statuses), "load": load, "cores": meter_a.cores,
            }
            say(f"  A: published {count} at {achieved:.1f}/s; received {len(got)}; p50 {result.latency['p50']:.1f} "
                f"p99 {result.latency['p99']:.1f} max {result.latency['max']:.1f} ms; deliveries {dict(statuses)}")
            say(f"     CPU in cores: {meter_a.line()}")

        if args.throughput > 0:
            tag = f"bench-{run}-p{prefetch}-B"
            load = os.getloadavg()[0]
            cpu_path = os.path.join(args.profile, f"push_p{prefetch}_cpu.txt") if args.profile else ""
            wall_path = os.path.join(args.profile, f"push_p{prefetch}_wall.txt") if args.profile else ""
            meter_b = CpuMeter({"consumer": consumer.pid, "bench + fake APNs": os.getpid()})
            with contextlib.ExitStack() as profilers:
                if args.profile:
                    # On-CPU samples, and all samples (waiting included): where a push thread's time goes.
                    profilers.enter_context(Profiler(consumer.pid, cpu_path))
                    profilers.enter_context(Profiler(consumer.pid, wall_path, idle=True))
                profilers.enter_context(meter_b)
                base = answered(fake)
                cpu_before, wall_before = cpu_seconds_tree(consumer.pid), time.perf_counter()
                publish_s, publish_rate = publish_burst(template, tag=tag, count=args.throughput)
                got = wait_received(fake, tag, args.throughput, base=base, timeout=max(60.0, args.throughput / 50))
                wall = time.perf_counter() - wall_before
                cpu = cpu_seconds_tree(consumer.pid) - cpu_before
            times = sorted(r.received_at for r in got)
            span = times[-1] - times[0] if len(times) > 1 else float("nan")
            statuses = deliveries(tag, args.throughput, timeout=60)
            lat = latencies_ms(got)
            result.throughput = {
                "published": args.throughput, "publish_s": publish_s, "publish_rate": publish_rate,
                "received": len(got), "span_s": span, "rate": (len(times) - 1) / span if span and span > 0 else 0.0,
                "end_to_end_rate": len(got) / wall if wall > 0 else 0.0, "cpu_cores": cpu / wall if wall > 0 else 0.0,
                "cpu_ms_per_push": cpu * 1000 / max(len(got), 1),
                "sent": statuses.get("sent", 0), "statuses": dict(statuses), "p50": percentile(lat, 50),
                "p99": percentile(lat, 99), "load": load, "cores": meter_b.cores,
            }
            t = result.throughput
            say(f"  B: published {args.throughput} in {publish_s:.2f} s ({publish_rate:,.0f}/s); received {len(got)} "
                f"over {span:.2f} s = {t['rate']:,.0f} pushes/s (first to last receipt); consumer CPU "
                f"{t['cpu_cores']:.2f} cores; deliveries {dict(statuses)}")
            say(f"     CPU in cores: {meter_b.line()}")
            if args.profile:
                say(f"  consumer profile during B, on CPU, all threads ({cpu_path}):")
                say(summary(cpu_path))
                say(f"  consumer profile during B, wall clock (waits included), push threads ({wall_path}):")
                say(summary(wall_path, threads="push"))
                say(f"  consumer profile during B, wall clock, the event loop (AMQP and APNs) ({wall_path}):")
                say(summary(wall_path, threads="apns-client", top=4))
    finally:
        end = consumer_finish(consumer)
        result.exit_code, result.stop_s, result.problems = end.exit_code, end.stop_s, end.problems
        result.rss_max_mb, result.rss_hwm_mb = end.rss_max_mb, end.rss_hwm_mb
        result.db_connections_max = end.db_connections_max
    return result


def apns_app_setup(fake: Any, run: str) -> tuple[Any, Any]:
    from push import services
    from push.models import Provider, PushApp

    cert = fake.ca.issue_client_cert("com.acme.phone", voip=True, topics=["com.acme.phone", "com.acme.phone.voip"])
    parsed = services.credential_parse(kind="apns_certificate", data=cert.pem)
    credential = services.credential_save(name=f"bench apns {run}", parsed=parsed)
    app, _ = PushApp.objects.update_or_create(
        app_id=APP_ID, provider=Provider.APPLE,
        defaults={"credential": credential, "host": fake.host, "port": fake.port, "priority": 10,
                  "push_type": "voip", "enabled": True, "topic": "", "expiration": None, "collapse_id": "",
                  "extra_headers": {}, "flagged_reason": "", "bad_device_token_count": 0},
    )
    return app, credential


def main(argv: list[str] | None = None) -> None:
    from bench.peer import DEFAULT_BURST, peer_arguments, peer_main

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="scenario A: push_req per second")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="scenario A (0 skips A), or each --steady run: duration")
    parser.add_argument("--throughput", type=int, help="scenario B: push_req count (default 5000, --peer: "
                        f"{DEFAULT_BURST}; 0 skips B)")
    parser.add_argument("--delay-ms", type=float, default=30.0, help="fake APNs answer delay")
    parser.add_argument("--prefetch", default="", help="comma-separated consumer prefetches (default PUSHER_PREFETCH)")
    parser.add_argument("--workers", type=int, default=0,
                        help="threads for push_req the engine hands back (default PUSHER_WORKERS)")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy profile of the consumer during B (or each --steady run) into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the bench deliveries in the database")
    parser.add_argument("--consumer-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the consumer only (repeatable), e.g. DEBUG=1")
    parser.add_argument("--processes", type=int, default=1,
                        help="consumer processes (runconsumer --processes N); CPU and RSS are their sums")
    parser.add_argument("--steady", default="", metavar="RATES",
                        help="steady-rate mode instead of A and B: comma-separated push_req/s, e.g. 100,500")
    parser.add_argument("--repeat", type=int, default=3, help="--steady: runs per rate, --first-push/--peer: runs")
    parser.add_argument("--first-push", action="store_true", help="first push with and without provider warm-up")
    parser.add_argument("--gap", type=float, default=2.0, help="steady and --peer modes: idle seconds between runs")
    parser.add_argument("--disk-busy", action="store_true",
                        help="steady mode: a dd ... conv=fsync loop in the repository's data/ during each run")
    peer_arguments(parser)
    args = parser.parse_args(argv)
    args.throughput = (DEFAULT_BURST if args.peer else 5000) if args.throughput is None else args.throughput
    try:
        args.steady_rates = [float(r) for r in args.steady.split(",") if r.strip()]
    except ValueError:
        parser.error("--steady: comma-separated numbers, e.g. 100,500")
    if args.steady and not (args.steady_rates and all(0 < r <= 5000 for r in args.steady_rates)
                            and 1 <= args.repeat <= 50 and 0 < args.seconds and 0 <= args.gap <= 600):
        parser.error("--steady: rates 0..5000 (exclusive of 0), --repeat 1..50, --seconds > 0, --gap 0..600")
    if args.disk_busy and not args.steady:
        parser.error("--disk-busy goes with --steady")
    args.consumer_env_dict = {}
    for item in args.consumer_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--consumer-env {item!r}: expected NAME=VALUE")
        if name in ("DATABASE_URL", "AMQP_URL", "REDIS_URL") and value:
            require_loopback(value, name)
        args.consumer_env_dict[name] = value
    if not (0 <= args.rate <= 5000 and 0 <= args.seconds <= 300 and 0 <= args.throughput <= 100_000
            and 0 <= args.delay_ms <= 5000):
        parser.error("--rate 0..5000, --seconds 0..300, --throughput 0..100000, --delay-ms 0..5000")
    if args.peer:
        return peer_main(args, parser)
    if args.first_push:
        from bench.firstpush import first_push_main

        first_push_main(args)
        return

    run = run_id()
    log_path = setup(log_name=f"bench_push_{run}")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)

    from django.conf import settings

    from push.models import Credential, Delivery, PushApp
    from tests.fakes.apns import FakeApns

    try:
        from tests.fixtures import sample  # the samples kept in the repository
    except ImportError:  # trees before tests/fixtures: the shared Kazoo samples
        from tests.amqp import sample

    prefetch_list = [int(p) for p in (args.prefetch or str(settings.PUSHER_PREFETCH)).split(",") if p.strip()]
    if not prefetch_list or any(not 1 <= p <= 65535 for p in prefetch_list):
        parser.error("--prefetch: 1..65535 each")
    args.workers = args.workers or settings.PUSHER_WORKERS
    template = sample("push_req_kamailio_master.json")["body"]

    fake = FakeApns.start(delay=args.delay_ms / 1000.0)
    say(f"push bench {run}: database {database_label()}; bench log {log_path}")
    say(f"  fake APNs (in this process) on {fake.address}, {args.delay_ms:g} ms per answer; consumer = "
        f"`manage.py runconsumer` subprocess per --prefetch value; load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs")
    if args.consumer_env_dict:
        say(f"  consumer environment overrides: {args.consumer_env_dict}")
    rounds: list[Round] = []
    steady_runs: list[Any] = []
    app = credential = None
    try:
        app, credential = apns_app_setup(fake, run)
        for prefetch in prefetch_list:
            if args.steady:
                from bench.steady import steady_round

                steady_runs += steady_round(args, run=run, prefetch=prefetch, fake=fake, template=template)
            else:
                rounds.append(run_round(args, run=run, prefetch=prefetch, fake=fake, template=template))
    finally:
        fake_stats = fake.stats
        fake.stop()
        if not args.keep:
            Delivery.objects.filter(msg_id__startswith=f"bench-{run}-").delete()
        if app is not None:
            PushApp.objects.filter(pk=app.pk).delete()
        if credential is not None:
            Credential.objects.filter(pk=credential.pk).delete()

    if args.steady:
        from bench.steady import steady_report

        steady_report(args, steady_runs)
        say(f"fake APNs answers: {fake_stats}")
        return
    say()
    say(f"A: latency, {args.rate:g} push_req/s for {args.seconds:g} s; publish (time.time_ns in Payload) to "
        f"receipt at the fake. Target p99 < {TARGET_P99_MS:g} ms.")
    say(table(
        ["prefetch", "published", "rate/s", "received", "sent", "p50 ms", "p90 ms", "p99 ms", "max ms", "meets",
         "consumer cores", "other cores", "load"],
        [
            [r.prefetch, r.latency["published"], r.latency["rate"], r.latency["received"], r.latency["sent"],
             r.latency["p50"], r.latency["p90"], r.latency["p99"], r.latency["max"],
             "yes" if r.latency["p99"] < TARGET_P99_MS else "NO", r.latency["cores"].get("consumer", 0.0),
             r.latency["cores"].get("other processes", 0.0), r.latency["load"]]
            for r in rounds if r.latency
        ],
    ))
    say()
    say(f"B: throughput, {args.throughput} push_req published as fast as possible, fake answering after "
        f"{args.delay_ms:g} ms. Target >= {TARGET_PUSHES_PER_S:,} pushes/s.")
    say(table(
        ["prefetch", "published", "publish s", "received", "pushes/s", "end-to-end/s", "sent", "other", "p50 ms",
         "p99 ms", "consumer cores", "CPU ms/push", "1-core ceiling/s", "other cores", "meets", "load"],
        [
            [r.prefetch, r.throughput["published"], r.throughput["publish_s"], r.throughput["received"],
             r.throughput["rate"], r.throughput["end_to_end_rate"], r.throughput["sent"],
             " ".join(f"{k}={v}" for k, v in sorted(r.throughput["statuses"].items()) if k != "sent") or "-",
             r.throughput["p50"], r.throughput["p99"], r.throughput["cpu_cores"], r.throughput["cpu_ms_per_push"],
             1000 / r.throughput["cpu_ms_per_push"] if r.throughput["cpu_ms_per_push"] else float("nan"),
             r.throughput["cores"].get("other processes", 0.0),
             "yes" if r.throughput["rate"] >= TARGET_PUSHES_PER_S else "NO", r.throughput["load"]]
            for r in rounds if r.throughput
        ],
    ))
    say()
    say(f"Consumer process memory. Target RSS < {TARGET_RSS_MB:g} MB.")
    say(table(
        ["prefetch", "RSS max MB (sampled)", "VmHWM MB", "meets", "PG conns max", "exit code", "stop s",
         "WARN/ERR lines"],
        [
            [r.prefetch, r.rss_max_mb, r.rss_hwm_mb, "yes" if max(r.rss_max_mb, r.rss_hwm_mb) < TARGET_RSS_MB else "NO",
             r.db_connections_max, r.exit_code, r.stop_s, r.problems[0]]
            for r in rounds
        ],
    ))
    say()
    say("pushes/s = (received - 1) / (last receipt - first receipt) at the fake; end-to-end/s = received /")
    say("(first publish to last receipt, publishing included); the publisher (same connection, as fast as")
    say("it goes) overlaps the first 'publish s' of the drain. p50/p99 in B include queueing behind the")
    say("backlog. CPU ms/push = consumer CPU time / pushes; 1-core ceiling = 1000 / that: the rate one")
    say("consumer process could reach with one whole core (its Python code holds the GIL), whatever else")
    say("runs on the machine. cores = CPU used over the scenario by the consumer, and by processes other")
    say("than the consumer, this bench (publisher + fake APNs), PostgreSQL and RabbitMQ (their figures are")
    say("in the per-round lines); load = 1-minute load average when the scenario started.")
    say(f"fake APNs answers: {fake_stats}")


if __name__ == "__main__":
    main()
