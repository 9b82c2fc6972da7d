"""The floor: `python -m bench.floor [--rates 100,500] [--seconds 10] [--repeat 3] [--delay-ms 30] [--disk-busy]
[--record] [--pika-thread]`.

The issue asks for <= 1 ms of consumer CPU per push at a steady 100/s; `python -m bench.push --steady`
has measured pusher's consumer at about 1.7-2.4 ms/push at 100/s on the development host. This bench
measures how much of that any single-threaded Python design of the service pays on this host: the
least consumer CPU per push at a steady rate, with the unavoidable protocol work and nothing else.

The consumer (bench/floor_runner.py) is a separate process, so its CPU is its own: one thread, one
asyncio loop; pika's AsyncioConnection consumes a private queue (prefetch 1000, manual acks) and, per
delivery, json.loads the body, sends one HTTP/2 POST over TLS with pusher's own H2Transport, awaits the
answer and acks. No Django, no database, no logging. At a steady rate the pushes hardly overlap, so
the process sleeps between them: a push costs at least two wake-ups (its delivery, then its answer),
and a wake-up on this VM was estimated at ~0.2 ms of CPU. What this consumer costs is the floor; a
design that does more per push (a database, threads handing work over) pays on top of it.

This process runs the fake APNs (tests/fakes/apns.py, answering after --delay-ms, as in bench/push.py),
declares a private queue, starts the runner, warms it up (not counted), then, each repetition, each
rate in turn: bench/push.py's push_req (`push_body`) published at that rate for --seconds straight to
the queue (default exchange: no consumer bound to `pushes` sees them); once the fake has them all:

  CPU ms/push      the runner's CPU (/proc/<pid>/task/*/schedstat, ns) from the first publish until
                   every push reached the fake plus --delay-ms + 0.1 s (its answer and ack) / pushes
  vol, invol/push  the runner's voluntary (it slept) and involuntary (preempted) context switches per push
  CPU ms/vol       CPU per voluntary switch: what one wake-up and the work done in it cost
  p50/p99/max      publish (time.time_ns() in the Payload) to receipt at the fake
  threads          the runner's threads at the end of the run (1, or 2 with --pika-thread)
  load             1-minute load average at the start and at the end of the run
--record: the runner also does what pusher does per push beyond the protocol, the floor's way, on its
one loop: a log line, and the outcome written durably (gathered 100 ms, one INSERT per batch, on
PostgreSQL at DATABASE_URL, default the bench database) before the ack (bench/floor_runner.py).
--pika-thread: pika on a thread of its own, as pusher's consumer ran it until 2026-12-03 (bench/floor_runner.py).
--disk-busy runs bench.push --steady's dd/fsync loop (bench/steady.py `DiskBusy`) beside each run: this
consumer touches no disk, so whatever its p99 loses then is the machine's (the loop's CPU and I/O on
2 cores), not a design's.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    bench_environ,
    broker_channel,
    broker_cleanup,
    database_create_if_missing,
    percentile,
    require_loopback,
    run_id,
    say,
    table,
)
from bench.push import ROOT, answered, latencies_ms, publish_at_rate, push_body, wait_received
from bench.steady import DISK_DIR, DISK_LEAD_S, TARGET_CPU_MS_PER_PUSH, TARGET_P99_MS, DiskBusy

WARMUP_PUSHES = 20
IDLE_SAMPLE_S = 2.0
GAP_S = 2.0
TAIL_S = 0.1  # after the last receipt at the fake: its answer (--delay-ms) and ack, then this much


@dataclass(frozen=True)
class Proc:
    """A process's counters, summed over its threads."""

    cpu_ns: int
    voluntary: int
    involuntary: int
    threads: int


def proc(pid: int) -> Proc:
    cpu = voluntary = involuntary = threads = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                cpu += int(handle.read().split()[0])  # time on CPU, ns
            with open(f"/proc/{pid}/task/{task}/status") as handle:
                for line in handle:
                    name, _, value = line.partition(":")
                    if name == "voluntary_ctxt_switches":
                        voluntary += int(value)
                    elif name == "nonvoluntary_ctxt_switches":
                        involuntary += int(value)
        except FileNotFoundError:  # a thread that just exited
            continue
        threads += 1
    return Proc(cpu, voluntary, involuntary, threads)


def runner_start(*, queue: str, fake: Any, cert_pem: str, log_path: str, record: str | None,
                 pika_thread: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bench.floor_runner", "--queue", queue, "--host", fake.host,
               "--port", str(fake.port), "--ca-file", fake.ca_file, "--amqp-url", os.environ["AMQP_URL"]]
    if record:
        command += ["--record", record]
    if pika_thread:
        command.append("--pika-thread")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(cert_pem.encode())  # the key never touches a file of ours
    process.stdin.close()
    ready, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline().decode().strip() if ready else ""
    if line != "consuming":
        process.kill()
        process.wait()
        raise SystemExit(f"the runner did not start consuming within 60 s ({line!r}); see {log_path}")
    return process


