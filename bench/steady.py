"""Steady-rate push benchmark: `python -m bench.push --steady 100,500 --seconds 10 --repeat 3 [--disk-busy]`.

One consumer (`manage.py runconsumer`, as in bench/push.py) per --prefetch value, warmed up once.
Then, --repeat times, each rate in turn (100, 500, 100, 500, ...: so that a change in the machine's
load falls on every rate alike): push_req published at that rate for --seconds, as mode A does,
and one line per run:

  sent/received       push_req published / requests of this run the fake APNs received, and the
                      deliveries the database holds as `sent` once the run settled
  p50/p99/max         publish to provider: the fake's receipt time minus the time.time_ns() put in
                      the Payload just before basic_publish (mode A's measure)
  CPU ms/push         consumer CPU (user + system, all threads, from /proc) over the run's window /
                      requests received. The window runs from the first publish until every push
                      was received and its delivery row is no longer `queued` (the writes that
                      follow the sends are counted), so it includes a short idle tail
  load                1-minute load average at the start and at the end of the run

--disk-busy: during each run (from 1 s before its first publish), a loop of
`dd if=/dev/zero of=<repo>/data/bench_disk_busy.<pid>.tmp bs=1M count=64 conv=fsync`, so that
fsyncs compete with PostgreSQL's WAL flushes (the repository's data/ is on the same filesystem as
PostgreSQL's data directory here; the first lines say whether it is). The file is removed after
each run. --profile DIR records a py-spy profile of the consumer per run (it costs the consumer
CPU: profile in a separate invocation from the one whose figures you keep).

Prints figures only; nothing is asserted. The targets shown are the issue's: p99 <= 10 ms at
100/s and <= 25 ms at 500/s in every repetition, <= 1 ms consumer CPU per push at 100/s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import CpuMeter, cpu_seconds_tree, percentile, say, table
from bench.profile import Profiler, summary
from bench.push import (
    ROOT,
    answered,
    consumer_finish,
    consumer_start,
    deliveries,
    latencies_ms,
    publish_at_rate,
    wait_received,
    warm_up,
)

TARGET_P99_MS = {100.0: 10.0, 500.0: 25.0}
TARGET_CPU_MS_PER_PUSH = {100.0: 1.0}
DISK_DIR = ROOT / "data"
DISK_BLOCK_MB = 64
DISK_LEAD_S = 1.0  # the disk load starts this long before the first publish
IDLE_SAMPLE_S = 2.0


# --- the disk load ----------------------------------------------------------------------------


class DiskBusy:
    """While the block runs: `dd ... bs=1M count=64 conv=fsync` over and over into one temporary
    file (in a thread of this process that only waits for dd). Removed afterwards."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"bench_disk_busy.{os.getpid()}.tmp"
        self.rounds = 0  # dd runs that completed (wrote and fsynced all 64 MB)
        self.seconds = 0.0
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="disk-busy", daemon=True)
        self._started = 0.0

    def __enter__(self) -> DiskBusy:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def _loop(self) -> None:
        command = ["dd", "if=/dev/zero", f"of={self.path}", "bs=1M", f"count={DISK_BLOCK_MB}", "conv=fsync"]
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._process.wait() == 0:
                self.rounds += 1

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.monotonic() - self._started
        with self._lock:
            self._stop.set()
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
        self._thread.join(timeout=30)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @property
    def mb_per_s(self) -> float:
        return self.rounds * DISK_BLOCK_MB / self.seconds if self.seconds > 0 else 0.0


def same_filesystem_as_database(directory: Path) -> str:
    """Whether `directory` shares a device with PostgreSQL's data directory (when readable)."""
    from django.db import connection

    directory.mkdir(parents=True, exist_ok=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW data_directory")
            data_directory = cursor.fetchone()[0]
        same = os.stat(directory).st_dev == os.stat(data_directory).st_dev
    except Exception as exc:  # a note on the output only
        return f"unknown ({type(exc).__name__})"
    return f"{'same' if same else 'NOT the same'} device as PostgreSQL's {data_directory}"


# --- one run ------------------------------------------------------------------------------------


@dataclass
class SteadyRun:
    prefetch: int
    rate: float
    repetition: int
    published: int = 0
    achieved: float = 0.0
    received: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    p50: float = float("nan")
    p90: float = float("nan")
    p99: float = float("nan")
    max: float = float("nan")
    cpu_ms_per_push: float = float("nan")
    window_s: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)
    load_start: float = 0.0
    load_end: float = 0.0
    disk_mb_per_s: float | None = None

    @property
    def sent(self) -> int:
        return self.statuses.get("sent", 0)


