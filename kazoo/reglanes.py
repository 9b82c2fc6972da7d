"""The consumer's registration lanes: a device's reg_success messages handled in arrival order,
in batches, each lane on a thread of its own (kazoo.worker hands them over from the loop)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from django.db import connection as db_connection

from kazoo.wire import RawMessage

log = logging.getLogger("pusher.consumer")

# Where a delivery is acked: (channel generation, channel, delivery tag).
Ticket = tuple[int, Any, int]
# A registration lane takes every message waiting for it, up to this many, as one batch.
LANE_BATCH_MAX = 100


class RegistrationLane:
    """One thread handling the batches of its devices' reg_success messages in arrival order."""

    def __init__(self, name: str, handle: Callable[[list[tuple[Ticket, RawMessage]]], None]) -> None:
        self._queue: queue.SimpleQueue[list[tuple[Ticket, RawMessage]] | None] = queue.SimpleQueue()
        self._handle = handle
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def put(self, deliveries: list[tuple[Ticket, RawMessage]]) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        self._queue.put(deliveries)

    def close(self) -> None:
        """Handle what was put, then stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        held: list[tuple[Ticket, RawMessage]] = []
        taking = True
        while taking or held:
            if not held:
                first = self._queue.get()
                if first is None:
                    break
                held.extend(first)
            while taking and len(held) < LANE_BATCH_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    taking = False
                else:
                    held.extend(more)
            batch, held = held[:LANE_BATCH_MAX], held[LANE_BATCH_MAX:]
            try:
                self._handle(batch)
            except Exception:  # the lane must live on; these messages come back after a reconnect
                log.exception("registration lane failed on a batch of %d; left unacked", len(batch))
        db_connection.close()  # this thread's
