"""A real pusher, as deployed, for the browser and metrics tests: daphne serving the admin and
/ws/events/, and `manage.py runconsumer` on a queue of its own, two processes that share a
database of their own and the test Redis (the channel layer that carries events between them).

The database is made for the stack (a file on SQLite, `pusher_live_<id>` on PostgreSQL) rather
than pytest's: pytest-django's SQLite test database lives in memory, out of other processes'
reach, and a database of its own works the same on both engines.

RabbitMQ traffic goes through the test session's private vhost (tests/conftest.py `amqp_vhost`),
whose URL the caller passes: Kazoo's exchanges are shared by every consumer on a vhost, and other
suites or benchmarks publishing to them on the same broker would otherwise flood this consumer's queue.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
from django.conf import settings

from tests.live.conftest import require_redis

ROOT = Path(__file__).resolve().parents[2]
USERNAME = "ops"
PASSWORD = "ops-live-password-123"
APP_ID = "com.acme.phone.voip.prod"
CERT_DAYS_LEFT = 20  # inside the dashboard's 30-day warning


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveStack:
    web_url: str
    consumer_url: str  # the consumer's --metrics-port: /metrics and /ready
    amqp_url: str
    queue: str
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @contextmanager
    def broker(self) -> Iterator[Any]:
        """A channel on the stack's broker (its vhost), to publish as Kamailio does."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            yield connection.channel()
        finally:
            connection.close()

    def get(self, url: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def consumer_ready(self) -> dict[str, Any]:
        status, body = self.get(f"{self.consumer_url}/ready")
        return {"status": status, **json.loads(body)}

    def wait_handled(self, total: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while (handled := self.consumer_ready()["messages_total"]) < total:
            if time.monotonic() > deadline:
                raise AssertionError(f"the consumer handled {handled} of {total} messages in {timeout}s\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 40) -> str:
        out = []
        for name in self.processes:
            path = self.logs / f"{name}.log"
            if path.exists():
                out.append(f"--- {name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)


def _database(suffix: str, directory: Path) -> tuple[str, Any]:
    """A URL for a new, empty database, and how to drop it."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        path = directory / "live.sqlite3"
        return f"sqlite:///{path}", lambda: None
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise RuntimeError(f"the live stack knows SQLite and PostgreSQL, not {db['ENGINE']}")
    import psycopg
    from psycopg import sql

    name = f"pusher_live_{suffix}"
    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "user": db["USER"],
              "password": db["PASSWORD"] or None, "dbname": db["NAME"]}

    def execute(statement: sql.Composable) -> None:
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute(statement)

    execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    url = f"postgres://{auth}@{params['host']}:{params['port']}/{name}"
    return url, lambda: execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def _wait(check, what: str, stack: LiveStack, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name, process in stack.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} before {what}\n{stack.tail()}")
        with suppress(OSError, ValueError):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}\n{stack.tail()}")
        time.sleep(0.1)


@contextmanager
def live_stack(*, fake_apns: Any, directory: Path, amqp_url: str) -> Iterator[LiveStack]:
    suffix = uuid.uuid4().hex[:10]
    yield from _live_stack(fake_apns=fake_apns, directory=directory, suffix=suffix, amqp_url=amqp_url)


def _live_stack(*, fake_apns: Any, directory: Path, suffix: str, amqp_url: str) -> Iterator[LiveStack]:
    redis_url = require_redis()
    queue = f"pusher_live_{suffix}"
    cert = fake_apns.ca.issue_client_cert(
        "com.acme.phone", voip=True, topics=["com.acme.phone", "com.acme.phone.voip"],
        not_after=datetime.now(UTC) + timedelta(days=CERT_DAYS_LEFT, hours=12),
    )
    cert_file = directory / "client.pem"
    cert_file.write_text(cert.pem)
    database_url, drop_database = _database(suffix, directory)
    # A port nothing listens on: every Kazoo device sync fails, as when Crossbar is down.
    dead_crossbar = f"http://127.0.0.1:{free_port()}/v2"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.live.settings_live",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PUSHER_LIVE_CHANNEL_PREFIX": f"pusher-live-{suffix}",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "AMQP_URL": amqp_url,
        "PUSHER_DEAD_LETTER_EXCHANGE": f"{queue}_dlx",
        "PUSHER_DEAD_LETTER_QUEUE": f"{queue}_dlq",
        "PUSHER_APNS_CA_FILE": fake_apns.ca_file,
        "KAZOO_CROSSBAR_URL": dead_crossbar,
        "KAZOO_API_KEY": "live-test-not-a-key",
        "PYTHONUNBUFFERED": "1",
    }
    web_port, metrics_port = free_port(), free_port()
    stack = LiveStack(
        web_url=f"http://127.0.0.1:{web_port}", consumer_url=f"http://127.0.0.1:{metrics_port}",
        amqp_url=amqp_url, queue=queue, logs=directory,
    )
    try:
        subprocess.run(
            [sys.executable, "-m", "tests.live.seed", "--username", USERNAME, "--password", PASSWORD,
             "--cert-file", str(cert_file), "--apns-host", fake_apns.host, "--apns-port", str(fake_apns.port)],
            cwd=ROOT, env=env, check=True, timeout=180,
        )
        commands = {
            "daphne": [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                       "tests.live.asgi_static:application"],
            "consumer": [sys.executable, "manage.py", "runconsumer", "--queue", queue, "--workers", "4",
                         "--metrics-port", str(metrics_port)],
        }
        for name, command in commands.items():
            log = open(directory / f"{name}.log", "wb")  # the process writes to it until it ends
            stack.processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: stack.get(f"{stack.web_url}/healthz")[0] == 200, "daphne to answer /healthz", stack)
        _wait(lambda: stack.consumer_ready()["ready"], "the consumer to be ready", stack)
        yield stack
    finally:
        for process in stack.processes.values():
            _stop(process)
        with suppress(Exception), stack.broker() as channel:
            channel.queue_delete(queue)
            channel.queue_delete(f"{queue}_dlq")
            channel.exchange_delete(f"{queue}_dlx")
        drop_database()
