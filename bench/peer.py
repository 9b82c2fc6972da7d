"""`python -m bench.push --peer [--repeat 3] [--throughput 2000] [--delay-ms 30] [--auth certificate|token]`:
pusher against the peer, django-push-notifications, on the same fake APNs, in one interleaved run.

The peer is installed once in a scratch venv, data/bench_peer_venv/ (PEER_REQUIREMENTS: its
aioapns extra, the path its APNSDevice bulk send takes when aioapns is importable), and runs as a
subprocess of that venv (bench/peer_runner.py) with a settings module written for the run (SQLite
in a temporary directory). Both sides push to the fake in this process, which answers after
--delay-ms, with the same kind of credential (--auth; the certificate is mode B's).

Each repetition: a pusher burst (mode B's measure: a fresh `runconsumer`, a warm-up, then
--throughput push_req published as fast as possible), then a peer bulk (as many APNSDevice rows,
one `send_message` on their queryset, timed). What each delivered is counted at the fake: distinct
pushes of the run (call-id for pusher, device token for the peer), lost = asked - distinct,
duplicated = receipts - distinct. Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import CpuMeter, cpu_seconds_tree, database_label, run_id, say, setup, table, wait_until
from bench.push import (
    APP_ID,
    ROOT,
    answered,
    apns_app_setup,
    consumer_finish,
    consumer_start,
    deliveries,
    publish_burst,
    received,
    wait_received,
    warm_up,
)

# The apns-async extra: the queryset's bulk send goes through aioapns when it is importable (the "APNS"
# extra brings the older, synchronous apns2 instead). aioapns pinned too, so that a rerun measures the same.
PEER_REQUIREMENTS = ("django-push-notifications[apns-async]==3.3.0", "aioapns==3.3.1")
PEER_VENV = ROOT / "data" / "bench_peer_venv"
PEER_RUNS = ROOT / "data" / "bench_peer_runs"
RUNNER = Path(__file__).with_name("peer_runner.py")
BUNDLE_ID = "com.acme.phone"
TOPIC = f"{BUNDLE_ID}.voip"
DEFAULT_BURST = 2000
EXCEPTION_LINE = re.compile(r"^([\w.]+(?:Error|Exception)):")
# The issue's targets: pusher's bulk rate at least 1.5x the peer's, CPU and memory bounds.
TARGET_RATIO = 1.5
TARGET_CPU_MS_PER_PUSH = 0.3
TARGET_RSS_MB = 100.0
# What pusher's pipeline needs beside the consumer, on the same cores in this bench (CpuMeter labels).
BESIDE = ("RabbitMQ", "PostgreSQL", "bench + fake APNs")

SETTINGS_MODULE = '''\
"""Written by bench/peer.py for one run of the peer (django-push-notifications); deleted after it."""
SECRET_KEY = "bench-peer-not-a-secret"
DEBUG = {debug!r}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "push_notifications"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {database!r}}}}}
PUSH_NOTIFICATIONS_SETTINGS = {push!r}
'''


def peer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peer", action="store_true",
                        help="pusher against django-push-notifications (scratch venv) on the same fake, --repeat "
                             f"interleaved runs of --throughput pushes (default {DEFAULT_BURST:,}); see bench/peer.py")
    parser.add_argument("--auth", choices=["certificate", "token"], default="certificate",
                        help="--peer: the credential both sides push with (a client certificate, or a .p8 key)")


# --- the scratch venv -------------------------------------------------------------------------


def peer_python() -> Path:
    """The scratch venv's interpreter; the venv is made (or remade, when PEER_REQUIREMENTS changed)
    on first use and kept under data/, which git ignores."""
    python, marker = PEER_VENV / "bin" / "python", PEER_VENV / "bench-peer-requirements.txt"
    wanted = " ".join(PEER_REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text().strip() == wanted:
        return python
    say(f"  making the peer's venv {PEER_VENV} with {wanted} ...")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           *PEER_REQUIREMENTS], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip install {wanted} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    marker.write_text(wanted + "\n")
    return python


def peer_versions(python: Path) -> str:
    code = ("import importlib.metadata as m; print(', '.join(f'{n} {m.version(n)}' for n in "
            "('django-push-notifications', 'aioapns', 'h2', 'Django')))")
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


# --- one run of each side ---------------------------------------------------------------------


@dataclass
class Side:
    """One side's figures in one repetition."""

    side: str
    index: int
    asked: int
    receipts: int = 0
    distinct: int = 0
    span_s: float = float("nan")
    rate: float = 0.0  # distinct pushes / s at the fake, first to last receipt
    end_to_end: float = 0.0  # distinct / (hand-over to last receipt)
    cpu_ms: float = float("nan")  # per distinct push
    cpu_ms_settled: float = float("nan")  # pusher: until every delivery has its outcome
    rss_mb: float = 0.0
    load_start: float = 0.0
    load_end: float = 0.0
    other_cores: float = 0.0  # CPU of processes other than the sides, the bench, PostgreSQL, RabbitMQ
    postgres_cores: float = 0.0  # every PostgreSQL process's, other databases' included
    busy_cores: float = 0.0  # the whole machine's
    # pusher: CPU per push of what must run beside the consumer on this machine (RabbitMQ, PostgreSQL,
    # this bench's publisher and the fake APNs), by label
    beside_ms: dict[str, float] = field(default_factory=dict)
    own: str = ""  # what the side itself reports (pusher: delivery statuses; the peer: its outcomes)
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.asked - self.distinct

    @property
    def duplicated(self) -> int:
        return self.receipts - self.distinct