def runner_stop(process: subprocess.Popen[bytes]) -> tuple[int | None, str]:
    """SIGTERM, then its exit code and the summary line it printed."""
    assert process.stdout is not None
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    return process.returncode, process.stdout.read().decode().strip()  # one line: no pipe to fill meanwhile


@dataclass
class FloorRun:
    rate: float
    repetition: int
    published: int
    achieved: float
    received: int
    not_200: int
    latencies: list[float]
    cpu_ms: float
    voluntary: int
    involuntary: int
    threads: int
    window_s: float
    load_start: float
    load_end: float
    disk_mb_s: float | None  # --disk-busy: what the dd loop wrote

    def per_push(self, value: float) -> float:
        return value / self.received if self.received else float("nan")


def floor_run(args: argparse.Namespace, *, pid: int, queue: str, fake: Any, template: dict[str, Any], tag: str,
              rate: float, repetition: int) -> FloorRun:
    load_start = os.getloadavg()[0]
    base = answered(fake)
    with contextlib.ExitStack() as stack:
        disk = stack.enter_context(DiskBusy(DISK_DIR)) if args.disk_busy else None
        if disk is not None:
            time.sleep(DISK_LEAD_S)
        before, started = proc(pid), time.monotonic()
        published, achieved = publish_at_rate(template, tag=tag, rate=rate, seconds=args.seconds, queue=queue)
        got = wait_received(fake, tag, published, base=base, timeout=30)
        time.sleep(args.delay_ms / 1000 + TAIL_S)
        after, window = proc(pid), time.monotonic() - started
    return FloorRun(
        rate=rate, repetition=repetition, published=published, achieved=achieved, received=len(got),
        not_200=sum(1 for r in got if r.status != 200), latencies=latencies_ms(got),
        cpu_ms=(after.cpu_ns - before.cpu_ns) / 1e6, voluntary=after.voluntary - before.voluntary,
        involuntary=after.involuntary - before.involuntary, threads=after.threads, window_s=window,
        load_start=load_start, load_end=os.getloadavg()[0], disk_mb_s=disk.mb_per_s if disk else None,
    )


def run_row(r: FloorRun) -> list[Any]:
    lat = r.latencies
    return [r.rate, r.repetition, r.published, r.achieved, r.received, r.not_200, percentile(lat, 50),
            percentile(lat, 99), max(lat, default=float("nan")), r.per_push(r.cpu_ms), r.per_push(r.voluntary),
            r.per_push(r.involuntary), r.cpu_ms / r.voluntary if r.voluntary else float("nan"),
            r.cpu_ms / 1000 / r.window_s, r.threads, "-" if r.disk_mb_s is None else r.disk_mb_s, r.load_start,
            r.load_end]


RUN_HEADERS = ["rate/s", "rep", "published", "achieved/s", "received", "not 200", "p50 ms", "p99 ms", "max ms",
               "CPU ms/push", "vol/push", "invol/push", "CPU ms/vol", "runner cores", "threads", "disk MB/s",
               "load start", "load end"]


