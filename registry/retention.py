"""Retention of devices and push tokens: only what is already dead is aged out.

A phone woken by pushes REGISTERs when it is woken, so a phone nobody called for weeks is not seen
for weeks and its push object in Kazoo is still the right one. Deleting its device would not
remove that push object (pusher never writes one away), but pusher could no longer clear it when
the provider says the token is dead: Kazoo would keep ringing a dead token. So "not seen for N
days" alone deletes nothing that is alive. What goes, after N days without a sighting:

* a push token that is inactive (replaced by a newer registration, dead at the provider,
  deactivated by an operator) and was neither seen nor deactivated within the N days;
* a device that holds no push object, has no active token, whose sync state says Kazoo holds none
  either (synced, or kept locally: not waiting to clear it in Kazoo), and that was neither seen nor
  changed within the N days; its tokens and drift-check state go with it.

A phone that registers again afterwards simply comes back, as a new device. Each batch is its own
short transaction; on PostgreSQL the devices of a batch are locked first, skipping any a
registration holds, so a registration never waits on a prune and a device re-registered meanwhile
is not deleted (its row changed: the lock re-reads it). Called by push.services.retention.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from registry.models import Device, PushToken, SyncStatus


@dataclass(frozen=True)
class RegistryPruned:
    tokens: int = 0
    devices: int = 0
    batches: int = 0


def _tokens_dead(cutoff: datetime) -> QuerySet[PushToken]:
    return PushToken.objects.filter(active=False, last_seen_at__lt=cutoff).filter(
        Q(deactivated_at__isnull=True) | Q(deactivated_at__lt=cutoff)
    )


def _devices_dead(cutoff: datetime) -> QuerySet[Device]:
    seen_before = Q(last_seen_at__lt=cutoff) | Q(last_seen_at__isnull=True, created_at__lt=cutoff)
    changed_before = Q(push_changed_at__isnull=True) | Q(push_changed_at__lt=cutoff)
    active_token = PushToken.objects.filter(device=OuterRef("pk"), active=True)
    return (
        Device.objects.filter(seen_before, changed_before, push__isnull=True,
                              sync_status__in=[SyncStatus.SYNCED, SyncStatus.LOCAL])
        .exclude(Exists(active_token))
    )


def registry_prune_count(*, cutoff: datetime) -> RegistryPruned:
    """What `registry_prune` would delete now (a dry run): tokens counted with those their
    devices take along."""
    devices = _devices_dead(cutoff)
    tokens = PushToken.objects.filter(Q(pk__in=_tokens_dead(cutoff).values("pk")) | Q(device__in=devices.values("pk")))
    return RegistryPruned(tokens=tokens.count(), devices=devices.count())


def registry_prune(
    *, cutoff: datetime, batch_size: int, stop: threading.Event | None = None,
    pace: Callable[[float], None] | None = None,
) -> RegistryPruned:
    """Delete the dead devices (with their tokens), then the dead tokens of living devices, at most
    `batch_size` rows per statement, each batch committed on its own; `pace(seconds the batch
    took)` between two batches. `stop` set: ends after the batch in hand."""
    devices = tokens = batches = 0
    locking = connection.vendor == "postgresql"
    while not (stop and stop.is_set()):
        started = time.monotonic()
        with transaction.atomic():
            candidates = _devices_dead(cutoff).order_by("pk").values_list("pk", flat=True)
            if locking:  # the lock re-reads each row: one a registration changed meanwhile drops out
                candidates = candidates.select_for_update(skip_locked=True)
            pks = list(candidates[:batch_size])
            if not pks:
                break
            _, per_model = Device.objects.filter(pk__in=pks).delete()
        batches += 1
        devices += per_model.get(Device._meta.label, 0)
        tokens += per_model.get(PushToken._meta.label, 0)
        if len(pks) < batch_size:
            break
        if pace:
            pace(time.monotonic() - started)
    while not (stop and stop.is_set()):
        started = time.monotonic()
        # The conditions are repeated on the DELETE itself: a token a registration brought back
        # between the read and the delete is re-read under the row lock and kept.
        batch = _tokens_dead(cutoff).order_by("pk").values("pk")[:batch_size]
        with transaction.atomic():
            deleted, _ = _tokens_dead(cutoff).filter(pk__in=batch).delete()
        batches += 1
        tokens += deleted
        if deleted < batch_size:
            break
        if pace:
            pace(time.monotonic() - started)
    return RegistryPruned(tokens=tokens, devices=devices, batches=batches)
