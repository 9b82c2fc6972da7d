"""`manage.py runconsumer`: options that would crash or misbehave are one-line CommandErrors, a
refused RabbitMQ login ends the consumer with one clear line, and an unreachable broker costs one
line per attempt, not pika's dozen (issue 13)."""

from __future__ import annotations

import gc
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from kazoo.worker import EXIT_LOGIN_REFUSED, Worker, WorkerConfig
from tests.amqp import amqp_url

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def consumer_never_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad options must stop the command before it consumes: if they did not, fail at once
    instead of consuming from the real broker."""
    import kazoo.management.commands.runconsumer as runconsumer

    def started(self: Worker) -> int:
        raise AssertionError("the consumer started despite bad options")

    monkeypatch.setattr(Worker, "run", started)
    monkeypatch.setattr(Worker, "install_signal_handlers", lambda self: None)
    monkeypatch.setattr(runconsumer, "_heartbeat_loop", lambda worker: None)
    monkeypatch.setattr(runconsumer, "sync_loop", lambda stopping: None)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--workers", "0"], "--workers (PUSHER_WORKERS) must be at least 1, not 0"),
        (["--workers", "-3"], "--workers (PUSHER_WORKERS) must be at least 1"),
        (["--prefetch", "0"], "--prefetch (PUSHER_PREFETCH) must be 1 to 65535, not 0"),
        (["--prefetch", "-1"], "--prefetch (PUSHER_PREFETCH) must be 1 to 65535"),
        (["--prefetch", "70000"], "--prefetch (PUSHER_PREFETCH) must be 1 to 65535"),
        (["--metrics-port", "99999"], "--metrics-port must be 1 to 65535"),
        (["--metrics-port", "-1"], "--metrics-port must be 1 to 65535"),
        (["--queue", ""], "--queue (PUSHER_QUEUE_NAME) must not be empty"),
        (["--queue", "   "], "--queue (PUSHER_QUEUE_NAME) must not be empty"),
        (["--queue", " pusher"], "leading/trailing spaces"),
        (["--queue", "amq.pusher"], "'amq.'"),
        (["--queue", "q" * 256], "longer than 255 bytes"),
        (["--workers", "many"], "invalid int value"),
    ],
)
@pytest.mark.usefixtures("consumer_never_starts")
def test_bad_options_are_command_errors(args: list[str], words: str) -> None:
    with pytest.raises(CommandError) as caught:
        call_command("runconsumer", *args)
    assert words in str(caught.value)


@pytest.mark.usefixtures("consumer_never_starts")
def test_bad_settings_behind_the_defaults_are_command_errors(settings) -> None:
    settings.PUSHER_WORKERS = 0
    # The defaults are read when the parser is built, as manage.py does.
    with pytest.raises(CommandError, match="PUSHER_WORKERS"):
        call_command("runconsumer")


@pytest.mark.usefixtures("consumer_never_starts")
def test_a_metrics_port_in_use_is_a_command_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"):
            call_command("runconsumer", "--metrics-port", str(port))


def test_manage_py_prints_one_line_and_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "runconsumer", "--workers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=os.environ.copy(), check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "CommandError: --workers (PUSHER_WORKERS) must be at least 1, not 0"
    ]


def _url(*, password: str | None = None, port: int | None = None) -> str:
    parts = urlsplit(amqp_url())
    user = parts.username or "guest"
    netloc = f"{user}:{password or parts.password}@{parts.hostname}:{port or parts.port or 5672}"
    return urlunsplit(parts._replace(netloc=netloc))


def _worker(url: str) -> Worker:
    return Worker(WorkerConfig(
        amqp_url=url, queue="pusher_test_never_declared",
        dead_letter_exchange="pusher_test_never_dlx", dead_letter_queue="pusher_test_never_dlq",
        prefetch=10, push_workers=1,
    ))


def _run_for(worker: Worker, seconds: float) -> int | None:
    """Run the worker for at most `seconds`, then stop it; its exit status (None: it did not stop)."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        worker.stop()
        thread.join(30)
    return result[0] if result else None


@pytest.mark.rabbitmq
def test_a_refused_login_is_one_line_and_a_non_zero_exit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pusher.consumer")
    worker = _worker(_url(password="wrong-password"))

    started = time.monotonic()
    code = _run_for(worker, seconds=15)

    assert code == EXIT_LOGIN_REFUSED, "the consumer kept retrying a refused login"
    assert time.monotonic() - started < 10
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in loud] == ["pusher.consumer"], [f"{r.name}: {r.getMessage()[:100]}" for r in loud]
    parts = urlsplit(amqp_url())
    assert loud[0].getMessage() == (
        f"RabbitMQ refused the login for user {parts.username or 'guest'} at "
        f"{parts.hostname}:{parts.port or 5672}: check AMQP_URL"
    )
    assert "wrong-password" not in caplog.text


@pytest.mark.rabbitmq
@pytest.mark.django_db
def test_runconsumer_exits_non_zero_on_a_refused_login(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.AMQP_URL = _url(password="wrong-password")
    # pytest keeps its own signal handlers; a consumer still retrying after 15 s is stopped (and fails).
    monkeypatch.setattr(Worker, "install_signal_handlers", lambda self: threading.Timer(15, self.stop).start())

    with pytest.raises(SystemExit) as caught:
        call_command("runconsumer", "--workers", "1")

    assert caught.value.code == EXIT_LOGIN_REFUSED


@pytest.mark.rabbitmq
def test_an_unreachable_broker_costs_one_line_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    caplog.set_level(logging.DEBUG, logger="pusher.consumer")
    worker = _worker(_url(port=closed_port))

    code = _run_for(worker, seconds=3.5)  # attempts at about 0, 1 and 3 s

    assert code == 0  # stopped, not failed: the broker may come back
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud and {r.name for r in loud} == {"pusher.consumer"}, [f"{r.name}: {r.getMessage()[:80]}" for r in loud]
    assert 2 <= len(loud) <= 3
    assert "not reachable" in loud[0].getMessage() and "still not reachable" in loud[-1].getMessage()
    assert logging.getLogger("pika").level == logging.WARNING  # restored after the attempts


def test_objects_alive_at_start_up_are_left_out_of_the_collectors_passes() -> None:
    import kazoo.management.commands.runconsumer as runconsumer

    alive_at_start = [{"n": n} for n in range(1000)]  # containers the collector tracks
    try:
        runconsumer.gc_settle()

        assert gc.get_freeze_count() >= len(alive_at_start)
        walked = {id(o) for generation in range(3) for o in gc.get_objects(generation=generation)}
        assert id(alive_at_start) not in walked
        assert not any(id(o) in walked for o in alive_at_start)
        made_later = [{"n": 0}]
        assert id(made_later) in {id(o) for o in gc.get_objects(generation=0)}
    finally:
        gc.unfreeze()
