"""Input that can wait: an event-loop selector that reads some sockets in rounds.

Why: on the development host the same Python work costs about five times as much when its thread
slept just before (`python -m bench.coldcache`: a push_req decoded and an HTTP/2 request built,
75 us back to back, 384 us once every 10 ms): the caches are lost while the virtual CPU idles. A
consumer at a steady 100 pushes/s that reads each provider answer as it arrives wakes twice per
push, once for the push_req and once for its answer, and pays that price both times. The answer is
not on the push's way to the phone (the push has reached the provider once it is written); what
follows it (the outcome, its batch, the ack) waits for its batch anyway. So while a provider
connection has requests in flight, its input is read in rounds, every `ANSWER_ROUND_S`: all that
came in since, in one pass, hot after the first answer. The broker's socket and every other stays
read at once, so a push_req still goes out the moment it arrives.

`RoundSelector` is a `selectors.BaseSelector` for `asyncio.SelectorEventLoop`: two selectors
underneath, one for what is read at once, one for the read side of the deferred sockets, which is
polled (without blocking) when a round is due; the loop's waits are cut short at the next round
while a deferred socket is registered. `defer(fd)` / `undefer(fd)` move a socket's read side from
one to the other; the HTTP/2 connection (`h2connection._H2Connection`) defers its socket while it
has streams open and no request waits for a stream slot, and undefers it otherwise (so an idle
connection costs no wake-ups, and a closed socket's number is never left deferred for the next).
Loop-thread only, like the loop.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

# How often a deferred socket's input is read. At most this much is added to when an answer is
# read; kazoo.pushlane's claim delay is set above it.
ANSWER_ROUND_S = 0.1


def _fd(fileobj: Any) -> int:
    fd = fileobj if isinstance(fileobj, int) else int(fileobj.fileno())
    if fd < 0:
        raise ValueError(f"invalid file descriptor: {fd}")
    return fd


def event_loop(round_s: float = ANSWER_ROUND_S) -> tuple[asyncio.AbstractEventLoop, RoundSelector | None]:
    """A new event loop and, unless `round_s` is 0 (every socket read at once), its RoundSelector."""
    if round_s <= 0:
        return asyncio.new_event_loop(), None
    rounds = RoundSelector(round_s)
    return asyncio.SelectorEventLoop(rounds), rounds


class RoundSelector(selectors.BaseSelector):
    def __init__(self, round_s: float = ANSWER_ROUND_S, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.round_s = round_s
        self._clock = clock
        self._now: selectors.BaseSelector = selectors.DefaultSelector()
        self._later: selectors.BaseSelector = selectors.DefaultSelector()
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._deferred: set[int] = set()
        self._next_round: float | None = None

    # ---- selectors.BaseSelector ------------------------------------------------------------

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"invalid events: {events!r}")
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        self._place(fd, events)
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        key = self._keys.pop(fd)  # KeyError if not registered, as selectors do
        self._place(fd, 0)
        # The socket may be closed next and its number reused by another: nothing is kept deferred.
        self._deferred.discard(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fd(fileobj)
        if fd not in self._keys:
            raise KeyError(f"{fileobj!r} is not registered")
        key = self._keys[fd] = selectors.SelectorKey(fileobj, fd, events, data)
        self._place(fd, events)
        return key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: dict[int, int] = {}
        if self._later.get_map():
            now = self._clock()
            if self._next_round is None:
                self._next_round = now + self.round_s
            elif now >= self._next_round:
                self._next_round = now + self.round_s
                for key, events in self._later.select(0):
                    ready[key.fd] = events
                if ready:
                    timeout = 0
            # A wait never outlasts the next round.
            until_round = max(self._next_round - now, 0.0)
            timeout = until_round if timeout is None else min(timeout, until_round)
        else:
            self._next_round = None
        for key, events in self._now.select(timeout):
            ready[key.fd] = ready.get(key.fd, 0) | events
        keys = self._keys
        return [(keys[fd], events & keys[fd].events) for fd, events in ready.items() if fd in keys]

    def close(self) -> None:
        self._now.close()
        self._later.close()
        self._keys.clear()
        self._deferred.clear()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._keys[_fd(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return MappingProxyType(self._keys)

    # ---- rounds ----------------------------------------------------------------------------

    def defer(self, fd: int) -> None:
        """Read `fd` in rounds from now on (its writes stay immediate)."""
        if fd not in self._deferred:
            self._deferred.add(fd)
            key = self._keys.get(fd)
            if key is not None:
                self._place(fd, key.events)

    def undefer(self, fd: int) -> None:
        """Read `fd` at once again; what it has waiting is read in the loop's next pass."""
        if fd in self._deferred:
            self._deferred.discard(fd)
            key = self._keys.get(fd)
            if key is not None:
                self._place(fd, key.events)

    def deferred(self) -> frozenset[int]:
        """The sockets read in rounds now."""
        return frozenset(self._deferred)

    def _place(self, fd: int, events: int) -> None:
        later = events & selectors.EVENT_READ if fd in self._deferred else 0
        self._set(self._now, fd, events & ~later)
        self._set(self._later, fd, later)

    @staticmethod
    def _set(selector: selectors.BaseSelector, fd: int, events: int) -> None:
        current = selector.get_map().get(fd)
        if current is None:
            if events:
                selector.register(fd, events)
        elif not events:
            selector.unregister(fd)
        elif current.events != events:
            selector.modify(fd, events)