def count_at_fake(fake: Any, tag: str, side: Side, *, key: str, started_at: float) -> None:
    got = received(fake, tag)
    keys = [r.token if key == "token" else r.body.get(key) for r in got]
    side.receipts, side.distinct = len(got), len(set(keys))
    times = sorted(r.received_at for r in got)
    if len(times) > 1 and times[-1] > times[0]:
        side.span_s = times[-1] - times[0]
        side.rate = (side.distinct - 1) / side.span_s
    if times and times[-1] > started_at:
        side.end_to_end = side.distinct / (times[-1] - started_at)
    if got:
        side.notes.append(f"{sum(len(r.raw_body) for r in got) / len(got):.0f} body bytes per push")


def pusher_burst(args: argparse.Namespace, *, run: str, index: int, fake: Any, template: dict[str, Any]) -> Side:
    side = Side("pusher", index, args.throughput, load_start=os.getloadavg()[0])
    consumer = consumer_start(run=f"{run}_{index}", workers=args.workers, prefetch=args.prefetch_one,
                              ca_file=fake.ca_file, extra_env=args.consumer_env_dict, processes=args.processes)
    try:
        warm_up(fake, template, f"bench-{run}-{index}-warm")
        tag = f"bench-{run}-{index}-B"
        with CpuMeter({"consumer": consumer.pid, "bench + fake APNs": os.getpid()}) as meter:
            base = answered(fake)
            cpu_before, started_at = cpu_seconds_tree(consumer.pid), time.time()
            publish_burst(template, tag=tag, count=args.throughput)
            wait_received(fake, tag, args.throughput, base=base, timeout=max(60.0, args.throughput / 50))
            cpu = cpu_seconds_tree(consumer.pid) - cpu_before
        statuses = deliveries(tag, args.throughput, timeout=60)
        cpu_settled = cpu_seconds_tree(consumer.pid) - cpu_before
        count_at_fake(fake, tag, side, key="call-id", started_at=started_at)
        side.cpu_ms = cpu * 1000 / max(side.distinct, 1)
        side.cpu_ms_settled = cpu_settled * 1000 / max(side.distinct, 1)
        side.other_cores = meter.cores.get("other processes", 0.0)
        side.postgres_cores, side.busy_cores = meter.cores.get("PostgreSQL", 0.0), meter.cores.get("machine busy", 0.0)
        side.beside_ms = {label: meter.cores.get(label, 0.0) * meter.seconds * 1000 / max(side.distinct, 1)
                          for label in BESIDE}
        side.own = " ".join(f"{k}={v}" for k, v in sorted(statuses.items())) or "-"
    finally:
        end = consumer_finish(consumer)
        side.rss_mb = max(end.rss_max_mb, end.rss_hwm_mb)
        if end.problems[0]:
            side.notes.append(f"consumer logged {end.problems[0]} WARNING/ERROR lines")
    side.load_end = os.getloadavg()[0]
    return side


def peer_push_settings(args: argparse.Namespace, fake: Any, directory: Path) -> dict[str, Any]:
    """PUSH_NOTIFICATIONS_SETTINGS for the peer, its credential written beside (0600): the same kind
    pusher pushes with."""
    settings: dict[str, Any] = {"APNS_TOPIC": TOPIC, "APNS_USE_SANDBOX": False}
    if args.auth == "token":
        key = args.token_key
        path = directory / f"AuthKey_{key.key_id}.p8"
        settings.update(APNS_AUTH_KEY_PATH=str(path), APNS_AUTH_KEY_ID=key.key_id, APNS_TEAM_ID=key.team_id)
        secret = key.key_pem
    else:
        path = directory / "client.pem"
        settings["APNS_CERTIFICATE"] = str(path)
        secret = args.client_cert.pem
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(secret)
    return settings


