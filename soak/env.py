"""The soak's environment: production-shaped settings (DEBUG off) with throwaway secrets, the
`pusher_soak` database on the shared PostgreSQL, loopback only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/pusher_soak"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

# Not secrets: they only encrypt the soak's own throwaway credentials.
SOAK_SETTINGS = {
    "DEBUG": "0",
    "SECRET_KEY": "soak-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz",
    "FIELD_ENCRYPTION_KEY": "c29hay1ub3QtYS1zZWNyZXQta2V5LTAxMjM0NTY3ODk=",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "SECURE_SSL_REDIRECT": "0",
    "DJANGO_SETTINGS_MODULE": "pusher_site.settings",
    "LOG_LEVEL": "INFO",
}


def soak_environ() -> dict[str, str]:
    """Set the soak's defaults in this process's environment (the caller's values win) and return it."""
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("AMQP_URL", DEFAULT_AMQP_URL)
    for name, value in SOAK_SETTINGS.items():
        os.environ.setdefault(name, value)
    for name in ("DATABASE_URL", "AMQP_URL"):
        host = urlsplit(os.environ[name]).hostname or ""
        if host not in LOOPBACK:
            raise SystemExit(f"{name} points at {host!r}: the soak only talks to loopback")
    return dict(os.environ)


def database_create_if_missing(url: str) -> bool:
    """Create the URL's PostgreSQL database if it does not exist; True when it was created."""
    import psycopg

    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    maintenance = parts._replace(scheme="postgresql", path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
        return True


def migrate(database_url: str) -> None:
    """`manage.py migrate` against `database_url`, in a subprocess (the caller may not use that database)."""
    env = {**os.environ, "DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=180, check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"migrate failed on {database_url}:\n{result.stderr[-2000:]}")


def say(text: str = "") -> None:
    """One line of the soak's report, flushed at once (the scenarios run in child processes)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found on PATH: the soak needs it")
    return path


def django_setup() -> None:
    import django

    django.setup()