def steady_run(args: argparse.Namespace, *, consumer: Any, fake: Any, template: dict[str, Any], tag: str,
               rate: float, repetition: int, prefetch: int) -> SteadyRun:
    result = SteadyRun(prefetch=prefetch, rate=rate, repetition=repetition, load_start=os.getloadavg()[0])
    with contextlib.ExitStack() as stack:  # closed in reverse: profilers, CPU meter, then the disk load
        disk = stack.enter_context(DiskBusy(DISK_DIR)) if args.disk_busy else None
        if disk is not None:
            time.sleep(DISK_LEAD_S)
        if args.profile:
            stack.enter_context(Profiler(consumer.pid, profile_path(args, prefetch, rate, repetition, "cpu")))
            stack.enter_context(Profiler(consumer.pid, profile_path(args, prefetch, rate, repetition, "wall"),
                                         idle=True))
        meter = stack.enter_context(CpuMeter({"consumer": consumer.pid, "bench + fake APNs": os.getpid()}))
        base = answered(fake)
        result.published, result.achieved = publish_at_rate(template, tag=tag, rate=rate, seconds=args.seconds)
        got = wait_received(fake, tag, result.published, base=base, timeout=30)
        result.statuses = dict(deliveries(tag, result.published, timeout=30))
    result.load_end = os.getloadavg()[0]
    lat = latencies_ms(got)
    result.received = len(got)
    result.p50, result.p90, result.p99 = percentile(lat, 50), percentile(lat, 90), percentile(lat, 99)
    result.max = max(lat, default=float("nan"))
    result.cores, result.window_s = meter.cores, meter.seconds
    result.cpu_ms_per_push = meter.cores.get("consumer", 0.0) * meter.seconds * 1000 / max(len(got), 1)
    if disk is not None:
        result.disk_mb_per_s = disk.mb_per_s
    return result


def profile_path(args: argparse.Namespace, prefetch: int, rate: float, repetition: int, kind: str) -> str:
    disk = "_disk" if args.disk_busy else ""
    return os.path.join(args.profile, f"steady_p{prefetch}_{rate:g}_r{repetition}{disk}_{kind}.txt")


def run_line(r: SteadyRun) -> str:
    others = " ".join(f"{k}={v}" for k, v in sorted(r.statuses.items()) if k != "sent")
    disk = f"; disk load {r.disk_mb_per_s:.0f} MB/s fsynced" if r.disk_mb_per_s is not None else ""
    return (f"  {r.rate:g}/s rep {r.repetition}: sent/received {r.sent}/{r.received} of {r.published} "
            f"(published at {r.achieved:.1f}/s{', ' + others if others else ''}); p50 {r.p50:.1f} p99 {r.p99:.1f} "
            f"max {r.max:.1f} ms; consumer CPU {r.cpu_ms_per_push:.2f} ms/push over {r.window_s:.1f} s; "
            f"load {r.load_start:.2f} -> {r.load_end:.2f}{disk}")