def peer_burst(args: argparse.Namespace, *, run: str, index: int, fake: Any, python: Path, directory: Path,
               template: dict[str, Any]) -> Side:
    side = Side("peer", index, args.throughput, load_start=os.getloadavg()[0])
    tag = f"bench-{run}-{index}-peer"
    here = directory / str(index)
    here.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="bench-peer-db-") as database_dir:
        (here / "peer_bench_settings.py").write_text(SETTINGS_MODULE.format(
            database=os.path.join(database_dir, "peer.sqlite3"), push=args.peer_push_settings, debug=args.debug))
        # The Kamailio payload pusher forwards, tagged like pusher's, in the peer's `extra`.
        extra = dict(template["Payload"], bench_run=tag, **{"call-id": str(uuid.uuid4())})
        config = {"host": fake.host, "port": fake.port, "ca_file": fake.ca_file, "count": args.throughput,
                  "token_prefix": uuid.uuid4().hex + uuid.uuid4().hex[:24], "alert": "Incoming call", "extra": extra}
        (here / "config.json").write_text(json.dumps(config))
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="peer_bench_settings", PYTHONPATH=str(here),
                   PYTHONUNBUFFERED="1")
        base = answered(fake)
        with CpuMeter({"bench + fake APNs": os.getpid()}) as meter, open(here / "stderr.log", "wb") as log:
            done = subprocess.run([str(python), str(RUNNER), str(here / "config.json")], env=env, cwd=here,
                                  stdout=subprocess.PIPE, stderr=log, timeout=300 + args.throughput / 20)
            # Pushes still on the wire when the peer gave up on them: until the fake's count stops moving.
            last = [answered(fake), time.monotonic()]

            def still() -> bool:
                now = answered(fake)
                if now != last[0]:
                    last[:] = [now, time.monotonic()]
                return time.monotonic() - last[1] >= 0.5

            wait_until(still, timeout=10, interval=0.1)
    lines = (here / "stderr.log").read_text(errors="replace").splitlines()
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"the peer exited with {done.returncode}; {here / 'stderr.log'}:\n" + "\n".join(lines[-20:]))
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    count_at_fake(fake, tag, side, key="token", started_at=report["started_at"])
    side.cpu_ms = report["cpu_s"] * 1000 / max(side.distinct, 1)
    side.rss_mb = report["rss_hwm_mb"]
    own_cores = report["process_cpu_s"] / max(meter.seconds, 1e-6)
    side.other_cores = max(0.0, meter.cores.get("other processes", 0.0) - own_cores)
    side.postgres_cores, side.busy_cores = meter.cores.get("PostgreSQL", 0.0), meter.cores.get("machine busy", 0.0)
    errors = " ".join(f"{k}={v}" for k, v in sorted(report["errors"].items()))
    side.own = f"Success={report['success']}" + (f" {errors}" if errors else "") + (
        f" {report['failure']}" if report["failure"] else "")
    side.notes.append(f"call {report['call_s']:.2f} s; RSS {report['rss_before_mb']:.0f} MB before it, "
                      f"{report['rss_after_mb']:.0f} after; {answered(fake) - base} answers at the fake; "
                      f"stderr {len(lines)} lines{stderr_kinds(lines)}")
    side.load_end = os.getloadavg()[0]
    return side


def stderr_kinds(lines: list[str]) -> str:
    """The exceptions the peer's stderr ends its tracebacks with, and the connections asyncio saw die."""
    kinds = collections.Counter(m.group(1).rsplit(".", 1)[-1] for m in map(EXCEPTION_LINE.match, lines) if m)
    kinds.update(line for line in lines if line == "Fatal error on SSL protocol")
    return "".join(f", {n} x {kind}" for kind, n in kinds.most_common(4))


# --- the run ----------------------------------------------------------------------------------


