"""reg_success drain benchmark: `python -m bench.registration [--devices 5000] [--repeat 1]`.

One consumer (kazoo.worker.Worker, in this process, in a thread) drains a bench queue that
was filled beforehand with N reg_success messages for N distinct devices, published as Kamailio
publishes them. Three phases per repetition:

  changed (new devices)    first sight of each device: creates the device and token rows
  unchanged (same again)   the same N messages again: recognised from the digest, no write
  changed (token rotated)  a new token for every device: rewrites the push object, retires the old token

The consumer's registration lanes hand batches to `message_process_batch`, as in production,
wrapped in a timer: a message's latency is the time inside the batch that held it (decode, rule
match, Contact parse, database for the whole batch), not queueing. `--per-message` runs the lanes
one message at a time through `message_process` instead (the path before batching). The queue is
filled before the consumer starts, so publisher and consumer never compete for the CPU; the
figures say so.

Runs with DEBUG off (production-shaped) unless the environment sets DEBUG. Prints figures only;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import re
import resource
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    CpuMeter,
    broker_channel,
    broker_cleanup,
    cpu_seconds,
    database_label,
    percentile,
    queue_depth,
    rss_mb,
    run_id,
    say,
    setup,
    table,
    wait_until,
)
from bench.profile import Profiler, summary

# Issue 15's: one consumer process on PostgreSQL.
TARGET_UNCHANGED_PER_S = 5000
TARGET_CHANGED_PER_S = 1500
RULE_NAME = "AcmePhone"


@dataclass
class Device:
    device_id: str
    username: str
    token: str


@dataclass
class PhaseResult:
    name: str
    messages: int
    outcomes: Counter
    drain_s: float
    latencies_s: list[float]
    cpu_s: float
    foreign: int
    target: int
    cores: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.drain_s if self.drain_s > 0 else float("nan")


@dataclass
class TimingHandler:
    """The consumer's handler with a stopwatch around it: `batch` (a lane's batch, through
    `process_batch`) or, called, one message (through `process`). Messages of other publishers
    that reach the bench queue through its bindings (a test run on the same broker) are acked
    untouched and counted apart."""

    marker: bytes
    process: Callable[[Any], Any]
    process_batch: Callable[[Sequence[Any]], list[Any]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    first_start: float | None = None
    last_end: float | None = None
    foreign: int = 0

    def __call__(self, message: Any) -> Any:
        from kazoo.wire import Action, Handled

        if self.marker not in message.body:
            with self.lock:
                self.foreign += 1
            return Handled(Action.ACK, "foreign", "ignored", "not published by this bench run")
        started = time.perf_counter()
        outcome = "error"
        try:
            handled = self.process(message)
            outcome = handled.outcome
            return handled
        finally:
            ended = time.perf_counter()
            with self.lock:
                self.latencies.append(ended - started)
                self.outcomes[outcome] += 1
                if self.first_start is None or started < self.first_start:
                    self.first_start = started
                if self.last_end is None or ended > self.last_end:
                    self.last_end = ended

    def batch(self, messages: Sequence[Any]) -> list[Any]:
        from kazoo.wire import Action, Handled

        assert self.process_batch is not None
        ours = [m for m in messages if self.marker in m.body]
        started = time.perf_counter()
        outcomes: list[str] = ["error"] * len(ours)
        try:
            handled = self.process_batch(ours) if ours else []
            outcomes = [h.outcome for h in handled]
        finally:
            ended = time.perf_counter()
            with self.lock:
                self.foreign += len(messages) - len(ours)
                if ours:
                    self.latencies.extend([ended - started] * len(ours))
                    self.outcomes.update(outcomes)
                    if self.first_start is None or started < self.first_start:
                        self.first_start = started
                    if self.last_end is None or ended > self.last_end:
                        self.last_end = ended
        mine = iter(handled)
        foreign = Handled(Action.ACK, "foreign", "ignored", "not published by this bench run")
        return [next(mine) if self.marker in m.body else foreign for m in messages]

    @property
    def handled(self) -> int:
        with self.lock:
            return len(self.latencies)


def _noop(message: Any) -> Any:
    from kazoo.wire import Action, Handled

    return Handled(Action.ACK, "reg_success", "noop")


def _noop_batch(messages: Sequence[Any]) -> list[Any]:
    return [_noop(m) for m in messages]


def reg_body(template: dict[str, Any], *, account_id: str, device: Device) -> dict[str, Any]:
    """The Kamailio sample reg_success, made to be `device` of `account_id`."""
    body = copy.deepcopy(template)
    old_user = template["Username"]
    old_token = _sample_token(template["Contact"])
    body["Contact"] = template["Contact"].replace(old_user, device.username).replace(old_token, device.token)
    for name in ("Username", "From-User", "To-User"):
        body[name] = device.username
    ccv = body["Custom-Channel-Vars"]
    ccv.update({"Username": device.username, "Account-ID": account_id, "Authorizing-ID": device.device_id})
    body["Call-ID"] = f"{uuid.uuid4().hex[:14]}@192.0.2.44"
    body["Msg-ID"] = str(uuid.uuid4())
    return body


def _sample_token(contact: str) -> str:
    return contact.split("pn-tok=", 1)[1].split(";", 1)[0].split(">", 1)[0]


def routing_key(realm: str, username: str) -> str:
    # As Kamailio's kazoo module builds it: dots in the realm encoded as %2E.
    return f"registration.success.{realm.replace('.', '%2E')}.{username}"


def rule_ensure() -> None:
    from registry.models import UserAgentRule
    from registry.selectors import rules_cache_clear

    UserAgentRule.objects.update_or_create(
        name=RULE_NAME,
        defaults={
            "position": 10,
            "enabled": True,
            "regex": "^AcmePhone",
            "properties": {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"},
        },
    )
    rules_cache_clear()


def prefill(queue: str, exchange: str, messages: list[tuple[str, bytes]], *, timeout: float) -> float:
    """Publish every message (as Kamailio does: content type only, transient), then wait until
    the broker holds them all. Returns the publish rate."""
    import pika

    props = pika.BasicProperties(content_type="application/json")
    with broker_channel() as channel:
        base, _ = queue_depth(channel, queue)
        started = time.perf_counter()
        for key, body in messages:
            channel.basic_publish(exchange, key, body, props)
        elapsed = time.perf_counter() - started
        def landed() -> bool:
            return queue_depth(channel, queue)[0] >= base + len(messages)

        if not wait_until(landed, timeout=timeout, interval=0.05):
            raise SystemExit(f"the broker holds {queue_depth(channel, queue)[0]} of {len(messages)} messages")
    return len(messages) / elapsed if elapsed > 0 else float("nan")


def drain(
    config: Any, handler: TimingHandler, expected: int, *, timeout: float,
    window: contextlib.AbstractContextManager[Any] | None = None,
) -> None:
    """Run one consumer until it handled `expected` bench messages (bounded by `timeout`).
    `window` is entered once the consumer is connected and left as soon as the last message is
    handled, before the consumer stops (its lanes close their PostgreSQL sessions on the way out,
    and an exited backend's CPU can no longer be read)."""
    from core.logqueue import log_queue_start, log_queue_stop
    from kazoo.worker import Worker

    worker = Worker(config, handler=handler, batch_handler=handler.batch if handler.process_batch else None)
    logs = log_queue_start()  # as runconsumer does: the lanes hand their log lines to one writer thread
    thread = threading.Thread(target=worker.run, name="bench-consumer", daemon=True)
    thread.start()
    try:
        if not worker.connected.wait(30):
            raise SystemExit("the consumer did not connect to RabbitMQ within 30 s")
        with window or contextlib.nullcontext():
            drained = wait_until(lambda: handler.handled >= expected, timeout=timeout, interval=0.005)
        if not drained:
            say(f"  ! drain timed out after {timeout:.0f} s: {handler.handled} of {expected} handled")
    finally:
        worker.stop()
        thread.join(timeout=40)
        log_queue_stop(logs)
        if thread.is_alive():
            say("  ! the consumer did not stop within 40 s")


def run_phase(
    name: str,
    *,
    config: Any,
    bodies: list[dict[str, Any]],
    marker: bytes,
    realm: str,
    target: int,
    profile_dir: str | None = None,
    process: Callable[[Any], Any] | None = None,
    process_batch: Callable[[Sequence[Any]], list[Any]] | None = None,
    per_message: bool = False,
) -> PhaseResult:
    from kazoo.wire import message_process, message_process_batch

    messages = [
        (routing_key(realm, body["Username"]), json.dumps(body).encode()) for body in bodies
    ]
    publish_rate = prefill(config.queue, "registrar", messages, timeout=60)
    handler = TimingHandler(
        marker=marker, process=process or message_process,
        process_batch=None if per_message else (process_batch or message_process_batch),
    )
    profile_path = ""
    profiler: Any = contextlib.nullcontext()
    if profile_dir:
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        profile_path = os.path.join(profile_dir, f"registration_{slug}.txt")
        profiler = Profiler(os.getpid(), profile_path)
    meter = CpuMeter({"consumer": os.getpid()})
    cpu_used = 0.0

    @contextlib.contextmanager
    def window() -> Any:
        nonlocal cpu_used
        cpu_before = cpu_seconds()
        with meter:
            yield
        cpu_used = cpu_seconds() - cpu_before

    with profiler:
        drain(config, handler, len(messages), timeout=max(60.0, len(messages) / 20), window=window())
    span = (handler.last_end or 0.0) - (handler.first_start or 0.0)
    result = PhaseResult(
        name=name, messages=handler.handled, outcomes=handler.outcomes, drain_s=span,
        latencies_s=handler.latencies, cpu_s=cpu_used, foreign=handler.foreign, target=target,
        cores=meter.cores,
    )
    say(
        f"  {name}: pre-filled {len(messages)} at {publish_rate:,.0f}/s, drained {result.messages} in "
        f"{span:.2f} s ({result.rate:,.0f}/s), outcomes {dict(result.outcomes)}"
        + (f", {result.foreign} foreign messages skipped" if result.foreign else "")
    )
    say(f"    CPU in cores over the drain: {meter.line()}")
    if profile_path:
        say(f"  profile {profile_path}:")
        say(summary(profile_path))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=5000, help="distinct devices (messages per phase)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of the three phases, fresh devices each")
    parser.add_argument("--keep", action="store_true", help="keep the bench devices in the database")
    parser.add_argument("--profile", metavar="DIR", help="record a py-spy profile of every phase into DIR")
    parser.add_argument("--lanes", type=int, default=0,
                        help="registration lanes of the consumer (default: WorkerConfig's, as runconsumer uses)")
    parser.add_argument("--per-message", action="store_true",
                        help="lanes handle one message at a time (message_process), not batches")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 200_000 or not 1 <= args.repeat <= 20:
        parser.error("--devices must be 1..200000 and --repeat 1..20")

    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    run = run_id()
    log_path = setup(log_name=f"bench_registration_{run}")

    from django.conf import settings

    from kazoo import topology
    from kazoo.worker import WorkerConfig
    from registry.models import Device as DeviceRow
    from tests.amqp import sample

    template = sample("reg_success_kamailio_master.json")["body"]
    realm = template["Realm"]
    config = WorkerConfig(
        amqp_url=settings.AMQP_URL,
        queue=f"pusher_bench_{run}",
        # Pre-filled with thousands of messages while no consumer runs: Kazoo's auto-delete,
        # 100-message queue would not hold them.
        queue_declaration=topology.PUSHER_OWN_QUEUE,
        dead_letter_exchange=f"pusher_bench_dlx_{run}",
        dead_letter_queue=f"pusher_bench_dlq_{run}",
        prefetch=settings.PUSHER_PREFETCH,
        push_workers=settings.PUSHER_WORKERS,
    )
    if args.lanes:
        config = dataclasses.replace(config, registration_lanes=args.lanes)
    say(f"registration bench {run}: {args.devices} devices x {args.repeat}, database {database_label()}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    mode = "one message at a time" if args.per_message else "batches"
    say(f"  one consumer in this process (kazoo.worker.Worker, {config.registration_lanes} registration lanes "
        f"handling {mode}, prefetch {config.prefetch}); service log lines -> {log_path}")
    say("  each phase: the queue is pre-filled first, then drained: publisher and consumer never overlap")

    rule_ensure()
    accounts: list[str] = []
    results: list[PhaseResult] = []
    try:
        # The consumer declares and binds its queue itself; run it once on the empty queue so that
        # the pre-fill lands in a queue declared exactly as in production.
        drain(config, TimingHandler(marker=b"\x00never", process=lambda m: None), 0, timeout=0)
        for rep in range(args.repeat):
            account = secrets.token_hex(16)
            accounts.append(account)
            marker = account.encode()
            devices = [
                Device(device_id=secrets.token_hex(16), username=f"bench_{run}_{rep}_{i:06d}",
                       token=secrets.token_hex(32))
                for i in range(args.devices)
            ]
            bodies = [reg_body(template, account_id=account, device=d) for d in devices]
            suffix = f" #{rep + 1}" if args.repeat > 1 else ""
            if rep == 0:
                # The consumer's own ceiling: the same messages, a handler that does nothing.
                results.append(run_phase("plumbing only (no-op handler)", config=config, bodies=bodies, marker=marker,
                                         realm=realm, target=0, process=_noop, process_batch=_noop_batch,
                                         per_message=args.per_message))
            results.append(run_phase(f"changed (new devices){suffix}", config=config, bodies=bodies, marker=marker,
                                     realm=realm, target=TARGET_CHANGED_PER_S, profile_dir=args.profile,
                                     per_message=args.per_message))
            results.append(run_phase(f"unchanged (same messages again){suffix}", config=config, bodies=bodies,
                                     marker=marker, realm=realm, target=TARGET_UNCHANGED_PER_S,
                                     profile_dir=args.profile, per_message=args.per_message))
            for d in devices:
                d.token = secrets.token_hex(32)
            bodies = [reg_body(template, account_id=account, device=d) for d in devices]
            results.append(run_phase(f"changed (token rotated){suffix}", config=config, bodies=bodies, marker=marker,
                                     realm=realm, target=TARGET_CHANGED_PER_S, profile_dir=args.profile,
                                     per_message=args.per_message))
    finally:
        broker_cleanup(queues=[config.queue, config.dead_letter_queue], exchanges=[config.dead_letter_exchange])
        if not args.keep and accounts:
            DeviceRow.objects.filter(account_id__in=accounts).delete()

    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say()
    say(table(
        ["phase", "msgs", "msg/s", "target/s", "meets", "p50 ms", "p90 ms", "p99 ms", "max ms", "CPU ms/msg",
         "1-core ceiling/s", "consumer cores", "PG cores", "other cores", "outcomes"],
        [
            [
                r.name, r.messages, r.rate, r.target or "-",
                ("yes" if r.rate >= r.target else "NO") if r.target else "-",
                percentile(r.latencies_s, 50) * 1000, percentile(r.latencies_s, 90) * 1000,
                percentile(r.latencies_s, 99) * 1000, max(r.latencies_s, default=float("nan")) * 1000,
                r.cpu_s * 1000 / max(r.messages, 1), r.messages / r.cpu_s if r.cpu_s else float("nan"),
                r.cores.get("consumer", 0.0), r.cores.get("PostgreSQL", 0.0),
                r.cores.get("other processes", 0.0), " ".join(f"{k}={v}" for k, v in sorted(r.outcomes.items())),
            ]
            for r in results
        ],
    ))
    say()
    say("msg/s = bench messages / (last handler end - first handler start); latency = time inside the")
    say("lane's batch that held the message (message_process_batch: decode, rule match, Contact parse,")
    say("database; with --per-message, message_process for the one message); CPU ms/msg = this process's CPU")
    say("time over the drain per message (consumer threads + pika); 1-core ceiling = messages per CPU")
    say("second: the rate one consumer process could reach with a whole core to itself (its Python code")
    say("holds the GIL), whatever else runs on the machine; cores = CPU used over the drain by")
    say("the consumer, by PostgreSQL (all its databases) and by other processes on this 2-CPU machine")
    say("(RabbitMQ is in the per-phase lines). Targets: 5,000 unchanged/s and 1,500 changed/s on one")
    say("consumer process; reported, not asserted.")
    rss_now, _ = rss_mb()
    say(f"consumer process RSS: max {max_rss_mb:.1f} MB (getrusage ru_maxrss), now {rss_now:.1f} MB "
        "(in-process: includes the bench's own publisher and bookkeeping)")


if __name__ == "__main__":
    main()