def summary_rows(runs: list[FloorRun], rates: list[float]) -> list[list[Any]]:
    rows = []
    for rate in rates:
        mine = [r for r in runs if r.rate == rate]
        if not mine:
            continue
        cpu = [r.per_push(r.cpu_ms) for r in mine]
        target = TARGET_CPU_MS_PER_PUSH.get(rate)
        rows.append([rate, len(mine), statistics.median(cpu), min(cpu), max(cpu),
                     statistics.median(r.per_push(r.voluntary) for r in mine),
                     statistics.median(r.cpu_ms / r.voluntary if r.voluntary else float("nan") for r in mine),
                     max(percentile(r.latencies, 99) for r in mine), TARGET_P99_MS.get(rate, "-"),
                     "-" if target is None else target])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,500", help="comma-separated push_req/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="each run's duration")
    parser.add_argument("--repeat", type=int, default=3, help="runs per rate (rates alternating)")
    parser.add_argument("--delay-ms", type=float, default=30.0, help="fake APNs answer delay")
    parser.add_argument("--record", action="store_true",
                        help="the runner also logs each push and writes its outcome to PostgreSQL (DATABASE_URL, "
                             "default the bench database) before the ack, on its one loop")
    parser.add_argument("--pika-thread", action="store_true",
                        help="the runner keeps pika on a thread of its own, as pusher's consumer did until 2026-12-03")
    parser.add_argument("--disk-busy", action="store_true",
                        help="each run with bench.push --steady's dd/fsync loop beside it (data/, from 1 s before)")
    args = parser.parse_args(argv)
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error("--rates: comma-separated numbers, e.g. 100,500")
    if not (rates and all(0 < r <= 5000 for r in rates) and 1 <= args.repeat <= 50 and 0 < args.seconds <= 300
            and 0 <= args.delay_ms <= 5000):
        parser.error("--rates 0..5000 (exclusive of 0), --repeat 1..50, --seconds 0..300, --delay-ms 0..5000")
    environ = bench_environ()
    require_loopback(environ["AMQP_URL"], "AMQP_URL")
    if args.record:
        require_loopback(environ["DATABASE_URL"], "DATABASE_URL")
        database_create_if_missing(environ["DATABASE_URL"])

    from tests.fakes.apns import FakeApns
    from tests.fixtures import sample

    run = run_id()
    queue = f"pusher_bench_floor_{run}"
    log_path = os.path.join(tempfile.gettempdir(), f"bench_floor_{run}.runner.log")
    template = sample("push_req_kamailio_master.json")["body"]
    fake = FakeApns.start(delay=args.delay_ms / 1000.0)
    cert = fake.ca.issue_client_cert("com.acme.phone", voip=True, topics=["com.acme.phone", "com.acme.phone.voip"])
    runs: list[FloorRun] = []
    try:
        with broker_channel() as channel:
            channel.queue_declare(queue, durable=False, auto_delete=False)
        record = environ["DATABASE_URL"] if args.record else None
        process = runner_start(queue=queue, fake=fake, cert_pem=cert.pem, log_path=log_path, record=record,
                               pika_thread=args.pika_thread)
        size = len(json.dumps(push_body(template, tag=f"bench-{run}-warm", index=0))) + 35  # + bench_sent_ns
        say(f"floor bench {run}: fake APNs (in this process) on {fake.address}, {args.delay_ms:g} ms per answer; "
            f"runner pid {process.pid} consuming {queue} (its stderr: {log_path}); push_req ~{size} bytes; load "
            f"average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        try:
            tag = f"bench-{run}-warm"
            base = answered(fake)
            publish_at_rate(template, tag=tag, rate=100, seconds=WARMUP_PUSHES / 100, queue=queue)
            warm = wait_received(fake, tag, WARMUP_PUSHES, base=base, timeout=30)
            time.sleep(args.delay_ms / 1000 + TAIL_S)  # the warm-up's answers and acks stay out of the idle figure
            before = proc(process.pid)
            time.sleep(IDLE_SAMPLE_S)
            idle = proc(process.pid)
            say(f"  warm-up: {len(warm)}/{WARMUP_PUSHES} pushes received (not counted); runner idle afterwards: "
                f"{(idle.cpu_ns - before.cpu_ns) / 1e6 / IDLE_SAMPLE_S:.3f} ms CPU/s, "
                f"{(idle.voluntary - before.voluntary) / IDLE_SAMPLE_S:.1f} voluntary switches/s, "
                f"{idle.threads} thread(s)")
            for repetition in range(1, args.repeat + 1):
                for rate in rates:
                    if runs:
                        time.sleep(GAP_S)
                    r = floor_run(args, pid=process.pid, queue=queue, fake=fake, template=template,
                                  tag=f"bench-{run}-F{rate:g}-r{repetition}", rate=rate, repetition=repetition)
                    runs.append(r)
                    say(f"  {rate:g}/s rep {repetition}: received {r.received}/{r.published} (published at "
                        f"{r.achieved:.1f}/s, {r.not_200} not 200); p50 {percentile(r.latencies, 50):.1f} p99 "
                        f"{percentile(r.latencies, 99):.1f} ms; runner CPU "
                        f"{r.per_push(r.cpu_ms):.3f} ms/push, {r.per_push(r.voluntary):.2f} voluntary + "
                        f"{r.per_push(r.involuntary):.2f} involuntary switches/push over {r.window_s:.1f} s; "
                        f"{r.threads} thread(s); load {r.load_start:.2f} -> {r.load_end:.2f}")
        finally:
            code, summary = runner_stop(process)
            say(f"  runner stopped (SIGTERM): exit code {code}; {summary or '(no summary line)'}")
    finally:
        fake_stats = fake.stats
        fake.stop()
        broker_cleanup(queues=[queue])

    say()
    variant = "".join(f" with {flag}" for flag, on in (("--record", args.record), ("--pika-thread", args.pika_thread))
                      if on)
    say(f"Floor: minimal consumer{variant}, fake APNs answering after {args.delay_ms:g} ms, "
        f"{args.seconds:g} s per run.")
    say(table(RUN_HEADERS, [run_row(r) for r in runs]))
    say()
    say("Per rate (median over runs; the issue's targets: <= 1 ms CPU per push at 100/s, p99 in every run):")
    say(table(["rate/s", "runs", "CPU ms/push", "min", "max", "vol/push", "CPU ms/vol", "worst p99 ms", "p99 target",
               "CPU target"], summary_rows(runs, rates)))
    say()
    say("CPU: the runner's (schedstat, all threads), first publish to last receipt + answer delay + 0.1 s;")
    say("vol/invol: its voluntary (slept) / involuntary (preempted) context switches; runner cores: CPU / window.")
    say(f"fake APNs answers: {fake_stats}")


if __name__ == "__main__":
    main()
