"""A private, throwaway PostgreSQL instance for the restart scenario: the shared server is never
restarted (others' tests use it). initdb into a temp directory as the postgres user, listen on a
free loopback port with the socket in that directory, delete everything at the end."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from soak.consumer import free_port
from soak.env import executable


def _bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    if not candidates:
        raise SystemExit(f"{name} not found under /usr/lib/postgresql/*/bin: the PostgreSQL restart scenario needs it")
    return candidates[-1]


def _as_postgres(*command: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([executable("runuser"), "-u", "postgres", "--", *command],  # noqa: S603 - fixed argv
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:2])} failed: {(result.stderr or result.stdout).strip()[-1000:]}")
    return result


class PrivatePostgres:
    def __init__(self, directory: str | None = None, port: int | None = None) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="pusher-soak-pg-")
        self.data = os.path.join(self.directory, "data")
        self.log = os.path.join(self.directory, "postgres.log")
        self.port = port or free_port()
        if directory is None:
            shutil.chown(self.directory, user="postgres", group="postgres")
        self.started = False

    @classmethod
    def attach(cls, directory: str, port: int) -> PrivatePostgres:
        """The instance another process started (the soak's parent owns its lifetime)."""
        return cls(directory, port)

    @property
    def options(self) -> str:
        # fsync off: a throwaway instance; restarts are fast clean shutdowns anyway.
        return f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"

    def url(self, database: str = "pusher_soak") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PrivatePostgres:
        _as_postgres(_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        _as_postgres(_bin("pg_ctl"), "-D", self.data, "-l", self.log, "-o", self.options, "-w", "start")
        self.started = True
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute('CREATE DATABASE "pusher_soak"')
        return self

    def restart(self) -> float:
        """Fast shutdown (clients disconnected) and start again; returns the seconds it was down."""
        started = time.monotonic()
        _as_postgres(_bin("pg_ctl"), "-D", self.data, "-l", self.log, "-o", self.options, "-m", "fast", "-w",
                     "restart")
        return time.monotonic() - started

    def remove(self) -> None:
        if self.started:
            try:
                _as_postgres(_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            self.started = False
        shutil.rmtree(self.directory, ignore_errors=True)
