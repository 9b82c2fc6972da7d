"""The README's commands as a new user runs them: `bin/serve` (production: daphne + the consumer, DEBUG
off, plain HTTP behind a TLS proxy), `bin/run` on a taken port, `bin/superuser` without a terminal.

Each command runs in a subprocess with the documented settings only (tests.test_settings.production_env),
SQLite in a temporary directory, and a broker address nothing answers on: the consumer then waits
for RabbitMQ (it says so) and stays up, which is all these tests need of it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_settings import production_env

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The documented production settings, and every value a developer's .env could otherwise
    supply (settings.py reads it without overriding the environment) set here explicitly."""
    settings = {
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{data_dir / 'pusher.sqlite3'}",
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
        "REDIS_URL": "",
        "PUSHER_TRUST_X_FORWARDED_PROTO": "0",
        "SECURE_SSL_REDIRECT": "0",
        "PUSHER_PYTHON": sys.executable,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    return production_env(data_dir, **{**settings, **overrides})


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def get(port: int, path: str, headers: dict[str, str] | None = None) -> Response:
    """One plain-HTTP GET, redirects not followed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        connection.close()


@dataclass
class Served:
    process: subprocess.Popen
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"bin/serve did not end within {timeout}s:\n{self.output()[-4000:]}")

    def consumer_pid(self) -> int:
        for line in self.output().splitlines():
            if line.startswith("pusher: serving ") and "consumer pid " in line:
                return int(line.rsplit("consumer pid ", 1)[1])
        raise AssertionError(f"bin/serve did not say the consumer's pid:\n{self.output()[-4000:]}")

    def web_answers(self) -> bool:
        try:
            get(self.port, "/healthz")
        except OSError:
            return False
        return True


@contextmanager
def serve(data_dir: Path, **overrides: str) -> Iterator[Served]:
    env = command_env(data_dir, **overrides)
    log = data_dir / f"serve-{env['PORT']}.log"
    with log.open("wb") as out:
        # A session of its own: bin/serve's children can be ended with it if it does not stop them.
        process = subprocess.Popen(
            ["bin/serve"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = Served(process, int(env["PORT"]), log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"bin/serve exited with {process.returncode}:\n{served.output()[-4000:]}")
            try:
                if get(served.port, "/healthz").status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"bin/serve did not answer /healthz within {START_TIMEOUT_S}s:\n{served.output()[-4000:]}")
            time.sleep(0.25)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database and static folder for the module's servers: the first migrates and collects,
    the next ones find nothing to do and start faster."""
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def served(data_dir: Path) -> Iterator[Served]:
    """bin/serve with the documented production settings and nothing about TLS: plain HTTP."""
    with serve(data_dir) as served:
        yield served


def secure_cookie(response: Response, name: str) -> bool:
    cookies = [value for value in response.headers.get_all("Set-Cookie") or [] if value.startswith(f"{name}=")]
    assert len(cookies) == 1, response.headers
    return "secure" in [part.strip().lower() for part in cookies[0].split(";")]


# --- bin/serve over plain HTTP ------------------------------------------------------------------------


def test_admin_login_answers_over_plain_http(served: Served) -> None:
    response = get(served.port, "/admin/login/")

    assert response.status == 200, (response.status, response.headers)
    assert b"/static/admin/css/base.css" in response.body


def test_static_files_are_served_by_the_app(served: Served) -> None:
    response = get(served.port, "/static/admin/css/base.css")

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/css")
    assert len(response.body) > 1000
    assert (served.log.parent / "static" / "admin" / "css" / "base.css").is_file()  # collectstatic ran


def test_x_forwarded_proto_from_a_client_is_not_trusted(served: Served) -> None:
    plain = get(served.port, "/admin/login/")
    claimed = get(served.port, "/admin/login/", {"X-Forwarded-Proto": "https"})

    # Django sends HSTS only on requests it takes for secure: request.is_secure() stayed false.
    assert claimed.status == 200
    assert "Strict-Transport-Security" not in claimed.headers
    assert not secure_cookie(claimed, "csrftoken")
    assert not secure_cookie(plain, "csrftoken")  # so the admin login works over plain HTTP


def test_healthz_answers(served: Served) -> None:
    response = get(served.port, "/healthz")

    assert response.status == 200
    assert json.loads(response.body) == {"status": "ok", "database": "ok"}


# --- bin/serve behind a trusted TLS proxy; stopping ----------------------------------------------------


def test_behind_a_trusted_tls_proxy_https_is_recognised_and_enforced(data_dir: Path) -> None:
    with serve(data_dir, PUSHER_TRUST_X_FORWARDED_PROTO="1", SECURE_SSL_REDIRECT="1") as served:
        direct = get(served.port, "/admin/login/")
        proxied = get(served.port, "/admin/login/", {"X-Forwarded-Proto": "https"})
        probe = get(served.port, "/healthz")

        assert direct.status == 301
        assert direct.headers["Location"] == f"https://127.0.0.1:{served.port}/admin/login/"
        assert proxied.status == 200
        assert proxied.headers["Strict-Transport-Security"].startswith("max-age=")
        assert secure_cookie(proxied, "csrftoken")
        assert probe.status == 200  # probes inside the cluster speak plain HTTP

        served.process.send_signal(signal.SIGTERM)
        assert served.wait() == 0, served.output()[-4000:]
        assert "pusher: stopping web and consumer" in served.output()
        assert not served.web_answers()


def test_serve_fails_when_the_consumer_dies(data_dir: Path) -> None:
    with serve(data_dir) as served:
        os.kill(served.consumer_pid(), signal.SIGKILL)

        status = served.wait()

        assert status != 0
        assert "pusher: the consumer exited with status 137; stopping the other one" in served.output()
        assert not served.web_answers()


@pytest.mark.parametrize(
    "command",
    [["bin/serve"], [sys.executable, "-m", "daphne", "pusher_site.asgi:application"]],
    ids=["bin/serve", "daphne"],
)
def test_serving_without_a_secret_says_so_in_one_line(tmp_path: Path, command: list[str]) -> None:
    # Empty, not absent: a developer's .env cannot fill it in.
    env = command_env(tmp_path, SECRET_KEY="")
    if command[0] != "bin/serve":
        command = [*command, "--port", env["PORT"]]

    result = subprocess.run(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr == (
        "pusher: SECRET_KEY is required when DEBUG is off (set it in the environment or .env; "
        "DEBUG=1 for a development run)\n"
    )


# --- A taken port -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("script", "hint"), [("bin/run", "make run PORT=8001"), ("bin/serve", "make serve PORT=8001")])
def test_a_taken_port_fails_loudly(tmp_path: Path, script: str, hint: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = command_env(tmp_path, PORT=str(port), DEBUG="1")

        started = time.monotonic()
        result = subprocess.run(
            [script], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            check=False,
        )

    assert result.returncode == 1
    assert result.stderr == (
        f"pusher: cannot listen on 127.0.0.1:{port}: the port is already in use (pick another: {hint})\n"
    )
    assert time.monotonic() - started < 10  # refused before migrating or starting anything
    assert not (tmp_path / "pusher.sqlite3").exists()


@pytest.mark.rabbitmq
def test_make_run_stops_when_its_consumer_stops(tmp_path: Path) -> None:
    # A consumer that ends for good (here RabbitMQ refuses its login) must not leave a web server
    # running as if the service were up: bin/run stops it and exits with the consumer's status.
    from urllib.parse import urlsplit, urlunsplit

    from tests.amqp import amqp_url

    parts = urlsplit(amqp_url())
    refused = urlunsplit(parts._replace(netloc=f"guest:wrong-password@{parts.hostname}:{parts.port or 5672}"))
    env = command_env(tmp_path, PORT=str(free_port()), DEBUG="1", AMQP_URL=refused)
    result = subprocess.run(
        ["bin/run"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        check=False,
    )
    assert result.returncode == 78
    assert "RabbitMQ refused the login for user guest" in result.stderr
    assert "pusher: the consumer stopped (status 78" in result.stderr


# --- bin/superuser ----------------------------------------------------------------------------------


def superuser(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bin/superuser"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        check=False,
    )


def test_superuser_is_made_from_the_environment_without_a_terminal(tmp_path: Path) -> None:
    env = command_env(
        tmp_path, DJANGO_SUPERUSER_USERNAME="admin", DJANGO_SUPERUSER_EMAIL="admin@example.com",
        DJANGO_SUPERUSER_PASSWORD="a-long-admin-password-42",
    )

    made = superuser(env)
    again = superuser(env)

    assert made.returncode == 0, made.stdout + made.stderr
    assert "Superuser created successfully." in made.stdout
    with sqlite3.connect(tmp_path / "pusher.sqlite3") as db:
        rows = db.execute("SELECT username, email, is_superuser, is_staff, password FROM auth_user").fetchall()
    assert [row[:4] for row in rows] == [("admin", "admin@example.com", 1, 1)]
    assert rows[0][4].startswith("pbkdf2_sha256$")  # a usable password, hashed
    assert again.returncode != 0
    assert "That username is already taken" in again.stderr


@pytest.mark.parametrize(
    "given",
    [{}, {"DJANGO_SUPERUSER_USERNAME": "admin"}, {"DJANGO_SUPERUSER_PASSWORD": "a-long-admin-password-42"}],
    ids=["nothing", "no password", "no username"],
)
def test_superuser_without_a_terminal_or_the_environment_fails(tmp_path: Path, given: dict[str, str]) -> None:
    result = superuser(command_env(tmp_path, **given))

    assert result.returncode == 1
    assert result.stderr.startswith("pusher: ")
    assert "DJANGO_SUPERUSER_USERNAME" in result.stderr
    assert not (tmp_path / "pusher.sqlite3").exists()  # refused before touching the database