def steady_round(args: argparse.Namespace, *, run: str, prefetch: int, fake: Any,
                 template: dict[str, Any]) -> list[SteadyRun]:
    """One consumer; every rate, --repeat times, rates alternating."""
    consumer = consumer_start(run=run, workers=args.workers, prefetch=prefetch, ca_file=fake.ca_file,
                              extra_env=args.consumer_env_dict, processes=args.processes)
    say(f"\n--prefetch {prefetch}: consumer pid {consumer.pid} consuming from {consumer.queue} "
        f"(--workers {args.workers}); its log: {consumer.log_path}")
    if args.disk_busy:
        say(f"  disk load: dd bs=1M count={DISK_BLOCK_MB} conv=fsync in a loop into {DISK_DIR}/ "
            f"({same_filesystem_as_database(DISK_DIR)})")
    runs: list[SteadyRun] = []
    try:
        warm_up(fake, template, f"bench-{run}-p{prefetch}-warm")
        before = cpu_seconds_tree(consumer.pid)
        time.sleep(IDLE_SAMPLE_S)
        idle_ms = (cpu_seconds_tree(consumer.pid) - before) * 1000 / IDLE_SAMPLE_S
        say(f"  consumer idle: {idle_ms:.1f} ms CPU per second "
            f"(over {IDLE_SAMPLE_S:g} s, /proc ticks of 10 ms)")
        for repetition in range(1, args.repeat + 1):
            for rate in args.steady_rates:
                if runs:
                    time.sleep(args.gap)
                tag = f"bench-{run}-p{prefetch}-S{rate:g}-r{repetition}"
                result = steady_run(args, consumer=consumer, fake=fake, template=template, tag=tag, rate=rate,
                                    repetition=repetition, prefetch=prefetch)
                runs.append(result)
                say(run_line(result))
                say(f"     CPU in cores: {', '.join(f'{k} {v:.2f}' for k, v in result.cores.items())}")
                if args.profile:
                    path = profile_path(args, prefetch, rate, repetition, "cpu")
                    say(f"  consumer profile, on CPU, all threads ({path}):")
                    say(summary(path, top=10))
    finally:
        consumer_finish(consumer)
    return runs


# --- the report ---------------------------------------------------------------------------------


def _meets(value: float, target: float | None) -> str:
    if target is None:
        return "-"
    return "yes" if value <= target else "NO"


def steady_report(args: argparse.Namespace, runs: list[SteadyRun]) -> None:
    say()
    say(f"Steady rate: {', '.join(f'{r:g}' for r in args.steady_rates)} push_req/s, {args.seconds:g} s per run, "
        f"{args.repeat} repetitions{', disk busy (dd conv=fsync loop)' if args.disk_busy else ''}; publish to "
        f"receipt at the fake APNs (answering after {args.delay_ms:g} ms).")
    say(table(
        ["prefetch", "rate/s", "rep", "published", "received", "sent", "p50 ms", "p90 ms", "p99 ms", "max ms",
         "CPU ms/push", "consumer cores", "PostgreSQL cores", "other cores", "disk MB/s", "load start",
         "load end"],
        [
            [r.prefetch, r.rate, r.repetition, r.published, r.received, r.sent, r.p50, r.p90, r.p99, r.max,
             r.cpu_ms_per_push, r.cores.get("consumer", 0.0), r.cores.get("PostgreSQL", 0.0),
             r.cores.get("other processes", 0.0), "-" if r.disk_mb_per_s is None else r.disk_mb_per_s,
             r.load_start, r.load_end]
            for r in runs
        ],
    ))
    say()
    say("Per rate, the worst run (the issue's targets: p99 in every repetition, CPU per push at 100/s):")
    rows = []
    for prefetch in sorted({r.prefetch for r in runs}):
        for rate in args.steady_rates:
            mine = [r for r in runs if r.prefetch == prefetch and r.rate == rate]
            if not mine:
                continue
            worst_p99 = max(r.p99 for r in mine)
            worst_cpu = max(r.cpu_ms_per_push for r in mine)
            p99_target, cpu_target = TARGET_P99_MS.get(rate), TARGET_CPU_MS_PER_PUSH.get(rate)
            rows.append([
                prefetch, rate, len(mine), sum(r.received for r in mine), sum(r.published for r in mine),
                worst_p99, max(r.max for r in mine), "-" if p99_target is None else p99_target,
                _meets(worst_p99, p99_target), worst_cpu, "-" if cpu_target is None else cpu_target,
                _meets(worst_cpu, cpu_target), max(r.load_start for r in mine),
            ])
    say(table(
        ["prefetch", "rate/s", "runs", "received", "published", "worst p99 ms", "worst max ms", "p99 target",
         "meets", "worst CPU ms/push", "CPU target", "meets", "highest load"],
        rows,
    ))
    say()
    say("p99 is nearest-rank over one run's pushes. CPU ms/push = the consumer's CPU time over the run's window")
    say("(first publish until every delivery is settled) / pushes received; cores = CPU over that window by the")
    say("consumer, PostgreSQL (all its processes) and everything other than the consumer, this bench, PostgreSQL")
    say("and RabbitMQ (dd included). load = 1-minute load average at the run's start and end.")
