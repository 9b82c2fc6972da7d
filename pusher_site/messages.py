"""Decoding and dispatch of Kazoo bus messages; the consumer and tests call `message_process`."""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.conf import settings

from pusher_site import metrics
from pusher_site.errors import BadMessage

log = logging.getLogger("pusher.messages")

ACCEPTED_CONTENT_TYPES = ("application/json", "", None)


class Action(StrEnum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"
    REQUEUE = "requeue"


@dataclass(frozen=True)
class RawMessage:
    body: bytes
    content_type: str | None = "application/json"
    content_encoding: str | None = None
    exchange: str = ""
    routing_key: str = ""
    redelivered: bool = False
    received_at: float = 0.0  # time.time() when the consumer got it (push latency starts here)
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Handled:
    action: Action
    event: str
    outcome: str
    reason: str = ""
    msg_id: str = ""


def _gunzip(body: bytes, limit: int) -> bytes:
    # Bounded: a gzip bomb stops at the size limit instead of exhausting memory.
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadMessage(f"content-encoding gzip but the body is not gzip: {exc}") from exc
    if len(out) > limit or decompressor.unconsumed_tail:
        raise BadMessage(f"gzip body inflates beyond the {limit}-byte limit")
    return out


def message_decode(message: RawMessage) -> dict[str, Any]:
    limit = settings.PUSHER_MAX_MESSAGE_BYTES
    content_type = (message.content_type or "").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise BadMessage(f"content type {message.content_type!r} is not application/json")
    if len(message.body) > limit:
        raise BadMessage(f"body of {len(message.body)} bytes exceeds the {limit}-byte limit")
    body = message.body
    encoding = (message.content_encoding or "").lower()
    if encoding == "gzip" or (not encoding and body[:2] == b"\x1f\x8b"):
        body = _gunzip(body, limit)
    elif encoding not in ("", "identity", "utf-8", "utf8"):
        raise BadMessage(f"content encoding {message.content_encoding!r} is not supported")
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadMessage(f"body is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(fields, dict):
        raise BadMessage(f"body is JSON {type(fields).__name__}, not an object")
    fields_check(fields)
    return fields


def fields_check(fields: dict[str, Any]) -> None:
    """Text no peer accepts: lone surrogates (`\\ud800` in JSON: not UTF-8 for APNs, FCM or
    PostgreSQL) and NUL characters (PostgreSQL text refuses them). Refused as a bad message rather
    than failing half-way through the work."""
    try:
        text = json.dumps(fields, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadMessage("body holds a string that is not valid Unicode (a lone surrogate)") from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise BadMessage(f"body cannot be handled: {str(exc)[:120]}") from exc
    if "\\u0000" in text and _has_nul(fields):  # the cheap test first; the walk tells escapes apart
        raise BadMessage("body holds a NUL character")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def event_of(fields: dict[str, Any]) -> tuple[str, str]:
    category, name = fields.get("Event-Category"), fields.get("Event-Name")
    return (category if isinstance(category, str) else "", name if isinstance(name, str) else "")


def message_process(message: RawMessage) -> Handled:
    """Decode and handle one message. BadMessage (and subclasses) propagate to the caller, which
    dead-letters; database outages propagate too so the caller can wait and retry."""
    from push.services import push_request_handle
    from registry.services import registration_apply

    fields = message_decode(message)
    msg_id = str(fields.get("Msg-ID") or "")[:200]
    category, name = event_of(fields)
    if (category, name) == ("directory", "reg_success"):
        result = registration_apply(fields=fields)
        device = result.device
        log.info(
            "reg_success msg_id=%s account=%s device=%s rule=%s outcome=%s reason=%s",
            msg_id, device.account_id if device else result.build.account_id,
            device.device_id if device else result.build.device_id, result.build.rule, result.outcome, result.reason,
        )
        metrics.MESSAGES.labels(event="reg_success", outcome=result.outcome).inc()
        return Handled(Action.ACK, "reg_success", result.outcome, result.reason, msg_id)
    if (category, name) == ("notification", "push_req"):
        delivery = push_request_handle(fields=fields, source="amqp", received_at=message.received_at or None)
        return push_req_logged(msg_id, delivery)
    log.info("ignored msg_id=%s event=%s/%s: not handled by pusher", msg_id, category, name)
    metrics.MESSAGES.labels(event=name or "unknown", outcome="ignored").inc()
    return Handled(Action.ACK, name or "unknown", "ignored", "event not handled by pusher", msg_id)


def push_req_logged(msg_id: str, delivery: Any) -> Handled:
    """The consumer's one line per push_req (`delivery` a push.models.Delivery), its metric, and
    what to do with the message."""
    log.info(
        "push_req msg_id=%s call_id=%s app=%s provider=%s token=%s status=%s reason=%s attempts=%d latency_ms=%s",
        msg_id, delivery.call_id, delivery.app_id, delivery.provider, delivery.token_masked, delivery.status,
        delivery.reason, delivery.attempts, f"{delivery.latency_ms:.1f}" if delivery.latency_ms else "-",
    )
    metrics.MESSAGES.labels(event="push_req", outcome=delivery.status).inc()
    return Handled(Action.ACK, "push_req", delivery.status, delivery.reason, msg_id)


def message_peek(body: bytes) -> tuple[str, str]:
    """Best effort (event name, Msg-ID) of a message that failed, for the dead-letter log line."""
    try:
        if body[:2] == b"\x1f\x8b":
            body = _gunzip(body, 64 * 1024)
        fields = json.loads(body)
        if isinstance(fields, dict):
            return str(fields.get("Event-Name") or "unknown")[:64], str(fields.get("Msg-ID") or "")[:200]
    except Exception:  # noqa: BLE001, S110 - only for a log line about an already-bad message
        pass
    return "unknown", ""
