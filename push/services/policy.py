"""What a push_req asks for and how long it may take: validation, deadline, app choice, retry policy.

Pure decisions over plain data and the app cache: no database writes, no network."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core.errors import InvalidInput
from core.text import json_kind
from push.models import (
    Delivery,
    DeliveryStatus,
    Provider,
    PushApp,
)
from push.payloads import int_or_none
from push.services.appcache import push_app_get
from registry.pushobject import APNS_TOKEN_TYPES, FCM_TOKEN_TYPES, PUSHABLE_TOKEN_TYPES_TEXT

log = logging.getLogger(__name__)

# The Token-Types a push_req may name are exactly those the registry learns tokens for (and checks
# them by): derived, never listed twice, so that a token stored can always be pushed to. Kazoo's
# names and aliases, RFC 8599's `apns`, `apns.dev` (the sandbox: Apple's development host,
# push.payloads) and `fcm`, and `gcm`, which Kazoo's pusher takes for Firebase.
PROVIDER_OF_TOKEN_TYPE: dict[str, Provider] = {
    **dict.fromkeys(sorted(APNS_TOKEN_TYPES), Provider.APPLE),
    **dict.fromkeys(sorted(FCM_TOKEN_TYPES), Provider.FIREBASE),
}


# A send attempt never takes longer than this; a push claimed longer ago than the lease by a
# sender that has not refreshed it is taken to be orphaned (its process died).
ATTEMPT_TIMEOUT_S = 5.0


CLAIM_LEASE_S = ATTEMPT_TIMEOUT_S + 2.0


# An attempt that could not finish before the deadline is not started: it would arrive late.
ATTEMPT_MIN_S = 0.25


PUSH_WINDOW_MAX_S = 300


@dataclass(frozen=True)
class SendResult:
    """What a provider answered, in the terms the delivery log keeps."""

    outcome: str  # the providers' Outcome values: sent, token_invalid, bad_device_token, retry, failed
    status: int | None
    reason: str
    description: str
    message_id: str
    timestamp_ms: int | None = None
    retry_after_s: float | None = None  # the provider's Retry-After (FCM's 429/503): the least pause it asks for


@dataclass
class PushJob:
    """One validated push_req on its way: what every sender (the synchronous `push_request_handle`
    and the consumer's concurrent `kazoo.pushlane`) needs to claim, send and record it."""

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
    """Validate a push_req and fix its deadline. Raises InvalidInput for one that cannot be handled.
    The text itself must have passed `text_storable_check` (bus messages do in `message_decode`)."""
    started = received_at or time.time()
    token = _required_str(fields, "Token-ID")
    token_type = _required_str(fields, "Token-Type").lower()
    app_id = _required_str(fields, "Token-App")
    expires = int_or_none(fields.get("Expires"))
    # A call push is useless after the ring window; an absurd Expires is capped, not trusted.
    window = (
        min(expires, PUSH_WINDOW_MAX_S) if expires is not None and expires > 0 else settings.PUSHER_PUSH_DEADLINE_S
    )
    # Kamailio always sends Call-ID as a string (it is the SIP Call-ID); any other value would go out
    # as no call-id at all, so it is refused as the HTTP face refuses it. Msg-ID is checked where
    # every bus message is decoded (kazoo.wire), and by the HTTP face.
    call_id = fields.get("Call-ID")
    if call_id is not None and not isinstance(call_id, str):
        raise InvalidInput(f"push_req Call-ID must be a string, not {json_kind(call_id)}")
    return PushJob(
        fields=fields, source=source, token=token, token_type=token_type, app_id=app_id,
        msg_id=_str(fields, "Msg-ID"), push_type=push_type, started=started, window=window, deadline=started + window,
    )


# The fields every push_req needs, with the API's limits (PushRequestSerializer): the bus refuses
# what the API refuses, so that no face sends what another would not.
REQUIRED_TEXT_MAX = {"Token-ID": 1024, "Token-Type": 32, "Token-App": 255}


def _required_str(fields: Mapping[str, Any], name: str) -> str:
    """A required text field, stripped. Only a JSON string is one: a number is refused like the
    API refuses it (a numeric Token-ID is no device's token; sending it only earns an error)."""
    value = fields.get(name)
    if value is None:
        raise InvalidInput(f"push_req without a usable {name}")
    if not isinstance(value, str):
        raise InvalidInput(f"push_req {name} must be a string, not {json_kind(value)}")
    limit = REQUIRED_TEXT_MAX[name]
    if len(value) > limit:
        raise InvalidInput(f"push_req {name} is longer than {limit} characters")
    if not value.strip():
        raise InvalidInput(f"push_req without a usable {name}")
    return value.strip()


def _str(fields: Mapping[str, Any], name: str, limit: int = 255) -> str:
    value = fields.get(name)
    return str(value)[:limit] if isinstance(value, str | int) and not isinstance(value, bool) else ""


def push_app_for(
    job: PushJob, delivery: Delivery, *, app_get: Callable[..., PushApp | None] = push_app_get
) -> tuple[PushApp | None, str, str]:
    """The app a push goes through, and why it cannot (an operator-actionable text) with the
    failure reason, else ("", ""). Sets the delivery's app and push type. `app_get` reads the app
    (default: through the cache, from the database on a miss)."""
    provider = PROVIDER_OF_TOKEN_TYPE.get(job.token_type)
    if provider is None:
        return None, "unknown_token_type", (
            f"Token-Type {job.token_type!r} is not {PUSHABLE_TOKEN_TYPES_TEXT}"
        )
    app = app_get(app_id=job.app_id, provider=provider)
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
        delivery.push_type = app.apns_wire(job.push_type)[0]
    else:
        delivery.push_type = "notification" if job.push_type == "alert" else "data"
    return app, "", ""


def retry_pause(attempts: int, retry_after_s: float | None = None) -> float:
    """Pause before the next attempt after a 429/5xx/timeout: the provider's Retry-After when it
    gave one (sending sooner only earns another 429), else jittered exponential backoff."""
    if retry_after_s is not None:
        return max(retry_after_s, 0.0)
    return min(0.1 * 2 ** attempts, 2.0) * random.uniform(0.5, 1.5)


def expired_text(job: PushJob, attempts: int, result: SendResult | None, *, retrying: bool = False) -> str:
    if retrying:
        assert result is not None
        waited = (f", which asked to wait {result.retry_after_s:g}s (Retry-After)"
                  if result.retry_after_s is not None else "")
        return (f"retrying would pass the {job.window:g}s window after {attempts} attempts "
                f"(last answer: {result.reason}{waited})")
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
