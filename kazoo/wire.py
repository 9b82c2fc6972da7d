"""Decoding and dispatch of Kazoo bus messages: the consumer calls `message_process_batch` (its
registration lanes) and `message_process` (pushes; one message at a time); tests call both."""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.conf import settings

from core import metrics
from core.errors import InvalidInput
from core.text import json_kind, json_text_maybe_unstorable, text_storable_check
from kazoo.push_resp import push_resp_send

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
    # The publisher's other properties, kept on a dead letter (Kamailio sets none of them).
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    timestamp: int | None = None
    app_id: str | None = None
    # The decoded body, once `message_decode` has read it: a message the push lane hands back to
    # the synchronous path is not decoded a second time.
    decoded: dict[str, Any] | None = field(default=None, compare=False, repr=False)


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
        raise InvalidInput(f"content-encoding gzip but the body is not gzip: {exc}") from exc
    if len(out) > limit or decompressor.unconsumed_tail:
        raise InvalidInput(f"gzip body inflates beyond the {limit}-byte limit")
    return out


def message_decode(message: RawMessage) -> dict[str, Any]:
    """The message's JSON object, checked (content type, size, gzip bound, storable text); decoded
    once per message. Raises InvalidInput."""
    if message.decoded is not None:
        return message.decoded
    fields = _decode(message)
    object.__setattr__(message, "decoded", fields)  # frozen for the callers; a cache, not state
    return fields


def _decode(message: RawMessage) -> dict[str, Any]:
    limit = settings.PUSHER_MAX_MESSAGE_BYTES
    content_type = (message.content_type or "").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise InvalidInput(f"content type {message.content_type!r} is not application/json")
    if len(message.body) > limit:
        raise InvalidInput(f"body of {len(message.body)} bytes exceeds the {limit}-byte limit")
    body = message.body
    encoding = (message.content_encoding or "").lower()
    if encoding == "gzip" or (not encoding and body[:2] == b"\x1f\x8b"):
        body = _gunzip(body, limit)
    elif encoding not in ("", "identity", "utf-8", "utf8"):
        raise InvalidInput(f"content encoding {message.content_encoding!r} is not supported")
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"body is not valid JSON: {str(exc)[:120]}") from exc
    if not isinstance(fields, dict):
        raise InvalidInput(f"body is JSON {type(fields).__name__}, not an object")
    msg_id = fields.get("Msg-ID")
    if msg_id is not None and not isinstance(msg_id, str):
        # Kazoo's API types Msg-ID as a binary and Kamailio always sends one: anything else is a
        # broken publisher, refused (dead-lettered) for every event rather than logged as a repr.
        raise InvalidInput(f"Msg-ID must be a string, not {json_kind(msg_id)}")
    if json_text_maybe_unstorable(body):
        text_storable_check(fields)
    return fields


def event_of(fields: dict[str, Any]) -> tuple[str, str]:
    category, name = fields.get("Event-Category"), fields.get("Event-Name")
    return (category if isinstance(category, str) else "", name if isinstance(name, str) else "")


def message_process(message: RawMessage) -> Handled:
    """Decode and handle one message. InvalidInput (and subclasses) propagate to the caller, which
    dead-letters; database outages propagate too so the caller can wait and retry."""
    from registry.services import registration_apply

    fields = message_decode(message)
    if event_of(fields) == ("directory", "reg_success"):
        result = registration_apply(fields=fields)
        _push_resp_answer([result])
        msg_id = _msg_id(fields)
        log.info(_REG_LINE, *_registration_line(msg_id, result))
        metrics.MESSAGES.labels(event="reg_success", outcome=result.outcome).inc()
        return Handled(Action.ACK, "reg_success", result.outcome, result.reason, msg_id)
    return _other_handle(message, fields)


def message_process_batch(messages: Sequence[RawMessage]) -> list[Handled]:
    """Handle messages taken together from one consumer lane, with the effect of handling them
    one by one in order: every reg_success goes to one `registration_apply_batch` (one digest
    query for all, bulk writes for the changed ones). Returns one Handled per message; a message
    that cannot be handled is dead-lettered (DEAD_LETTER with its reason) without failing the
    others. Database errors propagate, as from message_process; so does an unexpected error, and
    the caller then handles the messages one at a time."""
    from registry.services import registration_apply_batch

    handled: list[Handled | None] = [None] * len(messages)
    registrations: list[tuple[int, dict[str, Any]]] = []
    for index, message in enumerate(messages):
        try:
            fields = message_decode(message)
            if event_of(fields) == ("directory", "reg_success"):
                registrations.append((index, fields))
            else:
                handled[index] = _other_handle(message, fields)
        except InvalidInput as exc:
            handled[index] = handled_bad(message, exc)
    if registrations:
        results = registration_apply_batch(fields=[fields for _, fields in registrations])
        _push_resp_answer(results)
        lines: list[tuple[Any, ...]] = []
        outcomes: Counter[str] = Counter()
        for (index, fields), result in zip(registrations, results, strict=True):
            msg_id = _msg_id(fields)
            if isinstance(result, InvalidInput):
                handled[index] = Handled(Action.DEAD_LETTER, "reg_success", "dead_letter", result.message, msg_id)
                continue
            lines.append(_registration_line(msg_id, result))
            outcomes[result.outcome] += 1
            handled[index] = Handled(Action.ACK, "reg_success", result.outcome, result.reason, msg_id)
        for line in lines:
            log.info(_REG_LINE, *line)
        for outcome, count in outcomes.items():
            metrics.MESSAGES.labels(event="reg_success", outcome=outcome).inc(count)
    return [h for h in handled if h is not None]


