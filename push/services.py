"""Push services: credentials, apps, sending. Every face (admin, API, commands, consumer) calls these."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from push.credentials import ParsedCredential, parse_credential, pem_cert_and_key
from push.models import (
    Credential,
    CredentialKind,
    Delivery,
    DeliverySource,
    DeliveryStatus,
    Provider,
    PushApp,
    mask_token,
)
from push.payloads import apns_body, apns_extra_headers, apns_topic, fcm_data, int_or_none
from push.providers import apns, fcm
from pusher_site import metrics
from pusher_site.errors import BadMessage, CredentialError, PusherError
from pusher_site.events import event_publish
from pusher_site.fields import is_undecryptable
from pusher_site.messages import fields_check

if TYPE_CHECKING:
    from registry.models import Device as RegistryDevice

log = logging.getLogger(__name__)


def credential_parse(
    *, kind: str, data: bytes | str, password: str | None = None, key_id: str = "", team_id: str = ""
) -> ParsedCredential:
    """Parse and validate secret material; raises CredentialError with a clear message."""
    return parse_credential(kind, data, password=password or None, key_id=key_id, team_id=team_id)


@transaction.atomic
def credential_save(*, name: str, parsed: ParsedCredential, credential: Credential | None = None) -> Credential:
    """Store a parsed credential: the secret encrypted, the facts in clear."""
    facts = parsed.facts
    credential = credential or Credential()
    credential.name = name
    credential.kind = str(facts.kind.value if hasattr(facts.kind, "value") else facts.kind)
    credential.secret = parsed.secret
    credential.subject = facts.subject
    credential.topics = list(facts.topics)
    credential.environment = facts.environment
    credential.not_before = facts.not_before
    credential.not_after = facts.not_after
    credential.fingerprint_sha256 = facts.fingerprint_sha256
    credential.key_id = facts.key_id
    credential.team_id = facts.team_id
    credential.project_id = facts.project_id
    credential.client_email = facts.client_email
    credential.usable = facts.usable
    credential.unusable_reason = facts.unusable_reason
    credential.warnings = list(facts.warnings)
    credential.save()
    log.info(
        "credential %r saved: kind=%s fingerprint=%s not_after=%s usable=%s",
        credential.name, credential.kind, credential.fingerprint_sha256[:16], credential.not_after, credential.usable,
    )
    return credential


# --- Sending ------------------------------------------------------------------------

PROVIDER_OF_TOKEN_TYPE = {
    "apple": Provider.APPLE,
    "apns": Provider.APPLE,
    "firebase": Provider.FIREBASE,
    "google": Provider.FIREBASE,
    "android": Provider.FIREBASE,
    "fcm": Provider.FIREBASE,
}
APP_CACHE_TTL_S = 5.0
# A send attempt never takes longer than this; a push claimed longer ago than the lease by a
# sender that has not refreshed it is taken to be orphaned (its process died).
ATTEMPT_TIMEOUT_S = 5.0
CLAIM_LEASE_S = ATTEMPT_TIMEOUT_S + 2.0
# An attempt that could not finish before the deadline is not started: it would arrive late.
ATTEMPT_MIN_S = 0.25
PUSH_WINDOW_MAX_S = 300

_app_cache: dict[tuple[str, str], tuple[float, PushApp | None]] = {}
_app_cache_lock = threading.Lock()


def push_app_get(*, app_id: str, provider: str) -> PushApp | None:
    """The app with its credential, cached a few seconds: read on every push, yet an admin edit
    applies everywhere within seconds without a restart (Kazoo needed one)."""
    key = (app_id, provider)
    now = time.monotonic()
    with _app_cache_lock:
        hit = _app_cache.get(key)
        if hit is not None and now - hit[0] < APP_CACHE_TTL_S:
            return hit[1]
    app = PushApp.objects.select_related("credential").filter(app_id=app_id, provider=provider).first()
    with _app_cache_lock:
        _app_cache[key] = (now, app)
    return app


def push_app_cache_clear() -> None:
    with _app_cache_lock:
        _app_cache.clear()


def _push_apps_changed() -> None:
    """This process sees an app or credential change now, the others within APP_CACHE_TTL_S;
    cleared again at commit so that no push reads the old row back into the cache meanwhile."""
    push_app_cache_clear()
    transaction.on_commit(push_app_cache_clear)


_fcm_sender: tuple[str, fcm.FcmSender] | None = None
_fcm_lock = threading.Lock()


def _fcm() -> fcm.FcmSender:
    """The process's FCM sender (one OAuth2 token per credential), rebuilt if the endpoint setting
    changes (tests point it at a fake)."""
    global _fcm_sender
    endpoint = settings.PUSHER_FCM_ENDPOINT
    with _fcm_lock:
        if _fcm_sender is None or _fcm_sender[0] != endpoint:
            _fcm_sender = (endpoint, fcm.FcmSender(endpoint, ca_file=settings.PUSHER_FCM_CA_FILE))
        return _fcm_sender[1]


def _cache_key(credential: Credential) -> str:
    return f"{credential.pk}:{credential.fingerprint_sha256}:{credential.updated_at.timestamp()}"


def _secret(credential: Credential) -> str:
    """The decrypted secret; CredentialError if no key decrypts it (push_app_for refuses such a
    credential first: a provider builder never sees the placeholder)."""
    if not credential.secret_readable:
        raise CredentialError(f"credential {credential.name!r}: {credential.cannot_send_reason()}")
    return credential.secret


def _apns_credential(credential: Credential) -> apns.ApnsCredential:
    return _apns_credential_built(
        _cache_key(credential), credential.kind, _secret(credential), credential.key_id, credential.team_id
    )


def _fcm_credential(credential: Credential, app: PushApp) -> fcm.FcmCredential:
    return _fcm_credential_built(_cache_key(credential), _secret(credential), app.project_id or credential.project_id)


# The provider credentials are built once per stored version (the cache key changes when the
# credential is saved), not on every push: splitting the PEM or parsing the service-account JSON
# each time was work on the push path's hot loop.
@functools.lru_cache(maxsize=64)
def _apns_credential_built(cache_key: str, kind: str, secret: str, key_id: str, team_id: str) -> apns.ApnsCredential:
    if kind == CredentialKind.APNS_TOKEN:
        return apns.ApnsCredential(kind="token", key_pem=secret, key_id=key_id, team_id=team_id, cache_key=cache_key)
    cert_pem, key_pem = pem_cert_and_key(secret)
    return apns.ApnsCredential(kind="certificate", cert_pem=cert_pem, key_pem=key_pem, cache_key=cache_key)


@functools.lru_cache(maxsize=64)
def _fcm_credential_built(cache_key: str, secret: str, project_id: str) -> fcm.FcmCredential:
    return fcm.FcmCredential(service_account_info=json.loads(secret), project_id=project_id, cache_key=cache_key)


@dataclass(frozen=True)
class SendResult:
    """What a provider answered, in the terms the delivery log keeps."""

    outcome: str  # the providers' Outcome values: sent, token_invalid, bad_device_token, retry, failed
    status: int | None
    reason: str
    description: str
    message_id: str
    timestamp_ms: int | None = None


@dataclass
class PushJob:
    """One validated push_req on its way: what every sender (the synchronous `push_request_handle`
    and the consumer's concurrent `push.engine`) needs to claim, send and record it."""

    fields: Mapping[str, Any]
    source: str
    token: str
    token_type: str
    app_id: str
    msg_id: str
    push_type: str | None
    started: float
    window: float
    deadline: float


def push_job_prepare(
    *, fields: Mapping[str, Any], source: str, received_at: float | None = None, push_type: str | None = None
) -> PushJob:
    """Validate a push_req and fix its deadline. Raises BadMessage for one that cannot be handled.
    The text itself must have passed `fields_check` (bus messages do in `message_decode`)."""
    started = received_at or time.time()
    token = _required_str(fields, "Token-ID")
    token_type = _required_str(fields, "Token-Type").lower()
    app_id = _required_str(fields, "Token-App")
    expires = int_or_none(fields.get("Expires"))
    # A call push is useless after the ring window; an absurd Expires is capped, not trusted.
    window = (
        min(expires, PUSH_WINDOW_MAX_S) if expires is not None and expires > 0 else settings.PUSHER_PUSH_DEADLINE_S
    )
    return PushJob(
        fields=fields, source=source, token=token, token_type=token_type, app_id=app_id,
        msg_id=_str(fields, "Msg-ID"), push_type=push_type, started=started, window=window, deadline=started + window,
    )


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


def push_app_for(job: PushJob, delivery: Delivery) -> tuple[PushApp | None, str, str]:
    """The app a push goes through, and why it cannot (an operator-actionable text) with the
    failure reason, else ("", ""). Sets the delivery's app and push type."""
    provider = PROVIDER_OF_TOKEN_TYPE.get(job.token_type)
    if provider is None:
        return None, "unknown_token_type", (
            f"Token-Type {job.token_type!r} is not apple/apns or firebase/google/android/fcm"
        )
    app = push_app_get(app_id=job.app_id, provider=provider)
    delivery.push_app = app
    problem = ""
    if app is None:
        problem = f"no {provider} push app {job.app_id!r} is configured (add it in the admin or with add_*_app)"
    elif not app.enabled:
        problem = f"push app {app} is disabled"
    elif app.credential is None:
        problem = f"push app {app} has no credential"
    else:
        problem = app.credential.cannot_send_reason()
    if problem:
        return app, "app_unusable", problem
    assert app is not None
    if provider == Provider.APPLE:
        delivery.push_type = job.push_type or app.push_type
    else:
        delivery.push_type = "notification" if job.push_type == "alert" else "data"
    return app, "", ""


def _attempt_timeout(deadline: float) -> float:
    # Leave a little room so that a request written at the very end still arrives in time.
    return max(0.01, min(ATTEMPT_TIMEOUT_S, deadline - time.time() - 0.05))


def apns_request_build(
    *, app: PushApp, fields: Mapping[str, Any], token: str, push_type: str | None
) -> apns.ApnsRequest:
    now = time.time()
    topic = app.effective_topic
    if push_type and push_type != "voip":
        # A visible (alert) push goes to the bundle's own topic, never to its PushKit one.
        topic = topic.removesuffix(".voip")
    push_type = push_type or app.push_type or "voip"
    # Seconds Apple keeps trying: the push_req's Expires (capped), else the app's setting. 0 (or
    # less) is apns-expiration 0, "now or never"; None leaves Apple's default.
    expires = int_or_none(fields.get("Expires"))
    valid_s = min(expires, PUSH_WINDOW_MAX_S) if expires is not None else app.expiration
    expiration = None if valid_s is None else (int(now) + valid_s if valid_s > 0 else 0)
    return apns.ApnsRequest(
        token=token,
        topic=apns_topic(topic, push_type),
        push_type=push_type,
        priority=app.priority,
        expiration=expiration,
        collapse_id=app.collapse_id or None,
        extra_headers=apns_extra_headers(app.extra_headers),
        body=apns_body(fields, now_ms=int(now * 1000)),
        host=app.host,
        port=app.port,
    )


def fcm_request_build(*, app: PushApp, fields: Mapping[str, Any], token: str, push_type: str | None) -> fcm.FcmRequest:
    now_ms = int(time.time() * 1000)
    expires = int_or_none(fields.get("Expires"))
    ttl = min(expires, PUSH_WINDOW_MAX_S) if expires is not None and expires >= 0 else app.ttl_s
    return fcm.FcmRequest(
        token=token, data=fcm_data(fields, now_ms=now_ms), android_priority=app.android_priority, ttl_s=ttl,
        collapse_key=app.collapse_id or None,
        notification=_fcm_notification(fields) if push_type == "alert" else None,
    )


def _apns_result(result: apns.ApnsResult) -> SendResult:
    return SendResult(
        outcome=result.outcome.value, status=result.status, reason=result.reason,
        description=result.description, message_id=result.apns_id or "", timestamp_ms=result.timestamp_ms,
    )


def _fcm_result(result: fcm.FcmResult) -> SendResult:
    return SendResult(
        outcome=result.outcome.value, status=result.status, reason=result.reason,
        description=result.description, message_id=result.message_name or "",
    )


def _provider_send(
    *, app: PushApp, fields: Mapping[str, Any], token: str, deadline: float, push_type: str | None = None
) -> SendResult:
    credential = app.credential
    assert credential is not None
    timeout = _attempt_timeout(deadline)
    if app.provider == Provider.APPLE:
        request = apns_request_build(app=app, fields=fields, token=token, push_type=push_type)
        return _apns_result(apns.get_client().send_sync(request, _apns_credential(credential), timeout=timeout))
    request_fcm = fcm_request_build(app=app, fields=fields, token=token, push_type=push_type)
    return _fcm_result(_fcm().send(request_fcm, _fcm_credential(credential, app), timeout=timeout))


async def provider_send_async(
    *, app: PushApp, fields: Mapping[str, Any], token: str, deadline: float, push_type: str | None = None,
    fcm_executor: Any = None,
) -> SendResult:
    """`_provider_send` for a caller on an event loop: APNs on the client's own loop (no thread),
    FCM (pyfcm is blocking) on `fcm_executor`."""
    credential = app.credential
    assert credential is not None
    timeout = _attempt_timeout(deadline)
    if app.provider == Provider.APPLE:
        request = apns_request_build(app=app, fields=fields, token=token, push_type=push_type)
        return _apns_result(await apns.get_client().send(request, _apns_credential(credential), timeout=timeout))
    request_fcm = fcm_request_build(app=app, fields=fields, token=token, push_type=push_type)
    fcm_credential = _fcm_credential(credential, app)
    sender = _fcm()
    result = await asyncio.get_running_loop().run_in_executor(
        fcm_executor, functools.partial(sender.send, request_fcm, fcm_credential, timeout=timeout)
    )
    return _fcm_result(result)


def _required_str(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadMessage(f"push_req without a usable {name}")
    if len(value) > 1024:
        raise BadMessage(f"push_req {name} is longer than 1024 characters")
    return value.strip()


def _str(fields: Mapping[str, Any], name: str, limit: int = 255) -> str:
    value = fields.get(name)
    return str(value)[:limit] if isinstance(value, str | int) and not isinstance(value, bool) else ""


def _claim(job: PushJob) -> tuple[Delivery, str]:
    """Create the delivery row, or find the one a redelivered push_req (same Msg-ID) made.
    Returns (delivery, "new" | "duplicate" | "orphaned")."""
    delivery = delivery_new(job)
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
    """Claim many push_req at once: `INSERT ... ON CONFLICT (msg_id) DO NOTHING`, pipelined on
    PostgreSQL (one round trip for the batch). Returns,
    per job, its new delivery (pk set), or None when its Msg-ID already has a row (a redelivery:
    the caller hands it to `push_request_handle`, whose claim waits for or takes over that row)."""
    deliveries = [delivery_new(job) for job in jobs]
    keyed = [d for d in deliveries if d.msg_id]
    for delivery in deliveries:
        if not delivery.msg_id:
            delivery.save(force_insert=True)
    if keyed:
        meta = Delivery._meta
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(f.column) for f in fields)
        placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
        conflict = f"ON CONFLICT ({quote('msg_id')}) DO NOTHING RETURNING {quote(meta.pk.column)}"
        sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {placeholders} {conflict}"  # noqa: S608
        # One result per row: empty where the Msg-ID already had a row.
        results = _rows_write(sql, [_row(d, fields) for d in keyed], returning=True)
        pks = [row[0] if row else None for row in results]
        for delivery, pk in zip(keyed, pks, strict=True):
            if pk is not None:
                delivery.pk = pk
                delivery._state.adding = False
    return [d if d.pk is not None else None for d in deliveries]


def _claim_takeover(existing: Delivery) -> tuple[Delivery, str]:
    """A redelivered push_req whose row exists. Done (sent, failed...): a duplicate. Still queued:
    its sender is either alive (it refreshes the lease before every attempt, so wait: it will
    finish) or dead (SIGKILL, crash): once the lease has run out, take the row over atomically and
    close it as `failed`/`sender_died`, without sending. The dead sender claimed the push just
    before sending it, so it was most likely delivered already; resending would ring the phone
    twice."""
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


def retry_pause(attempts: int) -> float:
    """Pause before the next attempt after a 429/5xx/timeout: jittered exponential backoff."""
    return min(0.1 * 2 ** attempts, 2.0) * random.uniform(0.5, 1.5)


def expired_text(job: PushJob, attempts: int, result: SendResult | None, *, retrying: bool = False) -> str:
    if retrying:
        assert result is not None
        return (f"retrying would pass the {job.window:g}s window after {attempts} attempts "
                f"(last answer: {result.reason})")
    last = f" (last answer: {result.reason})" if result else ""
    return f"not delivered within its {job.window:g}s window after {attempts} attempts{last}"


@dataclass(frozen=True)
class Finish:
    """How a delivery ends: what `delivery_finish_apply` writes on it."""

    status: str
    reason: str = ""
    error: str = ""
    attempts: int = 0
    result: SendResult | None = None


def finish_of_result(result: SendResult, attempts: int) -> Finish:
    if result.outcome == "sent":
        return Finish(DeliveryStatus.SENT, "", "", attempts, result)
    if result.outcome == "token_invalid":
        return Finish(DeliveryStatus.TOKEN_INVALID, result.reason, result.description, attempts, result)
    return Finish(DeliveryStatus.FAILED, result.reason, result.description, attempts, result)


def push_request_handle(
    *, fields: Mapping[str, Any], source: str, received_at: float | None = None, push_type: str | None = None
) -> Delivery:
    """Handle one push_req (AMQP, API, admin or command): send it within its deadline, record the
    outcome, deactivate dead tokens. Raises BadMessage for a push_req that cannot be handled.

    `push_type` overrides the app's push type for this one push: "alert" sends a visible
    notification (APNs apns-push-type alert on the bundle topic, FCM with a `notification`), e.g.
    a missed call to the device's remote token; None (the default) sends as the app is configured.

    The consumer sends many push_req concurrently through `push.engine`, which claims and records
    them in batches with the same pieces; a redelivered one comes back here."""
    job = push_job_prepare(fields=fields, source=source, received_at=received_at, push_type=push_type)
    fields_check(fields)  # the API, admin and commands; a bus message was checked when decoded
    delivery, claim = _claim(job)
    if claim == "orphaned":
        # Taken over from a sender that died mid-send (see _claim_takeover): record, don't resend.
        return _finish(delivery, Finish(
            DeliveryStatus.FAILED, "sender_died",
            "the consumer sending this push died before recording the answer; not resent, "
            "since it was most likely delivered already",
        ), started=delivery.created_at.timestamp())
    if claim == "duplicate":
        delivery.status = DeliveryStatus.DUPLICATE
        delivery.reason = f"Msg-ID already handled by delivery #{delivery.pk}"
        return delivery

    app, reason, problem = push_app_for(job, delivery)
    if problem:
        return _finish(delivery, Finish(DeliveryStatus.FAILED, reason, problem), started=job.started)
    assert app is not None

    attempts = 0
    result: SendResult | None = None
    while True:
        if time.time() + ATTEMPT_MIN_S >= job.deadline:
            finish = Finish(DeliveryStatus.EXPIRED, "deadline", expired_text(job, attempts, result), attempts, result)
            return _finish(delivery, finish, started=job.started)
        attempts += 1
        if attempts > 1:
            delivery_touch(delivery=delivery, attempts=attempts - 1)
        result = _provider_send(app=app, fields=fields, token=job.token, deadline=job.deadline, push_type=push_type)
        if result.outcome != "retry":
            break
        pause = retry_pause(attempts)
        if time.time() + pause >= job.deadline:
            finish = Finish(DeliveryStatus.EXPIRED, "deadline", expired_text(job, attempts, result, retrying=True),
                            attempts, result)
            return _finish(delivery, finish, started=job.started)
        time.sleep(pause)

    delivery = _finish(delivery, finish_of_result(result, attempts), started=job.started)
    push_followup(delivery=delivery, app=app, result=result)
    return delivery


def push_followup(*, delivery: Delivery, app: PushApp, result: SendResult) -> None:
    """What a provider's answer means beyond this push: a dead token, a misconfigured app."""
    if result.outcome == "token_invalid":
        token_dead(token=delivery.token, reason=f"{delivery.provider} answered {result.status} {result.reason}",
                   provider_timestamp_ms=result.timestamp_ms)
    elif result.outcome == "bad_device_token":
        _app_bad_device_token(app)


FINISH_FIELDS = (
    "status", "reason", "error", "attempts", "finished_at", "http_status", "provider_message_id", "latency_ms",
    "push_app", "push_type",
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
    assignments = ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in fields)
    sql = (f"UPDATE {connection.ops.quote_name(meta.db_table)} SET {assignments} "  # noqa: S608 - model identifiers
           f"WHERE {connection.ops.quote_name(meta.pk.column)} = %s")
    with transaction.atomic():
        _rows_write(sql, [[*_row(d, fields), d.pk] for d in deliveries])


def _row(delivery: Delivery, fields: list[Any]) -> list[Any]:
    if connection.vendor == "postgresql":
        return [getattr(delivery, f.attname) for f in fields]  # str, int, float, datetime, None: psycopg's own
    db = connections[DEFAULT_DB_ALIAS]
    return [f.get_db_prep_save(getattr(delivery, f.attname), db) for f in fields]


def _rows_write(sql: str, rows: list[list[Any]], *, returning: bool = False) -> list[Any]:
    """Run one statement over many rows; with `returning`, each row's first result row (or None).

    On PostgreSQL in one round trip: psycopg pipelines `executemany`, on a cursor binding values
    server-side (the statement text is parsed once and each row's values are dumped in C, where
    Django's client-side-binding cursor would render every row into SQL text in Python)."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor == "postgresql":
        db.ensure_connection()
        with psycopg.Cursor(db.connection) as cursor:
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


def delivery_finished(delivery: Delivery) -> None:
    """Metrics and the live event of a recorded delivery."""
    labels = {"provider": delivery.provider or "unknown", "app": delivery.app_id[:100] or "unknown"}
    metrics.PUSHES.labels(**labels, status=delivery.status, reason=delivery.reason or "ok").inc()
    if delivery.latency_ms is not None:
        metrics.PROVIDER_LATENCY.labels(provider=labels["provider"]).observe(delivery.latency_ms / 1000)
    event_type = {
        DeliveryStatus.SENT: "push.sent", DeliveryStatus.EXPIRED: "push.expired",
    }.get(delivery.status, "push.failed")
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
    _db_retry(lambda: delivery.save(update_fields=list(FINISH_FIELDS)), what=f"recording delivery #{delivery.pk}")
    delivery_finished(delivery)
    return delivery


def _db_retry(write: Any, *, what: str, limit_s: float = 120.0) -> Any:
    """Run a database write whose outcome already happened elsewhere (a push was sent): if the
    database is down, wait for it rather than let the message be redelivered and resent."""
    from django.db import InterfaceError, OperationalError, close_old_connections

    give_up = time.monotonic() + limit_s
    pause = 0.25
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() > give_up:
                raise
            log.warning("database unavailable while %s (%s); retrying in %.1fs", what, str(exc).strip()[:200], pause)
            close_old_connections()
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _app_bad_device_token(app: PushApp) -> None:
    """BadDeviceToken usually means a sandbox token sent to production (or the reverse): the
    token is fine, the app's host is wrong. Flag the app when it repeats; never kill the token."""
    PushApp.objects.filter(pk=app.pk).update(bad_device_token_count=F("bad_device_token_count") + 1)
    app.refresh_from_db(fields=["bad_device_token_count"])
    if app.bad_device_token_count >= settings.PUSHER_BAD_DEVICE_TOKEN_FLAG_AFTER and not app.flagged_reason:
        reason = (f"{app.bad_device_token_count} BadDeviceToken answers: sandbox/production mix-up? "
                  f"check the host ({app.host}) against the app's build")
        PushApp.objects.filter(pk=app.pk).update(flagged_reason=reason)
        log.warning("push app %s flagged: %s", app, reason)


def token_dead(*, token: str, reason: str, provider_timestamp_ms: int | None = None) -> int:
    """Deactivate a token the provider says is dead, and clear the push objects built on it so
    Kazoo stops building push endpoints. APNs' 410 timestamp is honoured: a token registered
    again after Apple declared it dead is kept. Returns how many tokens were deactivated."""
    from registry.models import Device, PushToken
    from registry.services import device_push_clear

    now = timezone.now()
    tokens = PushToken.objects.filter(token=token, active=True).select_related("device")
    if provider_timestamp_ms is not None:
        dead_since = datetime.fromtimestamp(provider_timestamp_ms / 1000, tz=UTC)
        tokens = tokens.filter(last_seen_at__lt=dead_since)
    count = 0
    for push_token in tokens:
        with transaction.atomic():
            PushToken.objects.filter(pk=push_token.pk).update(
                active=False, deactivated_at=now, deactivated_reason=reason[:300]
            )
            device: Device = push_token.device
            if device.push and device.push.get("Token-ID") == token:
                device_push_clear(device=device, reason=reason)
            event_publish("token.deactivated", account=device.account_id, device=device.device_id,
                          app=push_token.app, token=push_token.token_masked, outcome=reason[:200])
        count += 1
    if count:
        log.info("deactivated %d token(s) %s: %s", count, mask_token(token), reason)
    return count


# --- Apps, shared credentials and test pushes (commands, admin, Kazoo config import) --------

APNS_PRODUCTION_HOST = apns.PRODUCTION_HOST
APNS_SANDBOX_HOST = apns.SANDBOX_HOST
PUSH_APP_SETTINGS = frozenset({
    "enabled", "description", "host", "port", "topic", "push_type", "priority", "expiration", "collapse_id",
    "extra_headers", "project_id", "android_priority", "ttl_s",
})
CREDENTIAL_KINDS_OF_PROVIDER = {
    Provider.APPLE: frozenset({CredentialKind.APNS_CERTIFICATE, CredentialKind.APNS_TOKEN}),
    Provider.FIREBASE: frozenset({CredentialKind.FCM_SERVICE_ACCOUNT, CredentialKind.FCM_LEGACY_KEY}),
}
# What Kazoo 4.3's `sup pusher_maintenance push` puts in its synthetic push_req.
TEST_PUSH_CALLER_NUMBER = "15555555555"
TEST_PUSH_CALLER_NAME = "this is a push test"


def _credential_check(credential: Credential | None, provider: str) -> None:
    """Raises CredentialError for a credential an app of `provider` cannot send with."""
    if credential is not None and credential.kind not in CREDENTIAL_KINDS_OF_PROVIDER[Provider(provider)]:
        raise CredentialError(
            f"credential {credential.name!r} is a {credential.get_kind_display()}, which cannot send for a "
            f"{Provider(provider).label} app"
        )


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
    return " ".join(exc.messages)


@dataclass(frozen=True)
class PushAppAdded:
    """What `push_app_add` did: the app, its credential (new or shared) and what to tell the operator."""

    app: PushApp
    credential: Credential
    credential_created: bool
    warnings: tuple[str, ...]


def credential_name_for(*, app_id: str, parsed: ParsedCredential) -> str:
    """The name a credential added for `app_id` is stored under. Keys that serve many apps (an APNs
    .p8 key serves the whole team, a service account its project) are named after themselves."""
    facts = parsed.facts
    kind = str(facts.kind)
    if kind == CredentialKind.APNS_TOKEN:
        name = f"APNs key {facts.key_id} (team {facts.team_id})"
    elif kind == CredentialKind.FCM_SERVICE_ACCOUNT:
        name = f"FCM {facts.client_email}"
    elif kind == CredentialKind.FCM_LEGACY_KEY:
        name = f"{app_id} (FCM legacy key)"
    else:
        name = f"{app_id} (APNs certificate)"
    return name[:200]


@transaction.atomic
def credential_get_or_save(*, name: str, parsed: ParsedCredential) -> tuple[Credential, bool]:
    """The stored credential holding this same secret (same kind, fingerprint, key id and team id),
    else the secret saved under `name`; returns (credential, created).

    One .p8 key serves every app of a team and one service account every app of a project: reusing
    the row keeps one copy of the secret and one place to rotate it. A credential already named
    `name` of the same kind is updated in place (a renewed certificate: every app on it follows);
    a name taken by another kind gets a numbered suffix."""
    facts = parsed.facts
    kind = str(facts.kind)
    if facts.fingerprint_sha256:
        same = (
            Credential.objects.filter(
                kind=kind, fingerprint_sha256=facts.fingerprint_sha256, key_id=facts.key_id, team_id=facts.team_id
            )
            .order_by("pk")
            .first()
        )
        if same is not None:
            return same, False
    existing = Credential.objects.select_for_update().filter(name=name).first()
    if existing is not None and existing.kind == kind:
        return credential_save(name=name, parsed=parsed, credential=existing), False
    if existing is not None:
        suffix = 2
        while Credential.objects.filter(name=f"{name[:190]} #{suffix}").exists():
            suffix += 1
        name = f"{name[:190]} #{suffix}"
    return credential_save(name=name, parsed=parsed), True


@transaction.atomic
def push_app_upsert(
    *, app_id: str, provider: str, credential: Credential | None = None, **app_settings: Any
) -> PushApp:
    """Create the app (Token-App, provider) or update it in place. Only the settings given change
    (names: PUSH_APP_SETTINGS); `credential=None` keeps the current one. An unchanged app is not
    written. Raises PusherError for an unknown provider or setting or an invalid value, and
    CredentialError for a credential of the other provider."""
    app_id = (app_id or "").strip()
    if not app_id:
        raise PusherError("an app id (the Token-App value) is required")
    if provider not in Provider.values:
        raise PusherError(f"unknown provider {provider!r} (expected one of {', '.join(Provider.values)})")
    unknown = sorted(set(app_settings) - PUSH_APP_SETTINGS)
    if unknown:
        raise PusherError(f"unknown push app setting(s): {', '.join(unknown)}")
    _credential_check(credential, provider)

    app = PushApp.objects.select_for_update().filter(app_id=app_id, provider=provider).first()
    changed = app is None
    if app is None:
        app = PushApp(app_id=app_id, provider=provider)
    for name, value in app_settings.items():
        if getattr(app, name) != value:
            setattr(app, name, value)
            changed = True
    if credential is not None and app.credential_id != credential.pk:
        app.credential = credential
        changed = True
    if not changed:
        return app
    try:
        app.full_clean()
    except ValidationError as exc:
        raise PusherError(f"push app {app_id} ({provider}): {_validation_message(exc)}") from None
    app.save()
    log.info("push app %s saved (credential %s)", app, app.credential.name if app.credential else "none")
    _push_apps_changed()
    return app


def push_app_add(
    *,
    app_id: str,
    provider: str,
    kind: str,
    data: bytes | str,
    password: str | None = None,
    key_id: str = "",
    team_id: str = "",
    **app_settings: Any,
) -> PushAppAdded:
    """Kazoo's add_apple_app / add_firebase_app, and more: parse and validate the secret, store it
    (or reuse the stored copy of the same key), create or update the app on it. Raises
    CredentialError for a secret that does not parse, before anything is written."""
    parsed = credential_parse(kind=kind, data=data, password=password, key_id=key_id, team_id=team_id)
    with transaction.atomic():
        credential, created = credential_get_or_save(name=credential_name_for(app_id=app_id, parsed=parsed),
                                                     parsed=parsed)
        app = push_app_upsert(app_id=app_id, provider=provider, credential=credential, **app_settings)
    warnings = list(credential.warnings)
    if not credential.usable and credential.unusable_reason not in warnings:
        warnings.insert(0, f"this credential cannot send: {credential.unusable_reason}")
    if credential.kind == CredentialKind.APNS_CERTIFICATE and credential.topics:
        wire_topic = apns_topic(app.effective_topic, app.push_type or "voip")
        if wire_topic not in credential.topics:
            warnings.append(
                f"the certificate covers {', '.join(credential.topics)} but the app pushes to topic {wire_topic!r} "
                "(APNs will answer TopicDisallowed); set the app's topic or use the app's own certificate"
            )
    return PushAppAdded(app=app, credential=credential, credential_created=created, warnings=tuple(warnings))


def _test_push_fields(
    *, token: str, token_type: str, app_id: str, proxy: str, account_id: str = "", device_id: str = ""
) -> dict[str, Any]:
    """A push_req shaped like the one Kamailio's pusher role publishes (and Kazoo 4.3's
    `pusher_maintenance:push/2` injects), so the phone sees exactly what a real call sends."""
    call_id = str(uuid.uuid4())
    fields: dict[str, Any] = {
        "Event-Category": "notification",
        "Event-Name": "push_req",
        "App-Name": "Kamailio",
        "App-Version": "pusher-test",
        "Msg-ID": uuid.uuid4().hex,
        "Call-ID": call_id,
        "Token-ID": token,
        "Token-Type": token_type,
        "Token-App": app_id,
        "Alert-Key": "IC_SIL",
        "Alert-Params": [TEST_PUSH_CALLER_NUMBER],
        "Sound": "ring.caf",
        "Payload": {
            "call-id": call_id,
            "proxy": proxy,
            "caller-id-number": TEST_PUSH_CALLER_NUMBER,
            "caller-id-name": TEST_PUSH_CALLER_NAME,
            "registration-token": str(uuid.uuid4()),
        },
    }
    if account_id:
        fields["Account-ID"] = account_id
    if device_id:
        fields["Endpoint-ID"] = device_id
    return fields


def push_test_send(*, device: RegistryDevice, source: str = DeliverySource.COMMAND) -> Delivery:
    """Kazoo 4.3's `sup pusher_maintenance push AccountId DeviceId`: a synthetic call push to the
    device's push object, through the real push path (delivery log, token handling included).
    Raises PusherError when the device has no push object."""
    push = device.push or {}
    if not push.get("Token-ID"):
        raise PusherError(
            f"device {device.account_id}/{device.device_id} has no push object: it has not registered "
            "with push parameters that a User-Agent rule maps"
        )
    fields = _test_push_fields(
        token=str(push.get("Token-ID", "")),
        token_type=str(push.get("Token-Type", "")),
        app_id=str(push.get("Token-App", "")),
        proxy=str(push.get("Token-Proxy", "")),
        account_id=device.account_id,
        device_id=device.device_id,
    )
    return push_request_handle(fields=fields, source=source)


def push_app_test_send(*, app: PushApp, token: str, source: str = DeliverySource.ADMIN) -> Delivery:
    """A synthetic call push from `app` to a device token given by hand (an app alone has no
    token). Raises PusherError for an empty token."""
    token = (token or "").strip()
    if not token:
        raise PusherError("a device token is required to send a test push")
    fields = _test_push_fields(token=token, token_type=app.provider, app_id=app.app_id, proxy="")
    return push_request_handle(fields=fields, source=source)


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


# --- Legacy push_resp (2015-era Kamailio configs) ------------------------------------

PUSH_RESP_WINDOW_S = 60


@transaction.atomic
def push_resp_send(*, tokens: list[str]) -> int:
    """Answer 2015-era Kamailio (blocking kazoo_query): when the pushed device registers, send a
    targeted push_resp to the push_req's Server-ID echoing its Msg-ID. Unlike Kazoo's node-local
    20 s cache, the pending push_req lives in the delivery log, so any pusher node can answer.
    Returns how many answers were published (after commit)."""
    from pusher_site.bus import bus_publish

    now = timezone.now()
    pending = list(
        Delivery.objects.filter(
            token__in=tokens, replied_at__isnull=True, created_at__gte=now - timedelta(seconds=PUSH_RESP_WINDOW_S)
        ).exclude(reply_to="").exclude(msg_id__isnull=True)
    )
    sent = 0
    for delivery in pending:
        # Claim the answer so two nodes (or a redelivered reg_success) answer once.
        if not Delivery.objects.filter(pk=delivery.pk, replied_at__isnull=True).update(replied_at=now):
            continue
        bus_publish(
            exchange="targeted",
            routing_key=delivery.reply_to,
            body={
                "Event-Category": "notification",
                "Event-Name": "push_resp",
                "Token-ID": delivery.token,
                "Msg-ID": delivery.msg_id,
                "App-Name": "pusher",
                "App-Version": "4.0.0",
                "Node": f"pusher@{socket.gethostname()}",
            },
        )
        sent += 1
    if sent:
        log.info("push_resp sent for %d pending push_req(s) of token(s) %s", sent, ", ".join(map(mask_token, tokens)))
    return sent


@dataclass(frozen=True)
class Reencrypted:
    count: int
    undecryptable: tuple[str, ...]  # names of credentials no key decrypts, left as they were


@transaction.atomic
def credentials_reencrypt() -> Reencrypted:
    """Rewrite every secret with the first FIELD_ENCRYPTION_KEY (MultiFernet.rotate): the step that
    lets an old key be removed from the list. A secret no key decrypts is left as it is and named."""
    count, undecryptable = 0, []
    rows = Credential.objects.select_for_update().values_list("pk", "name", "secret").order_by("name")
    for pk, name, stored in rows.iterator():
        # values_list decrypts through the field; re-saving encrypts with the first key.
        if is_undecryptable(stored):
            undecryptable.append(name)
            continue
        Credential.objects.filter(pk=pk).update(secret=stored)
        count += 1
    return Reencrypted(count=count, undecryptable=tuple(undecryptable))


# --- REST API operations (push/api.py calls these; so can the admin and commands) -----------------

PUSH_APP_EDITABLE = PUSH_APP_SETTINGS | {"app_id", "provider", "credential", "flagged_reason"}


@transaction.atomic
def push_app_update(*, app: PushApp, **changes: Any) -> PushApp:
    """Change an app in place: its settings, its identity (app_id, provider), its credential (None =
    none) or its health flag. Clearing `flagged_reason` also restarts the BadDeviceToken count, so
    the flag can trip again. Raises PusherError for an unknown field or an invalid value (an app
    id/provider pair already taken included), CredentialError for a credential of the other provider."""
    unknown = sorted(set(changes) - PUSH_APP_EDITABLE)
    if unknown:
        raise PusherError(f"unknown push app field(s): {', '.join(unknown)}")
    app = PushApp.objects.select_for_update(of=("self",)).select_related("credential").get(pk=app.pk)
    for name, value in changes.items():
        setattr(app, name, value)
    if "flagged_reason" in changes and not app.flagged_reason:
        app.bad_device_token_count = 0
    try:
        app.full_clean()
    except ValidationError as exc:
        raise PusherError(f"push app {app.app_id} ({app.provider}): {_validation_message(exc)}") from None
    _credential_check(app.credential, app.provider)
    app.save()
    log.info("push app %s updated (%s)", app, ", ".join(sorted(changes)))
    _push_apps_changed()
    return app


@transaction.atomic
def push_app_delete(*, app: PushApp) -> None:
    """Delete an app; its deliveries stay in the log (without the link)."""
    label = str(app)
    app.delete()
    log.info("push app %s deleted", label)
    _push_apps_changed()


@transaction.atomic
def credential_create(
    *, name: str, kind: str, data: bytes | str, password: str | None = None, key_id: str = "", team_id: str = ""
) -> Credential:
    """Parse, validate and store a new credential under `name`. Raises CredentialError for a secret
    that does not parse and PusherError for a name already taken, before anything is written."""
    name = (name or "").strip()
    if not name:
        raise PusherError("a credential name is required")
    if Credential.objects.filter(name=name).exists():
        raise PusherError(f"a credential named {name!r} already exists", code="credential_name_taken")
    parsed = credential_parse(kind=kind, data=data, password=password, key_id=key_id, team_id=team_id)
    return credential_save(name=name, parsed=parsed)


@transaction.atomic
def credential_update(
    *,
    credential: Credential,
    name: str | None = None,
    kind: str | None = None,
    data: bytes | str | None = None,
    password: str | None = None,
    key_id: str | None = None,
    team_id: str | None = None,
) -> Credential:
    """Rename a credential, replace its secret (a renewed certificate: every app on it follows), or
    correct an APNs token key's key id / team id (the stored key is parsed again with them, so a
    wrong pair is refused here rather than by Apple). Arguments left None keep their value.
    Raises CredentialError for a secret that does not parse or a kind the credential's apps cannot
    use, PusherError for a name already taken."""
    credential = Credential.objects.select_for_update().get(pk=credential.pk)
    new_name = (name if name is not None else credential.name).strip()
    if not new_name:
        raise PusherError("a credential name is required")
    if new_name != credential.name and Credential.objects.filter(name=new_name).exclude(pk=credential.pk).exists():
        raise PusherError(f"a credential named {new_name!r} already exists", code="credential_name_taken")
    new_kind = kind or credential.kind
    new_key_id = key_id if key_id is not None else credential.key_id
    new_team_id = team_id if team_id is not None else credential.team_id
    for app in credential.apps.all():
        if new_kind not in CREDENTIAL_KINDS_OF_PROVIDER[Provider(app.provider)]:
            raise CredentialError(f"push app {app} uses this credential and cannot send with a {new_kind}")
    ids_changed = (new_key_id, new_team_id) != (credential.key_id, credential.team_id)
    if data is not None:
        parsed = credential_parse(kind=new_kind, data=data, password=password, key_id=new_key_id, team_id=new_team_id)
    elif new_kind != credential.kind:
        raise CredentialError("changing the kind of a credential needs its new secret")
    elif ids_changed and credential.kind == CredentialKind.APNS_TOKEN:
        parsed = credential_parse(kind=new_kind, data=_secret(credential), key_id=new_key_id, team_id=new_team_id)
    elif ids_changed:
        raise CredentialError("key id and team id belong to APNs token keys (.p8) only")
    else:
        if new_name != credential.name:
            credential.name = new_name
            credential.save(update_fields=["name", "updated_at"])
            log.info("credential renamed to %r", new_name)
        return credential
    saved = credential_save(name=new_name, parsed=parsed, credential=credential)
    _push_apps_changed()
    return saved


@transaction.atomic
def credential_delete(*, credential: Credential) -> None:
    """Delete a credential no app uses. Raises PusherError (code credential_in_use) otherwise."""
    apps = [str(app) for app in credential.apps.all()[:10]]
    if apps:
        raise PusherError(
            f"credential {credential.name!r} is used by {', '.join(apps)}; give those apps another credential first",
            code="credential_in_use",
        )
    label = credential.name
    credential.delete()
    log.info("credential %r deleted", label)


# --- Kamailio's push-notifications-role (HTTP POST /api/v1/send) ---------------------------------

NOTIFY_INCOMING_CALL = "incoming_call"
NOTIFY_MISSED_CALL = "missed_call"
NOTIFY_KINDS = (NOTIFY_INCOMING_CALL, NOTIFY_MISSED_CALL)


def _fcm_notification(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The visible part of an FCM "alert" push: its text."""
    body = fields.get("Alert-Body")
    return {"body": body} if isinstance(body, str) and body else None


def _notify_token(*, tokens: list[Any], provider: str, kind: str) -> Any | None:
    """The one token of a device a notification goes to, on one provider (tokens newest first).

    iOS: an incoming call is a VoIP (PushKit) push, to the VoIP token (or a plain Kazoo-style one,
    which is a PushKit token by Kazoo's convention); a missed call is a visible alert, to the
    REMOTE token only: a VoIP push that does not report a call gets the app killed by iOS, and
    after repeated offences PushKit pushes are no longer delivered. Android has one token."""
    if provider == Provider.FIREBASE:
        return tokens[0] if tokens else None
    wanted = ("voip", "") if kind == NOTIFY_INCOMING_CALL else ("remote",)
    for token_kind in wanted:
        for token in tokens:
            if token.kind == token_kind:
                return token
    return None


@dataclass(frozen=True)
class Notification:
    """What Kamailio's push-notifications-role asks for (POST /api/v1/send), whoever it goes to."""

    kind: str  # NOTIFY_KINDS
    payload: Mapping[str, Any]
    expiry: int | None = None
    sound: str = ""
    text: str = ""
    mutable: bool = False


def push_notify(
    *, device: RegistryDevice, notification: Notification, source: str = DeliverySource.HTTP_SEND
) -> list[Delivery]:
    """Send a push-notifications-role notification to a device: one push per provider, to the
    token that suits it (see _notify_token), through the real push path (deadline, retries, delivery
    log, dead tokens). `incoming_call` is the app's VoIP / high-priority push; `missed_call` a
    visible notification (APNs apns-push-type alert, FCM with a notification).

    The push carries the request's `payload` keys verbatim plus Kazoo's own names (call-id, proxy,
    caller-id-number, caller-id-name) so an app written for Kazoo's pusher understands it too.
    Raises PusherError (code no_token) when the device has no token the notification may go to."""
    kind = notification.kind
    if kind not in NOTIFY_KINDS:
        raise PusherError(f"unknown notification type {kind!r} (expected {' or '.join(NOTIFY_KINDS)})")
    active = sorted(
        (t for t in device.tokens.all() if t.active), key=lambda t: (t.last_seen_at, t.pk), reverse=True
    )
    chosen = []
    for provider in (Provider.APPLE, Provider.FIREBASE):
        tokens = [t for t in active if PROVIDER_OF_TOKEN_TYPE.get(t.token_type.lower()) == provider]
        token = _notify_token(tokens=tokens, provider=provider, kind=kind)
        if token is not None:
            chosen.append((provider, token))
    if not chosen:
        what = "a remote (visible-notification) token" if kind == NOTIFY_MISSED_CALL else "an active push token"
        raise PusherError(f"device {device} has no {what}", code="no_token")

    values = {str(k): v for k, v in notification.payload.items()}
    call_id = str(values.get("push_id") or uuid.uuid4())
    number = str(values.get("remote_number") or "")
    name = str(values.get("remote_name") or "")
    deliveries = []
    for provider, token in chosen:
        fields: dict[str, Any] = {
            "Call-ID": call_id,
            "Token-ID": token.token,
            "Token-Type": token.token_type,
            "Token-App": token.app,
            "Account-ID": device.account_id,
            "Endpoint-ID": device.device_id,
        }
        body = {**values, "type": kind, "call-id": call_id, "caller-id-number": number, "caller-id-name": name}
        if kind == NOTIFY_INCOMING_CALL:
            body["proxy"] = str(values.get("token_proxy") or token.proxy or (device.push or {}).get("Token-Proxy", ""))
            fields.update({
                "Alert-Key": "IC_SIL", "Alert-Params": [f"{number} - {name}"],
                "Sound": notification.sound or "ring.caf",
            })
        else:
            fields.update({
                "Alert-Body": notification.text or f"Missed call from {name or number}".strip(),
                "Sound": notification.sound or "default",
            })
            if notification.mutable and provider == Provider.APPLE:
                body["aps"] = {"mutable-content": 1}  # merged into the aps the push path builds
        fields["Payload"] = body
        if notification.expiry is not None and notification.expiry > 0:
            fields["Expires"] = notification.expiry
        deliveries.append(push_request_handle(
            fields=fields, source=source, push_type="alert" if kind == NOTIFY_MISSED_CALL else None,
        ))
    return deliveries


def push_notify_aor(
    *, aor: str, notification: Notification, source: str = DeliverySource.HTTP_SEND
) -> list[Delivery]:
    """push_notify for every device registered as `aor` (`sip:user@realm`, Kamailio's X-KAZOO-AOR).
    Raises PusherError: code aor_invalid, unknown_aor (no such device) or no_token (none of them has
    a token this notification may go to)."""
    from registry.services import device_list_for_aor

    devices = device_list_for_aor(aor=aor)
    if not devices:
        raise PusherError(f"no device is registered as {aor!r}", code="unknown_aor")
    deliveries: list[Delivery] = []
    problems: list[str] = []
    for device in devices:
        try:
            deliveries.extend(push_notify(device=device, notification=notification, source=source))
        except PusherError as exc:
            if exc.code != "no_token":
                raise
            problems.append(exc.message)
    if not deliveries:
        raise PusherError("; ".join(problems), code="no_token")
    return deliveries
