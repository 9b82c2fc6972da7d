"""A registration batch's token writes that touch many (device, token) pairs at once: the last-seen
refresh and the retirement of replaced tokens.

On PostgreSQL one statement each, the pairs passed as two arrays (`unnest`): the ORM's form, an OR of
one condition per device, cost more CPU to build than the rest of the batch (and more to plan
in PostgreSQL) for a batch of a few hundred devices. Elsewhere (SQLite) the ORM's form, in chunks
that stay under SQLite's expression depth."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import reduce
from operator import or_
from typing import TypeVar

from django.db import connection
from django.db.models import Q

from registry.models import PushToken

T = TypeVar("T")
CHUNK = 200  # pairs per ORM statement (SQLite's expression depth limit is 1000)
REPLACED_REASON = "replaced by a newer registration"


def tokens_seen(pairs: Sequence[tuple[int, str]], *, now: datetime) -> None:
    """last_seen_at = now for these (device pk, token) pairs."""
    if not pairs:
        return
    if connection.vendor == "postgresql":
        devices, tokens = zip(*pairs, strict=True)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {_table()} SET last_seen_at = %s "  # noqa: S608 - model identifiers
                "WHERE (device_id, token) IN (SELECT * FROM unnest(%s::bigint[], %s::text[]))",
                [now, list(devices), list(tokens)],
            )
        return
    for chunk in _chunks(pairs):
        PushToken.objects.filter(reduce(or_, (Q(device_id=d, token=t) for d, t in chunk))).update(last_seen_at=now)


def tokens_retire(kinds: Sequence[tuple[int, str]], keep: Sequence[tuple[int, str]], *, now: datetime) -> None:
    """Deactivate the active tokens of these (device pk, kind) pairs other than the `keep` (device
    pk, token) pairs: a new token of a kind replaces the old one (reinstall, rotation by the OS)."""
    if not kinds:
        return
    if connection.vendor == "postgresql":
        kind_devices, kind_names = zip(*kinds, strict=True)
        keep_devices, keep_tokens = zip(*keep, strict=True) if keep else ((), ())
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {_table()} "  # noqa: S608 - model identifiers
                "SET active = false, deactivated_at = %s, deactivated_reason = %s "
                "WHERE active AND (device_id, kind) IN (SELECT * FROM unnest(%s::bigint[], %s::text[])) "
                "AND (device_id, token) NOT IN (SELECT * FROM unnest(%s::bigint[], %s::text[]))",
                [now, REPLACED_REASON, list(kind_devices), list(kind_names), list(keep_devices), list(keep_tokens)],
            )
        return
    kept: dict[int, list[str]] = {}
    for device, token in keep:
        kept.setdefault(device, []).append(token)
    by_device: dict[int, set[str]] = {}
    for device, kind in kinds:
        by_device.setdefault(device, set()).add(kind)
    conditions = [Q(device_id=d, kind__in=k) & ~Q(token__in=kept.get(d, [])) for d, k in by_device.items()]
    for chunk in _chunks(conditions):
        PushToken.objects.filter(reduce(or_, chunk), active=True).update(
            active=False, deactivated_at=now, deactivated_reason=REPLACED_REASON
        )


def _table() -> str:
    return connection.ops.quote_name(PushToken._meta.db_table)


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
