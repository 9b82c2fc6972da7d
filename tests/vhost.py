"""A private RabbitMQ virtual host on the local broker, made and removed with rabbitmqctl: the test
session's (tests/conftest.py `amqp_vhost`) and the soak's (soak/broker.py).

Why: the consumer binds its queue to Kazoo's `registrar` and `pushes` exchanges, which every queue
on a vhost shares, so on "/" two test runs (or a run and a benchmark or the soak) would each
receive the other's messages. A vhost of one's own has its own exchanges. rabbitmqctl talks to the
broker on this machine and needs root or the broker's Erlang cookie.

Plain Python (no Django, no pytest): the soak imports it too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from urllib.parse import quote, unquote, urlsplit, urlunsplit

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
RABBITMQCTL_TIMEOUT_S = 60


class VhostError(RuntimeError):
    """rabbitmqctl is missing, timed out or refused."""


def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl -q ARGS...`; its output, or VhostError saying what went wrong."""
    path = shutil.which("rabbitmqctl")
    if path is None:
        raise VhostError("rabbitmqctl not found on PATH (it comes with the rabbitmq-server package)")
    command = " ".join(args)
    try:
        result = subprocess.run([path, "-q", *args],
                                capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise VhostError(f"rabbitmqctl {command} did not answer in {RABBITMQCTL_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip())[:500]
        raise VhostError(f"rabbitmqctl {command} failed (exit {result.returncode}): {said}")
    return result.stdout


def vhost_url(base_url: str, vhost: str) -> str:
    """`base_url` (user, password, host, port) on `vhost`."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names ("/" when it names none)."""
    return unquote(urlsplit(url).path[1:]) or "/"


def vhost_create(prefix: str, base_url: str | None = None) -> tuple[str, str]:
    """Make the vhost `<prefix>_<random>` and give `base_url`'s user every permission on it.

    Returns (vhost name, `base_url` pointed at it). `base_url` defaults to $AMQP_URL, else the local
    guest. Raises VhostError when it cannot: there is no falling back to a shared vhost."""
    base_url = base_url or os.environ.get("AMQP_URL") or DEFAULT_AMQP_URL
    parts = urlsplit(base_url)
    if parts.hostname not in LOOPBACK:
        raise VhostError(f"the broker at {parts.hostname!r} is not this machine's: rabbitmqctl only manages "
                         "the local one (point AMQP_URL at 127.0.0.1)")
    user = unquote(parts.username or "guest")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    except VhostError:
        rabbitmqctl("delete_vhost", name)
        raise
    return name, vhost_url(base_url, name)


def vhost_delete(name: str) -> None:
    """Delete the vhost, and with it every queue, exchange and binding made there."""
    rabbitmqctl("delete_vhost", name)
