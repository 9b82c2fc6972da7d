"""The batched DELETE every retention prune shares: rows go a bounded batch per statement, each its
own short transaction, so a prune runs beside the consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet


def rows_delete_in_batches(
    rows: QuerySet[Any], *, order_by: str, batch_size: int, stop: threading.Event | None = None,
    pace: Callable[[float], None] | None = None,
) -> list[int]:
    """Delete `rows` in `order_by` order, at most `batch_size` per statement, until a statement
    deletes fewer or `stop` is set; `pace(seconds the batch took)` between two batches. Returns
    the rows each statement deleted.

    On PostgreSQL a batch's rows are locked with SKIP LOCKED (another pruner's are skipped, not
    waited for). The DELETE selects by pk alone: with `rows`' conditions repeated beside that
    subquery, PostgreSQL deleted every matching row in one statement."""
    counts: list[int] = []
    while not (stop and stop.is_set()):
        started = time.monotonic()
        batch = rows.order_by(order_by).values("pk")[:batch_size]
        if connection.vendor == "postgresql":
            batch = batch.select_for_update(skip_locked=True)
        with transaction.atomic():
            count, _ = rows.model._default_manager.filter(pk__in=batch).delete()
        counts.append(count)
        if count < batch_size:
            break
        if pace:
            pace(time.monotonic() - started)
    return counts
