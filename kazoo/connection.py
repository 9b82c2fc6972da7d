"""Connecting the consumer to RabbitMQ: the event loop a session consumes on, pika's connection
errors told once, and what is said about a connection without its password."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pika

log = logging.getLogger("pusher.consumer")

_own_loop_lock = threading.Lock()
_own_loop: asyncio.AbstractEventLoop | None = None


def consumer_loop() -> tuple[asyncio.AbstractEventLoop, str | None]:
    """The loop a session consumes on: the APNs client's, so that the push lane sends without a
    thread hop; and None, or why push_req cannot be sent. If the APNs client cannot be built (a
    missing PUSHER_APNS_CA_FILE), a loop of the consumer's own: reg_success goes on, and each
    push_req is dead-lettered with the reason instead of being left unacked."""
    from push.providers import apns  # the push app's: imported once Django is set up

    try:
        return apns.get_client().loop(), None
    except Exception as exc:
        log.exception("the push lane cannot start its APNs client; push_req are dead-lettered until it can")
        return _loop_of_our_own(), f"push lane unavailable: {describe(exc)}"


def _loop_of_our_own() -> asyncio.AbstractEventLoop:
    global _own_loop
    with _own_loop_lock:
        if _own_loop is None or _own_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="amqp-loop", daemon=True).start()
            _own_loop = loop
        return _own_loop


def socket_abandon(connection: Any) -> None:
    """Close the socket of a connection whose loop stopped under it (pika can no longer close it
    the polite way), so that the broker sees it gone and redelivers what it held."""
    sock = getattr(getattr(connection, "_transport", None), "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


_pika_log = logging.getLogger("pika")
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved_level = logging.NOTSET


@contextmanager
def pika_quiet() -> Iterator[None]:
    """pika logs one failed connection attempt as a dozen ERROR lines and a traceback (each layer
    of its connection workflow reports it) before raising it; the consumer reports it itself, in
    one line. Nested and concurrent uses (tests run several consumers) restore the level once."""
    global _quiet_depth, _quiet_saved_level
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved_level = _pika_log.level
            _pika_log.setLevel(logging.CRITICAL)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                _pika_log.setLevel(_quiet_saved_level)


def describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text[:200]}"


def safe_url(url: str) -> str:
    """The AMQP URL without its password."""
    params = pika.URLParameters(url)
    credentials = cast(pika.PlainCredentials, params.credentials)  # what URLParameters always makes
    return f"amqp://{credentials.username}@{params.host}:{params.port}{'/' + params.virtual_host}"
