"""`runconsumer --processes N` as an operator runs it: N consumer processes share the queue on the
real broker (the session's vhost), one /metrics sums their counters, /ready needs every one of them,
SIGTERM stops them all (exit 0), and a child that dies takes the lot down with a non-zero exit for
systemd to restart.

The command runs in a subprocess with production settings and SQLite in a temporary directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.amqp import amqp_url, broker_channel, publish, wait_for
from tests.fixtures import sample
from tests.test_production import command_env, free_port, get
from tests.test_settings import manage

pytestmark = pytest.mark.rabbitmq

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0


@dataclass
class Supervised:
    process: subprocess.Popen[bytes]
    port: int
    queue: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> dict:
        response = get(self.port, "/ready")
        return {"status": response.status, **json.loads(response.body)}

    def child_pids(self) -> list[int]:
        return [p["pid"] for p in self.ready()["processes"]]

    def metric_sum(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels, from the supervisor's /metrics."""
        total = 0.0
        for line in get(self.port, "/metrics").body.decode().splitlines():
            found = re.match(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", line)
            if found and all(f'{k}="{v}"' in (found[1] or "") for k, v in labels.items()):
                total += float(found[2])
        return total


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("processes")
    done = manage(command_env(data_dir), "migrate", "--noinput")
    assert done.returncode == 0, done.stderr[-2000:]
    return data_dir


@contextmanager
def supervised(data_dir: Path, processes: int = 2) -> Iterator[Supervised]:
    port, queue = free_port(), f"pusher_test_processes_{uuid.uuid4().hex[:8]}"
    env = command_env(data_dir, AMQP_URL=amqp_url())
    log = data_dir / f"{queue}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runconsumer", "--processes", str(processes), "--queue", queue,
             "--metrics-port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    running = Supervised(process, port, queue, log)
    try:
        def all_ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"runconsumer --processes exited with {process.returncode}:\n{running.output()[-3000:]}")
            try:
                return running.ready()["status"] == 200
            except OSError:
                return False

        assert wait_for(all_ready, timeout=START_TIMEOUT_S), f"not ready:\n{running.output()[-3000:]}"
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_processes_share_the_queue_and_their_metrics_are_summed(migrated: Path) -> None:
    with supervised(migrated, processes=2) as running:
        ready = running.ready()
        assert len(ready["processes"]) == 2 and all(p["connected"] for p in ready["processes"])
        with broker_channel() as channel:
            declared = channel.queue_declare(running.queue, passive=True)
            assert declared.method.consumer_count == 2
            body = sample("reg_success_kamailio_master.json")["body"]
            for n in range(40):  # no User-Agent rule matches: each is counted, none is stored
                publish(channel, "registrar", "registration.success.realm.user", {**body, "Msg-ID": f"m{n}"})
        assert wait_for(lambda: running.metric_sum("pusher_messages_total", event="reg_success") == 40,
                        timeout=20), get(running.port, "/metrics").body.decode()[-3000:]
        # Both processes took messages: the heartbeat rows (every 5 s) each count some.
        assert wait_for(lambda: _per_process_totals(migrated, ready) and min(_per_process_totals(migrated, ready)) > 0,
                        timeout=15), _per_process_totals(migrated, ready)
        assert running.metric_sum("pusher_consumer_connected") == 2
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=40) == 0
        assert not any(_alive(p["pid"]) for p in ready["processes"])


def _per_process_totals(data_dir: Path, ready: dict) -> list[int]:
    import sqlite3

    with sqlite3.connect(data_dir / "pusher.sqlite3") as db:
        rows = dict(db.execute("SELECT name, messages_total FROM pusher_site_consumerstatus").fetchall())
    return [total for name, total in rows.items() if int(name.rsplit(":", 1)[1]) in
            {p["pid"] for p in ready["processes"]}]


def test_a_child_that_dies_stops_the_others_and_the_supervisor_fails(migrated: Path) -> None:
    with supervised(migrated, processes=2) as running:
        first, second = running.child_pids()
        os.kill(first, signal.SIGKILL)
        assert running.process.wait(timeout=40) != 0
        assert not _alive(second)
        assert f"consumer process {first} stopped" in running.output()


def test_processes_out_of_range_are_a_command_error(migrated: Path) -> None:
    done = manage(command_env(migrated), "runconsumer", "--processes", "0")
    assert done.returncode != 0
    assert "--processes (PUSHER_CONSUMER_PROCESSES) must be 1 to 64, not 0" in done.stderr
    assert "Traceback" not in done.stderr
