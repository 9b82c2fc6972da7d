"""The consumer as production runs it: `manage.py runconsumer --queue ... --workers ... --metrics-port ...`,
a subprocess the soak starts, waits for (/ready), stops (SIGTERM) or kills (SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from soak.env import ROOT

STOP_TIMEOUT_S = 40.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ConsumerProcess:
    """One `runconsumer` subprocess; `env` is its whole environment."""

    name: str
    queue: str
    env: dict[str, str]
    workers: int = 32
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    log_path: str = ""
    starts: int = 0
    killed: list[int] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, timeout: float = 60.0) -> ConsumerProcess:
        self.metrics_port = free_port()
        self.starts += 1
        self.log_path = os.path.join(tempfile.gettempdir(), f"{self.queue}_{self.name}_{self.starts}.log")
        self.logs.append(self.log_path)
        command = [sys.executable, "manage.py", "runconsumer", "--queue", self.queue, "--workers", str(self.workers),
                   "--metrics-port", str(self.metrics_port)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                command, cwd=ROOT, env={**self.env, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready(timeout=timeout)
        return self

    def status(self) -> dict[str, object] | None:
        """The consumer's /ready answer ({"ready", "messages_total"}), None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/ready", timeout=2) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:  # 503 while not connected
            return json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return None

    def wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"consumer {self.name} exited ({self.process.returncode}); see {self.log_path}")
            status = self.status()
            if status and status.get("ready"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"consumer {self.name} not ready within {timeout:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acks; the broker redelivers what it had in hand."""
        if self.process is not None and self.process.poll() is None:
            self.killed.append(self.pid)
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM (finish and ack what is in hand), SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            return None

    def log_count(self, text: str) -> int:
        """Lines containing `text` in the logs of every run of this consumer."""
        count = 0
        for path in self.logs:
            try:
                with open(path, errors="replace") as log:
                    count += sum(text in line for line in log)
            except OSError:
                pass
        return count