def _push_resp_answer(results: Sequence[Any]) -> None:
    """2015-era Kamailio configs wait for a push_resp once the pushed device registers again."""
    if not settings.PUSHER_LEGACY_PUSH_RESP:
        return
    tokens = [t.token for r in results if not isinstance(r, InvalidInput) for t in r.build.tokens]
    if tokens:
        push_resp_send(tokens=tokens)


def dead_letter(message: RawMessage, reason: str) -> Handled:
    """The one dead-letter verdict: the message goes to pusher's dead-letter queue with `reason`."""
    event, msg_id = message_peek(message.body)
    return Handled(Action.DEAD_LETTER, event, "dead_letter", reason, msg_id)


def handled_bad(message: RawMessage, exc: InvalidInput) -> Handled:
    """The dead-letter verdict for a message refused with `exc`."""
    return dead_letter(message, exc.message)


_REG_LINE = "reg_success msg_id=%s account=%s device=%s rule=%s outcome=%s reason=%s"


def _registration_line(msg_id: str, result: Any) -> tuple[Any, ...]:
    device = result.device
    return (
        msg_id, device.account_id if device else result.build.account_id,
        device.device_id if device else result.build.device_id, result.build.rule, result.outcome, result.reason,
    )


def _msg_id(fields: dict[str, Any]) -> str:
    return str(fields.get("Msg-ID") or "")[:200]


def _other_handle(message: RawMessage, fields: dict[str, Any]) -> Handled:
    """Every event but reg_success: push_req, or ignored."""
    from push.services import push_request_handle

    msg_id = _msg_id(fields)
    category, name = event_of(fields)
    if (category, name) == ("notification", "push_req"):
        delivery = push_request_handle(fields=fields, source="amqp", received_at=message.received_at or None)
        return push_req_logged(msg_id, delivery)
    log.info("ignored msg_id=%s event=%s/%s: not handled by pusher", msg_id, category, name)
    metrics.MESSAGES.labels(event=name or "unknown", outcome="ignored").inc()
    return Handled(Action.ACK, name or "unknown", "ignored", "event not handled by pusher", msg_id)


_PUSH_LINE = (
    "push_req msg_id=%s call_id=%s app=%s provider=%s token=%s status=%s reason=%s attempts=%d latency_ms=%s"
)


def push_req_logged(msg_id: str, delivery: Any) -> Handled:
    """The consumer's one line per push_req (`delivery` a push.models.Delivery), its metric, and
    what to do with the message."""
    return push_reqs_logged([(msg_id, delivery)])[0]


def push_reqs_logged(done: Sequence[tuple[str, Any]]) -> list[Handled]:
    """`push_req_logged` for many (msg_id, delivery) at once: one write for all their lines."""
    lines = []
    outcomes: Counter[str] = Counter()
    handled = []
    for msg_id, delivery in done:
        latency = f"{delivery.latency_ms:.1f}" if delivery.latency_ms else "-"
        lines.append((msg_id, delivery.call_id, delivery.app_id, delivery.provider, delivery.token_masked,
                      delivery.status, delivery.reason, delivery.attempts, latency))
        outcomes[delivery.status] += 1
        handled.append(Handled(Action.ACK, "push_req", delivery.status, delivery.reason, msg_id))
    for line in lines:
        log.info(_PUSH_LINE, *line)
    for outcome, count in outcomes.items():
        metrics.MESSAGES.labels(event="push_req", outcome=outcome).inc(count)
    return handled


def message_peek(body: bytes) -> tuple[str, str]:
    """Best effort (event name, Msg-ID) of a message that failed, for the dead-letter log line."""
    try:
        if body[:2] == b"\x1f\x8b":
            body = _gunzip(body, 64 * 1024)
        fields = json.loads(body)
        if isinstance(fields, dict):
            name, msg_id = fields.get("Event-Name"), fields.get("Msg-ID")
            # Only strings: a dead letter's line names what it is, never the repr of an object.
            return (name[:64] if isinstance(name, str) and name else "unknown",
                    msg_id[:200] if isinstance(msg_id, str) else "")
    except Exception:  # noqa: BLE001, S110 - only for a log line about an already-bad message
        pass
    return "unknown", ""
