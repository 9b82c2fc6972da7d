"""Waiting out a database outage, one way for every caller.

A message whose work cannot reach the database stays unacked and is tried again when the database
is back (the consumer); a write whose effect already happened elsewhere (a push was sent) is
retried rather than lost. Both wait here; they differ only in when they stop waiting.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections, reset_queries

T = TypeVar("T")
# Django's wrapped errors, and the driver's own: batch writes run on a raw psycopg cursor, whose
# errors Django never sees (nor marks its connection broken for).
OUTAGE_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
log = logging.getLogger(__name__)

CONNECTION_CHECK_INTERVAL_S = 5.0
_thread_state = threading.local()


class WaitStopped(Exception):
    """The caller asked to stop (the consumer is shutting down) while the database was down."""


def database_wait(
    work: Callable[[], T],
    *,
    what: str,
    stopping: Callable[[], bool] | None = None,
    give_up_s: float | None = None,
) -> T:
    """`work()`, tried again with backoff while the database is unreachable. Raises WaitStopped
    once `stopping()` is true during an outage, and the database's own error after `give_up_s`
    (None: wait for as long as it takes)."""
    give_up = None if give_up_s is None else time.monotonic() + give_up_s
    pause = 0.25
    while True:
        try:
            return work()
        except OUTAGE_ERRORS as exc:
            if stopping is not None and stopping():
                raise WaitStopped(what) from exc
            if give_up is not None and time.monotonic() > give_up:
                raise
            log.warning("database unavailable while %s (%s); retrying in %.1fs", what, str(exc).strip()[:200], pause)
            _broken_connections_close()
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _broken_connections_close() -> None:
    """Drop this thread's connections that an outage broke (Django's own and those a raw driver
    cursor found broken, which Django was never told about), so that the retry opens new ones."""
    for wrapper in connections.all(initialized_only=True):
        raw = wrapper.connection
        if raw is not None and (getattr(raw, "closed", False) or getattr(raw, "broken", False)):
            with contextlib.suppress(Exception):  # the connection is already broken
                wrapper.close()
    with contextlib.suppress(Exception):
        close_old_connections()


def connections_check() -> None:
    """Django's per-request connection housekeeping for a long-lived thread of the consumer (never
    inside a transaction: it closes a connection that is not in autocommit), at most every few
    seconds per thread: with
    CONN_HEALTH_CHECKS each call costs a `SELECT 1`, too much for every message. A connection that
    broke in between fails its next query, and `database_wait` replaces it."""
    now = time.monotonic()
    if now - getattr(_thread_state, "checked_at", 0.0) >= CONNECTION_CHECK_INTERVAL_S:
        close_old_connections()
        _thread_state.checked_at = now
    if settings.DEBUG:
        reset_queries()  # DEBUG keeps every query per connection: unbounded in a long-lived worker
