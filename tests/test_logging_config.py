"""One log line per HTTP request: Django's default logging gave the "django" loggers a console
handler of their own besides ours, so `make run` printed every request twice (issue 13)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def writers(name: str, level: int) -> list[logging.Handler]:
    """The handlers a record of `name` at `level` is written by (pytest's own capture left out)."""
    logger = logging.getLogger(name)
    record = logger.makeRecord(name, level, __file__, 1, "HTTP GET /healthz 200", None, None)
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found += [h for h in current.handlers if not type(h).__module__.startswith("_pytest")]
        current = current.parent if current.propagate else None
    return [h for h in found if record.levelno >= h.level and h.filter(record)]


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("django.channels.server", logging.INFO),  # runserver under daphne: the access line
        ("django.server", logging.INFO),  # plain runserver
        ("django.request", logging.WARNING),  # "Not Found: /x"
        ("django.security.csrf", logging.WARNING),
        ("pusher.consumer", logging.INFO),
    ],
)
def test_each_record_is_written_once(settings, debug: bool, name: str, level: int) -> None:
    settings.DEBUG = debug  # Django's own console handler only wrote in DEBUG
    assert len(writers(name, level)) == 1


def test_runserver_logs_one_line_per_request(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DEBUG": "1", "PUSHER_DATA_DIR": str(tmp_path), "LOG_LEVEL": "INFO"}
    env.pop("DATABASE_URL", None)  # a throwaway SQLite file: /healthz only runs SELECT 1
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    answered = 0
    try:
        deadline = time.monotonic() + 30
        while answered < 3 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    answered += response.status == 200
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        time.sleep(0.5)  # let the last access line out
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert answered == 3, output
    lines = [line for line in output.splitlines() if "GET /healthz" in line]
    assert len(lines) == 3, output