def peer_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.steady or args.first_push or not (1 <= args.repeat <= 50 and 1 <= args.throughput and 0 <= args.gap <= 600):
        parser.error("--peer: not with --steady or --first-push; --repeat 1..50, --throughput >= 1, --gap 0..600")
    run = run_id()
    log_path = setup(log_name=f"bench_push_peer_{run}")

    from django.conf import settings

    from push import services
    from push.models import Credential, Delivery, Provider, PushApp
    from tests.fakes.apns import FakeApns
    from tests.fixtures import sample

    args.prefetch_one = int((args.prefetch or str(settings.PUSHER_PREFETCH)).split(",")[0])
    args.workers, args.debug = args.workers or settings.PUSHER_WORKERS, bool(settings.DEBUG)
    template = sample("push_req_kamailio_master.json")["body"]
    python = peer_python()
    # Room for every record of the run (warm-ups included), so that none is dropped before counted.
    fake = FakeApns.start(delay=args.delay_ms / 1000.0, max_records=(2 * args.throughput + 50) * args.repeat + 1000)
    directory = PEER_RUNS / run
    directory.mkdir(parents=True)
    say(f"push bench {run}, pusher against the peer: database {database_label()}; bench log {log_path}")
    say(f"  peer: {peer_versions(python)} (venv {PEER_VENV}); fake APNs (in this process) on {fake.address}, "
        f"{args.delay_ms:g} ms per answer; credential: {args.auth}; {args.repeat} x (pusher burst, peer bulk) of "
        f"{args.throughput:,}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    app = credential = None
    sides: list[Side] = []
    try:
        if args.auth == "token":
            args.token_key = fake.new_token_key(team_id="TEAM123456")
            parsed = services.credential_parse(kind="apns_token", data=args.token_key.key_pem,
                                               key_id=args.token_key.key_id, team_id=args.token_key.team_id)
            credential = services.credential_save(name=f"bench apns token {run}", parsed=parsed)
            app, _ = PushApp.objects.update_or_create(app_id=APP_ID, provider=Provider.APPLE, defaults={
                "credential": credential, "host": fake.host, "port": fake.port, "priority": 10, "push_type": "voip",
                "enabled": True, "topic": BUNDLE_ID, "expiration": None, "collapse_id": "", "extra_headers": {},
                "flagged_reason": "", "bad_device_token_count": 0})
        else:
            app, credential = apns_app_setup(fake, run)
            args.client_cert = fake.ca.issue_client_cert(BUNDLE_ID, voip=True, topics=[BUNDLE_ID, TOPIC])
        args.peer_push_settings = peer_push_settings(args, fake, directory)
        for index in range(1, args.repeat + 1):
            for one in ("pusher", "peer"):
                time.sleep(args.gap)
                if one == "pusher":
                    sides.append(pusher_burst(args, run=run, index=index, fake=fake, template=template))
                else:
                    sides.append(peer_burst(args, run=run, index=index, fake=fake, python=python,
                                            directory=directory, template=template))
                s = sides[-1]
                say(f"  run {index} {one}: {s.distinct:,}/{s.asked:,} delivered at {s.rate:,.0f}/s, lost {s.lost}, "
                    f"duplicated {s.duplicated}; {s.own}; load {s.load_start:.2f} -> {s.load_end:.2f}"
                    + "".join(f"; {note}" for note in s.notes))
    finally:
        fake_stats = fake.stats
        fake.stop()
        if not args.keep:
            Delivery.objects.filter(msg_id__startswith=f"bench-{run}-").delete()
            shutil.rmtree(directory, ignore_errors=True)
        if app is not None:
            PushApp.objects.filter(pk=app.pk).delete()
        if credential is not None:
            Credential.objects.filter(pk=credential.pk).delete()
    peer_report(args, sides)
    say(f"fake APNs answers: {fake_stats}")


def peer_report(args: argparse.Namespace, sides: list[Side]) -> None:
    headers = ["run", "asked", "delivered", "lost", "dup", "span s", "pushes/s", "end-to-end/s", "CPU ms/push",
               "RSS peak MB", "load start", "load end", "busy cores", "PG cores", "other cores", "own report"]
    for name, extra in (("pusher", "CPU ms/push settled"), ("peer", "")):
        mine = [s for s in sides if s.side == name]
        say()
        say(f"{name}: {args.throughput:,} pushes per run, fake answering after {args.delay_ms:g} ms")
        say(table(headers[:9] + ([extra] if extra else []) + headers[9:], [
            [s.index, s.asked, s.distinct, s.lost, s.duplicated, s.span_s, s.rate, s.end_to_end, s.cpu_ms]
            + ([s.cpu_ms_settled] if extra else [])
            + [s.rss_mb, s.load_start, s.load_end, s.busy_cores, s.postgres_cores, s.other_cores, s.own]
            for s in mine
        ]))
    pusher = [s for s in sides if s.side == "pusher"]
    peer = [s for s in sides if s.side == "peer"]
    if not pusher or not peer:
        return

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    rate = (median([s.rate for s in pusher]), median([s.rate for s in peer]))
    e2e = (median([s.end_to_end for s in pusher]), median([s.end_to_end for s in peer]))
    cpu = (median([s.cpu_ms for s in pusher]), median([s.cpu_ms for s in peer]))
    rss = (max(s.rss_mb for s in pusher), max(s.rss_mb for s in peer))
    say()
    say(f"Summary over {len(pusher)} interleaved runs (medians; RSS the highest run; lost/dup summed):")
    say(table(["", "pusher", "peer", "pusher/peer", "target"], [
        ["pushes/s at the fake", rate[0], rate[1], ratio(*rate), f">= {TARGET_RATIO:g}x"],
        ["end-to-end pushes/s", e2e[0], e2e[1], ratio(*e2e), "-"],
        ["CPU ms per push", cpu[0], cpu[1], ratio(*cpu), f"pusher <= {TARGET_CPU_MS_PER_PUSH:g}"],
        ["peak RSS MB", rss[0], rss[1], ratio(*rss), f"pusher <= {TARGET_RSS_MB:g}"],
        ["lost", sum(s.lost for s in pusher), sum(s.lost for s in peer), "-", "pusher 0"],
        ["duplicated", sum(s.duplicated for s in pusher), sum(s.duplicated for s in peer), "-", "pusher 0"],
        ["load start..end", f"{min(s.load_start for s in pusher):.2f}..{max(s.load_end for s in pusher):.2f}",
         f"{min(s.load_start for s in peer):.2f}..{max(s.load_end for s in peer):.2f}", "-", "-"],
    ]))
    meets = ratio(*rate) >= TARGET_RATIO and cpu[0] <= TARGET_CPU_MS_PER_PUSH and rss[0] <= TARGET_RSS_MB and not any(
        s.lost or s.duplicated for s in pusher)
    say(f"pusher meets the issue's targets: {'yes' if meets else 'NO'}")
    ceiling_report(pusher, consumer_ms=cpu[0], target_rate=TARGET_RATIO * rate[1])
    say()
    say("delivered = distinct pushes of the run at the fake (pusher: call-id; peer: device token); lost = asked -")
    say("delivered; dup = receipts - delivered. pushes/s = (delivered - 1) / (first to last receipt);")
    say("end-to-end/s = delivered / (hand-over to last receipt): pusher's first publish, the peer's send_message")
    say("call (its connection set-up included; the peer opens a new client per bulk). CPU ms/push: pusher's")
    say("consumer (all its processes) from the first publish to the last receipt (settled: until every delivery")
    say("has its outcome in the database), the peer's process over its send_message call; per delivered push.")
    say("RSS peak: the consumer's (sampled and VmHWM), the peer's VmHWM (its Django, SQLite and rows included).")
    say("own report: pusher's delivery statuses; the peer's send_message outcomes (from its APNSError message).")
    say("cores over the side's run: busy = the whole machine; PG = every PostgreSQL process (other databases'")
    say("work included: the peer uses none); other = processes other than the side, this bench, PostgreSQL and")
    say("RabbitMQ (other work on the machine). load = 1-minute load average when the side's run started / ended.")


def ceiling_report(pusher: list[Side], *, consumer_ms: float, target_rate: float) -> None:
    """The most pushes/s this machine's cores carry through pusher's pipeline: the consumer shares
    them with RabbitMQ, PostgreSQL, the publisher and the fake, whose CPU per push is measured in the
    same runs. A lower bound on their cost: PostgreSQL's writes that end after the last receipt are
    not counted, nor is any process's waiting for a core."""
    beside = {label: statistics.median([s.beside_ms.get(label, 0.0) for s in pusher]) for label in BESIDE}
    total = sum(beside.values())
    cores = os.cpu_count() or 1
    say()
    say("What these cores can carry through pusher's pipeline (medians of pusher's runs): beside the consumer,")
    say("a push costs this machine " + ", ".join(f"{label} {ms:.3f}" for label, ms in beside.items())
        + f" = {total:.3f} ms of CPU.")
    say(table(["consumer CPU per push", f"pushes/s on {cores} cores at most"], [
        [f"{consumer_ms:.2f} ms (as measured)", _ceiling(cores, total + consumer_ms)],
        [f"{TARGET_CPU_MS_PER_PUSH:g} ms (the issue's target)", _ceiling(cores, total + TARGET_CPU_MS_PER_PUSH)],
        ["0 ms (a consumer that costs nothing)", _ceiling(cores, total)],
    ]))
    say(f"{TARGET_RATIO:g}x the peer's rate is {target_rate:,.0f} pushes/s"
        + (": more than this machine carries even with a consumer that costs nothing." if
           target_rate > _ceiling(cores, total) else "."))


def _ceiling(cores: int, ms_per_push: float) -> float:
    return cores * 1000 / ms_per_push if ms_per_push > 0 else float("inf")
