"""Stopping a process on SIGTERM/SIGINT without deadlocking it.

A Python signal handler runs on the main thread between two bytecodes, possibly while that thread
holds a `threading.Event`'s internal lock (inside `set()` or `wait()`). A handler that calls
`set()` on that event then waits for a lock its own thread holds, for ever: seen when `bin/serve`
sent the consumer its two SIGTERMs (the trap's, then the stop's) and the second arrived during the
first handler's `set()`. So the handler only writes a byte to a pipe (no lock taken), and a thread
of its own reads it and sets the event."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(stop: threading.Event, signals: Iterable[signal.Signals] = STOP_SIGNALS) -> None:
    """Set `stop` when one of `signals` arrives (call from the main thread: only it may install
    handlers)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def relay() -> None:
        while os.read(read_fd, 64):
            stop.set()

    threading.Thread(target=relay, name="signals", daemon=True).start()

    def handler(signum: int, frame: object) -> None:
        try:
            os.write(write_fd, b"\0")
        except BlockingIOError:  # the pipe is full of earlier signals: `stop` is being set already
            pass

    for signum in signals:
        signal.signal(signum, handler)
