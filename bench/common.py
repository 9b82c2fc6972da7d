"""What both benchmarks share: the environment, the bench database, the broker, figures.

`setup()` must run before anything imports Django models: it sets the environment defaults
(production-shaped: DEBUG off; the PostgreSQL bench database), creates that database if it is
missing, then sets Django up and migrates.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/pusher_bench"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def bench_environ() -> dict[str, str]:
    """The environment the bench (and a consumer it starts) runs with, unless the caller's
    environment says otherwise: production-shaped (DEBUG off: with DEBUG on, Django records every
    SQL query, a cost and a memory no production process pays), on PostgreSQL."""
    defaults = {
        "DEBUG": "0",
        "DATABASE_URL": DEFAULT_DATABASE_URL,
        "AMQP_URL": DEFAULT_AMQP_URL,
        "DJANGO_SETTINGS_MODULE": "pusher_site.settings",
        "SECURE_SSL_REDIRECT": "0",
        # Dev values, so that the production-shaped settings boot; the key is settings.py's dev
        # key, so stored credentials stay readable whether a run sets DEBUG=1 or not.
        "SECRET_KEY": "bench-insecure-not-a-secret-do-not-use-in-production",
        "FIELD_ENCRYPTION_KEY": "ZGV2LWZha2Uta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    return dict(os.environ)


def require_loopback(url: str, what: str) -> None:
    host = urlsplit(url).hostname or ""
    if host and host not in LOOPBACK:
        raise SystemExit(f"{what} points at {host}: the benchmarks only talk to loopback")


def database_create_if_missing(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        return
    import psycopg

    name = unquote(parts.path.lstrip("/"))
    maintenance = parts._replace(scheme="postgresql", path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")


def setup(*, log_name: str) -> str:
    """Environment, database, Django, migrations; the service's log lines go to a file (the
    consumer logs one INFO line per message: kept, so its cost is measured, but off the
    terminal). Returns the log file path."""
    env = bench_environ()
    require_loopback(env["DATABASE_URL"], "DATABASE_URL")
    require_loopback(env["AMQP_URL"], "AMQP_URL")
    if env.get("REDIS_URL"):
        require_loopback(env["REDIS_URL"], "REDIS_URL")
    database_create_if_missing(env["DATABASE_URL"])

    import django
    from django.core.management import call_command

    django.setup()
    log_path = os.path.join(tempfile.gettempdir(), f"{log_name}.log")
    stream = open(log_path, "w")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)
    call_command("migrate", interactive=False, verbosity=0)
    return log_path


def database_label() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    label = f"{db['ENGINE'].rsplit('.', 1)[-1]} {db.get('HOST') or ''}:{db.get('PORT') or ''}/{db['NAME']}"
    return f"{label}, DEBUG={'on (Django records every SQL query)' if settings.DEBUG else 'off'}"


def run_id() -> str:
    return uuid.uuid4().hex[:10]


# --- broker ---------------------------------------------------------------------------------


@contextmanager
def broker_channel() -> Iterator[Any]:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def queue_depth(channel: Any, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of an existing queue."""
    ok = channel.queue_declare(queue, passive=True)
    return ok.method.message_count, ok.method.consumer_count


def broker_cleanup(*, queues: Sequence[str], exchanges: Sequence[str] = ()) -> None:
    import pika.exceptions

    with broker_channel() as channel:
        for queue in queues:
            try:
                channel.queue_delete(queue)
            except pika.exceptions.ChannelClosedByBroker:
                channel = channel.connection.channel()
        for exchange in exchanges:
            try:
                channel.exchange_delete(exchange)
            except pika.exceptions.ChannelClosedByBroker:
                channel = channel.connection.channel()


# --- figures --------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        padded = (c.rjust(w) if n and _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True))
        lines.append("  ".join(padded))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("-", "").isdigit()


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc (0 when unreadable)."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in values:
                    values[name] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds a process has used (threads included)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_tree(pid: int) -> float:
    """`cpu_seconds` of a process and its child processes: `runconsumer --processes N`'s consumers
    under their supervisor."""
    return sum(cpu_seconds(one) for one in process_tree(pid))


def process_tree(pid: int) -> list[int]:
    """The process and its direct children, from /proc."""
    found = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            found.append(int(entry))
    return found


def log_problems(path: str, *, top: int = 4) -> tuple[int, list[str]]:
    """How many WARNING/ERROR lines the consumer logged, and the most frequent kinds."""
    kinds: collections.Counter[str] = collections.Counter()
    count = 0
    with contextlib.suppress(OSError), open(path, errors="replace") as handle:
        for line in handle:
            if " WARNING " in line or " ERROR " in line or "Traceback" in line:
                count += 1
                text = line.split(" ", 3)[-1].strip()
                kinds[re.sub(r"\d+(\.\d+)?", "#", text)[:110]] += 1
    return count, [f"{n} x {k}" for k, n in kinds.most_common(top)]


def wait_until(predicate: Any, *, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def say(text: str = "") -> None:
    print(text, flush=True)
    sys.stdout.flush()


def _proc_cpu_by_name(names: Sequence[str]) -> dict[str, dict[int, float]]:
    """CPU seconds used so far by each process whose command name is one of `names`, by pid."""
    totals: dict[str, dict[int, float]] = {name: {} for name in names}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        if comm in totals:
            fields = text.rsplit(")", 1)[1].split()
            totals[comm][int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    return totals


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    # Per pid, so that a process that exits meanwhile (a closed PostgreSQL backend) does not
    # make the sum negative; its last slice is missed instead.
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def _system_busy_seconds() -> float:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Where the machine's CPU went over an interval, in cores: the processes under test, the
    broker and the database (all of their work, not only ours), and everything else."""

    SERVICES = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ"}

    def __init__(self, pids: dict[str, int], *, trees: frozenset[str] = frozenset({"consumer"})) -> None:
        self.pids = pids
        self.trees = trees  # labels whose child processes count too (the consumer's, under --processes)
        self._start: tuple[float, float, dict[str, float], dict[str, dict[int, float]]] | None = None
        self.cores: dict[str, float] = {}
        self.seconds = 0.0  # the interval's length, once it ended

    def __enter__(self) -> CpuMeter:
        self._start = (time.monotonic(), _system_busy_seconds(), self._own(), _proc_cpu_by_name(list(self.SERVICES)))
        return self

    def _own(self) -> dict[str, float]:
        return {label: cpu_seconds_tree(pid) if label in self.trees else cpu_seconds(pid)
                for label, pid in self.pids.items()}

    def __exit__(self, *exc: Any) -> None:
        assert self._start is not None
        wall0, busy0, own0, svc0 = self._start
        wall = max(time.monotonic() - wall0, 1e-6)
        self.seconds = wall
        own1, svc1 = self._own(), _proc_cpu_by_name(list(self.SERVICES))
        cores = {label: (own1[label] - own0[label]) / wall for label in own1}
        cores.update({self.SERVICES[n]: _delta(svc0[n], svc1[n]) / wall for n in self.SERVICES})
        busy = (_system_busy_seconds() - busy0) / wall
        cores["other processes"] = max(0.0, busy - sum(cores.values()))
        cores["machine busy"] = busy
        self.cores = cores

    def line(self) -> str:
        return ", ".join(f"{label} {value:.2f}" for label, value in self.cores.items())
