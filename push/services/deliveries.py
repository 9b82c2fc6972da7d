"""The delivery log as the push path writes it: claims (one row per Msg-ID), leases, outcomes,
single or in batches."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import Field, ForeignObjectRel
from django.utils import timezone

from core import metrics
from core.dbwait import database_wait
from core.events import event_publish
from push.models import (
    Delivery,
    DeliveryStatus,
    Provider,
)
from push.services.policy import CLAIM_LEASE_S, PROVIDER_OF_TOKEN_TYPE, PUSH_WINDOW_MAX_S, Finish, PushJob, _str
from registry.selectors import token_devices_get

log = logging.getLogger(__name__)


def delivery_new(job: PushJob) -> Delivery:
    """The delivery row a push_req starts as (not saved): queued, claimed now."""
    fields = job.fields
    token_type = _str(fields, "Token-Type", 32).lower()
    return Delivery(
        created_at=datetime.fromtimestamp(job.started, tz=UTC),
        deadline_at=datetime.fromtimestamp(job.deadline, tz=UTC),
        claimed_at=timezone.now(),
        source=job.source,
        msg_id=job.msg_id or None,
        call_id=_str(fields, "Call-ID"),
        account_id=_str(fields, "Account-ID", 64),
        device_id=_str(fields, "Endpoint-ID", 64),
        app_id=_str(fields, "Token-App"),
        provider=PROVIDER_OF_TOKEN_TYPE.get(token_type, ""),
        token=_str(fields, "Token-ID", 1024),
        token_type=token_type,
        reply_to=_str(fields, "Server-ID") if settings.PUSHER_LEGACY_PUSH_RESP else "",
    )


def deliveries_devices_fill(deliveries: list[Delivery]) -> None:
    """Kamailio's push_req names no account or device (Account-ID, Endpoint-ID), but the token's
    device is known: fill what is missing from the device holding the token active, one query for
    the batch. Runs where the claim is written (the push lane's store thread, never its loop). A
    device other than the one the push_req names in part (Account-ID or Endpoint-ID) is not used."""
    missing = [d for d in deliveries if d.token and not (d.account_id and d.device_id)]
    if not missing:
        return
    owners = token_devices_get(tokens={d.token for d in missing})
    for delivery in missing:
        owner = owners.get(delivery.token)
        if owner is None or delivery.account_id not in ("", owner[0]) or delivery.device_id not in ("", owner[1]):
            continue
        delivery.account_id, delivery.device_id = owner[0], delivery.device_id or owner[1]


def _claim(job: PushJob) -> tuple[Delivery, str]:
    """Create the delivery row, or find the one a redelivered push_req (same Msg-ID) made.
    Returns (delivery, "new" | "duplicate" | "orphaned")."""
    delivery = delivery_new(job)
    deliveries_devices_fill([delivery])
    if not job.msg_id:
        delivery.save(force_insert=True)
        return delivery, "new"
    try:
        if connection.in_atomic_block:
            with transaction.atomic():  # a savepoint, so a duplicate doesn't break the caller's transaction
                delivery.save(force_insert=True)
        else:
            delivery.save(force_insert=True)  # autocommit: one INSERT
        return delivery, "new"
    except IntegrityError:
        existing = Delivery.objects.get(msg_id=job.msg_id)
    return _claim_takeover(existing)


def deliveries_claim(jobs: list[PushJob]) -> list[Delivery | None]:
    """Claim many push_req at once. Returns, per job, its new delivery (pk set), or None when its
    Msg-ID already has a row (a redelivery: `push_request_handle`'s claim waits for or takes over
    that row)."""
    deliveries = [delivery_new(job) for job in jobs]
    deliveries_devices_fill(deliveries)
    deliveries_insert(deliveries)
    return [d if d.pk is not None else None for d in deliveries]


def deliveries_insert(deliveries: list[Delivery], *, durable: bool = True) -> None:
    """Write new delivery rows at once: `INSERT ... ON CONFLICT (msg_id) DO NOTHING`, pipelined on
    PostgreSQL (one round trip for the batch). Each row written gets its pk; one whose Msg-ID
    already had a row keeps pk None. Missing account and device ids are the caller's to fill
    (`deliveries_devices_fill`; the push lane does it with the outcome, off the send).
    `durable=False` (a claim) commits without waiting for the WAL flush on PostgreSQL: visible to
    every other session at once, never held up by a slow disk."""
    claim_connection = None
    if not durable and connection.vendor == "postgresql" and not connection.in_atomic_block:
        claim_connection = _claim_connection()
    keyed = [d for d in deliveries if d.msg_id]
    for delivery in deliveries:
        if not delivery.msg_id:
            delivery.save(force_insert=True)
    if not keyed:
        return
    meta = Delivery._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(_column(f)) for f in fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    conflict = f"ON CONFLICT ({quote('msg_id')}) DO NOTHING RETURNING {quote(_column(meta.pk))}"
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {placeholders} {conflict}"  # noqa: S608
    # One result per row: empty where the Msg-ID already had a row.
    results = _rows_write(sql, [_row(d, fields) for d in keyed], returning=True, raw=claim_connection)
    for delivery, row in zip(keyed, results, strict=True):
        if row:
            delivery.pk = row[0]
            delivery._state.adding = False


def _claim_takeover(existing: Delivery) -> tuple[Delivery, str]:
    """A redelivered push_req whose row exists. Done (sent, failed...): a duplicate. Still queued:
    its sender is either alive (it refreshes the lease before every attempt, so wait: it will
    finish) or dead (SIGKILL, crash): once the lease has run out, take the row over atomically
    ("orphaned"); `push_request_handle` then sends it again if its deadline allows. The dead sender
    may well have delivered it already, but a second VoIP push for the same Call-ID is harmless
    (CallKit keys calls by their id) where a missing one is a missed call."""
    waited_until = time.monotonic() + CLAIM_LEASE_S + PUSH_WINDOW_MAX_S
    while True:
        if existing.status != DeliveryStatus.QUEUED:
            return existing, "duplicate"
        lease_end = timezone.now() - timedelta(seconds=CLAIM_LEASE_S)
        if existing.claimed_at is None or existing.claimed_at < lease_end:
            taken = Delivery.objects.filter(
                pk=existing.pk, status=DeliveryStatus.QUEUED, claimed_at=existing.claimed_at
            ).update(claimed_at=timezone.now())
            existing.refresh_from_db()
            if taken:
                return existing, "orphaned"
            continue  # someone else took it over first: look again
        if time.monotonic() > waited_until:  # a clock gone wrong: never wait forever
            return existing, "duplicate"
        time.sleep(0.25)
        existing.refresh_from_db()


def delivery_touch(*, delivery: Delivery, attempts: int) -> None:
    """Refresh the sender's lease before another attempt (a redelivery then waits, not takes over)."""
    Delivery.objects.filter(pk=delivery.pk).update(claimed_at=timezone.now(), attempts=attempts)


FINISH_FIELDS = (
    "status", "reason", "error", "attempts", "finished_at", "http_status", "provider_message_id", "latency_ms",
    "push_app", "push_type", "account_id", "device_id",  # the ids: filled from the token's device
)


def delivery_finish_apply(delivery: Delivery, finish: Finish, *, started: float) -> None:
    """Set a delivery's outcome fields (not saved)."""
    delivery.status = finish.status
    delivery.reason = finish.reason[:200]
    delivery.error = finish.error[:2000]
    delivery.attempts = finish.attempts
    delivery.finished_at = timezone.now()
    result = finish.result
    if result is not None:
        delivery.http_status = result.status
        delivery.provider_message_id = result.message_id[:255]
        delivery.latency_ms = (time.time() - started) * 1000


def deliveries_save_finished(deliveries: list[Delivery]) -> None:
    """Write many finished deliveries' outcome fields in one round trip (psycopg pipelines
    `executemany`)."""
    meta = Delivery._meta
    fields = [meta.get_field(name) for name in FINISH_FIELDS]
    assignments = ", ".join(f"{connection.ops.quote_name(_column(f))} = %s" for f in fields)
    sql = (f"UPDATE {connection.ops.quote_name(meta.db_table)} SET {assignments} "  # noqa: S608 - model identifiers
           f"WHERE {connection.ops.quote_name(_column(meta.pk))} = %s")
    rows = [[*_row(d, fields), d.pk] for d in deliveries]
    if len(rows) == 1:
        _rows_write(sql, rows)  # one statement: its own transaction
        return
    with transaction.atomic():
        _rows_write(sql, rows)


def _column(field: Field | ForeignObjectRel) -> str:
    """The column of one of Delivery's concrete fields (the types also allow a reverse relation and
    a field without a column, which these never are)."""
    assert isinstance(field, Field) and field.column is not None
    return field.column


def _row(delivery: Delivery, fields: list[Any]) -> list[Any]:
    if connection.vendor == "postgresql":
        return [getattr(delivery, f.attname) for f in fields]  # str, int, float, datetime, None: psycopg's own
    db = connections[DEFAULT_DB_ALIAS]
    return [f.get_db_prep_save(getattr(delivery, f.attname), db) for f in fields]


def _rows_write(sql: str, rows: list[list[Any]], *, returning: bool = False, raw: Any = None) -> list[Any]:
    """Run one statement over many rows; with `returning`, each row's first result row (or None).

    On PostgreSQL on a cursor binding values server-side (the statement text is parsed once and
    each row's values are dumped in C, where Django's client-side-binding cursor would render every
    row into SQL text in Python); many rows in one round trip (psycopg pipelines `executemany`),
    one row as a plain statement (a pipeline's set-up costs more than it saves for one).
    `raw`: a psycopg connection of the caller's instead of Django's."""
    db = connections[DEFAULT_DB_ALIAS]
    if raw is not None or db.vendor == "postgresql":
        if raw is None:
            db.ensure_connection()
            raw = db.connection
        with psycopg.Cursor(raw) as cursor:
            if len(rows) == 1:
                cursor.execute(sql, rows[0])
                return [cursor.fetchone()] if returning else []
            cursor.executemany(sql, rows, returning=returning)
            if not returning:
                return []
            results = []
            while True:
                results.append(cursor.fetchone())
                if not cursor.nextset():
                    return results
    results = []
    with db.cursor() as cursor:
        for params in rows:
            cursor.execute(sql, params)
            results.append(cursor.fetchone() if returning else None)
    return results


_claims = threading.local()


def _claim_connection() -> psycopg.Connection[Any]:
    """This thread's PostgreSQL connection for claims: Django's settings, autocommit, and
    `synchronous_commit` off for the session, so that a claim is one statement whose commit never
    waits for the WAL flush (a claim a crash loses only lets a redelivery send again). Its own
    connection, so that nothing durable is ever written on it; a broken one is replaced on next use."""
    raw = getattr(_claims, "connection", None)
    if raw is None or raw.closed or raw.broken:
        db = connections[DEFAULT_DB_ALIAS]
        raw = db.get_new_connection(db.get_connection_params())
        raw.autocommit = True
        raw.execute("SET synchronous_commit TO OFF")
        _claims.connection = raw
    return raw


def claim_connection_close() -> None:
    """Close this thread's claim connection (the push lane's claim thread, when it stops)."""
    raw = getattr(_claims, "connection", None)
    if raw is not None:
        _claims.connection = None
        raw.close()


def delivery_finished(delivery: Delivery) -> None:
    """Metrics and the live event of a recorded delivery."""
    labels = {"provider": delivery.provider or "unknown", "app": delivery.app_id[:100] or "unknown"}
    metrics.PUSHES.labels(**labels, status=delivery.status, reason=delivery.reason or "ok").inc()
    if delivery.latency_ms is not None:
        metrics.PROVIDER_LATENCY.labels(provider=labels["provider"]).observe(delivery.latency_ms / 1000)
    event_types: dict[str, str] = {
        DeliveryStatus.SENT: "push.sent", DeliveryStatus.EXPIRED: "push.expired",
    }
    event_type = event_types.get(delivery.status, "push.failed")
    event_publish(
        event_type,
        account=delivery.account_id or None,
        device=delivery.device_id or None,
        app=delivery.app_id,
        provider=delivery.provider,
        token=delivery.token_masked,
        call_id=delivery.call_id or None,
        outcome=delivery.status,
        reason=delivery.reason or None,
        latency_ms=round(delivery.latency_ms, 1) if delivery.latency_ms is not None else None,
        delivery=delivery.pk,
    )


def _finish(delivery: Delivery, finish: Finish, *, started: float) -> Delivery:
    delivery_finish_apply(delivery, finish, started=started)
    # The push went out already: wait out a database outage (for a while) rather than lose its outcome.
    database_wait(lambda: delivery.save(update_fields=list(FINISH_FIELDS)), what=f"recording delivery #{delivery.pk}",
                  give_up_s=120.0)
    delivery_finished(delivery)
    return delivery


def delivery_outcome_text(*, delivery: Delivery) -> str:
    """One line an operator reads after a test push: outcome, HTTP status, reason, the provider's
    message id (apns-id or FCM message name), latency, error."""
    parts = [delivery.get_status_display()]
    if delivery.http_status is not None:
        parts.append(f"HTTP {delivery.http_status}")
    if delivery.reason:
        parts.append(f"reason {delivery.reason}")
    if delivery.provider_message_id:
        label = "apns-id" if delivery.provider == Provider.APPLE else "message"
        parts.append(f"{label} {delivery.provider_message_id}")
    if delivery.latency_ms is not None:
        parts.append(f"{delivery.latency_ms:.0f} ms")
    text = ", ".join(parts)
    if delivery.error:
        text += f" ({delivery.error})"
    return text
