"""`runconsumer --processes N`: N consumer processes on one host, sharing the queue.

One consumer is one Python process, so it uses at most one core (the GIL). N of them compete for
the shared queue like consumers on different hosts do (RabbitMQ hands each message to one of them;
the delivery log's Msg-ID claim keeps a republished push_req from ringing twice). This process only
supervises: it starts the N children (`runconsumer --processes 1` with the same options), serves
their merged metrics and readiness when asked to (`--metrics-port`), forwards SIGTERM/SIGINT, and,
when a child stops on its own, stops the others and exits with the child's code, for systemd or a
container runtime to restart the lot (as `make serve` does with its two processes).

Metrics are merged with prometheus_client's multiprocess mode: each child writes its counters and
histograms to files in PROMETHEUS_MULTIPROC_DIR (a directory this process makes, unless the
environment names one, emptied at start), and /metrics here sums them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.multiprocess import MultiProcessCollector

from core.signals import stop_on_signals
from kazoo.selectors import consumers_connected

log = logging.getLogger("pusher.consumer")

STOP_TIMEOUT_S = 30.0  # a child that has not stopped by then is killed
POLL_S = 0.2
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class Supervisor:
    """Start with `run()`; `child_args` are the runconsumer arguments every child gets."""

    processes: int
    child_args: Sequence[str]
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stopping)

    def run(self) -> int:
        """Until stopped (0) or until a child stops on its own (its exit code, 1 if that was 0)."""
        metrics_dir, made = _metrics_dir()
        env = {**os.environ, MULTIPROC_ENV: str(metrics_dir)}
        server = None
        command = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "runconsumer", "--processes", "1",
                   *self.child_args]
        try:
            # In the try: a port that is taken must not leave the metrics directory behind.
            server = self._serve(metrics_dir) if self.metrics_port else None
            for _ in range(self.processes):
                self.children.append(subprocess.Popen(command, env=env))  # noqa: S603 - our own command
            log.info("supervising %d consumer processes (pids %s)", self.processes,
                     ", ".join(str(c.pid) for c in self.children))
            code = self._watch(metrics_dir)
        finally:
            self._stop_all()
            if server is not None:
                server.shutdown()
            if made:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        return code

    def _watch(self, metrics_dir: Path) -> int:
        while not self.stopping.wait(POLL_S):
            for child in self.children:
                code = child.poll()
                if code is not None:
                    _mark_dead(metrics_dir, child.pid)
                    log.error("consumer process %d stopped (exit code %d); stopping the other %d",
                              child.pid, code, len(self.children) - 1)
                    return code or 1
        log.info("stopping %d consumer processes", len(self.children))
        return 0

    def _stop_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self.children:
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("consumer process %d did not stop within %.0f s; killed", child.pid, STOP_TIMEOUT_S)
                child.kill()
                child.wait()

    def ready(self) -> dict[str, Any]:
        """Every child alive and connected (its heartbeat row says so)."""
        close_old_connections()
        host = socket.gethostname()
        connected = consumers_connected(names=[f"{host}:{c.pid}" for c in self.children])
        states = [{"pid": c.pid, "alive": c.poll() is None, "connected": f"{host}:{c.pid}" in connected}
                  for c in self.children]
        return {"ready": bool(states) and all(s["alive"] and s["connected"] for s in states), "processes": states}

    def _serve(self, metrics_dir: Path) -> ThreadingHTTPServer:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics_dir))
        server = metrics_serve(self.metrics_host, self.metrics_port, metrics=lambda: generate_latest(registry),
                               ready=self.ready)
        log.info("merged metrics and readiness of %d processes on http://%s:%d/metrics and /ready",
                 self.processes, self.metrics_host, self.metrics_port)
        return server


def metrics_serve(host: str, port: int, *, metrics: Callable[[], bytes],
                  ready: Callable[[], dict[str, Any]]) -> ThreadingHTTPServer:
    """/metrics (`metrics()`, Prometheus text) and /ready or /healthz (`ready()` as JSON: 200 when its
    "ready" is true, else 503) on a thread of their own: a consumer's, or the supervisor's for all of
    them. Raises OSError/OverflowError when the address cannot be served."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype, status = metrics(), CONTENT_TYPE_LATEST, 200
            elif self.path in ("/ready", "/healthz"):
                state = ready()
                body, ctype, status = json.dumps(state).encode(), "application/json", 200 if state["ready"] else 503
            else:
                body, ctype, status = b"not found", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _metrics_dir() -> tuple[Path, bool]:
    """The children's metric files: the environment's directory (emptied: files of processes that
    ran before would be summed in), or a new one. Returns (directory, made here)."""
    named = os.environ.get(MULTIPROC_ENV)
    if named:
        directory = Path(named)
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.db"):
            old.unlink()
        return directory, False
    return Path(tempfile.mkdtemp(prefix="pusher-metrics-")), True


def _mark_dead(metrics_dir: Path, pid: int) -> None:
    """Drop a stopped child's live gauges (its counters stay summed in)."""
    multiprocess.mark_process_dead(pid, path=str(metrics_dir))
