"""`within(seconds)`: a test that would hang (a command blocked on a FIFO, or reading /dev/zero for
ever) fails with `Hung` instead of stalling the whole suite. SIGALRM: Unix, main thread only."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Hung(Exception):
    pass


@contextmanager
def within(seconds: int) -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
