"""Stopping on SIGTERM/SIGINT (core.signals): a signal that lands while the main thread holds the
stop event's own lock (inside Event.set() or wait(), e.g. a second SIGTERM during the first's
handling) must not deadlock the process; and a consumer sent two SIGTERMs at once stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.signals import stop_on_signals

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def usr1():
    previous = signal.getsignal(signal.SIGUSR1)
    yield signal.SIGUSR1
    signal.signal(signal.SIGUSR1, previous)


def test_a_signal_while_the_event_lock_is_held_does_not_deadlock(usr1) -> None:
    stop = threading.Event()
    stop_on_signals(stop, signals=(usr1,))
    handler = signal.getsignal(usr1)
    assert callable(handler)
    outcome: list[str] = []

    def signalled_inside_set() -> None:
        with stop._cond:  # where a signal can land: inside Event.set() or wait(), this lock held
            handler(usr1, None)  # a handler calling stop.set() here would wait for ever
            handler(usr1, None)
        outcome.append("returned")

    thread = threading.Thread(target=signalled_inside_set, daemon=True)
    thread.start()
    thread.join(5)
    assert outcome == ["returned"]
    assert stop.wait(5)


def test_real_signals_set_the_event(usr1) -> None:
    stop = threading.Event()
    stop_on_signals(stop, signals=(usr1,))
    for _ in range(3):
        os.kill(os.getpid(), usr1)
    assert stop.wait(5)


def test_a_consumer_sent_two_sigterms_at_once_stops(tmp_path: Path) -> None:
    """What bin/serve does to its consumer (its trap, then its stop): repeated, as the deadlock was
    a matter of timing. RabbitMQ is unreachable, so the consumer waits in its reconnect backoff."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHER_", "DATABASE_URL", "AMQP_URL"))}
    env.update(DEBUG="1", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", PUSHER_DATA_DIR=str(tmp_path),
               AMQP_URL="amqp://guest:guest@127.0.0.1:1/%2F", PUSHER_PROVIDER_WARMUP="0")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    for attempt in range(3):
        log = tmp_path / f"consumer-{attempt}.log"
        with log.open("w") as out:
            consumer = subprocess.Popen([sys.executable, "manage.py", "runconsumer"], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=out)
        try:
            deadline = time.monotonic() + 60
            while "not reachable" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)  # until it waits for RabbitMQ
            assert "not reachable" in log.read_text(), log.read_text()[-2000:]
            consumer.send_signal(signal.SIGTERM)
            consumer.send_signal(signal.SIGTERM)
            assert consumer.wait(timeout=20) == 0
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
