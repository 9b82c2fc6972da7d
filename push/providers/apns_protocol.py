"""APNs' vocabulary: the credential, request and result the client takes and returns, Apple's reason
table mapped to outcomes, and transport failures (TLS, connection, GOAWAY, timeouts) classified the
same way. Pure: no I/O."""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import h2.events
import h2.exceptions
import httpx


class Outcome(str, Enum):  # noqa: UP042 - same base as providers.fcm.Outcome; members equal their values
    """What the caller should do with the push; values match the delivery state names."""

    SENT = "sent"
    # The token is dead for this topic (410): stop using it.
    TOKEN_INVALID = "token_invalid"
    # 400 BadDeviceToken: usually a sandbox token sent to production (or the reverse), sometimes a
    # malformed token. Not proof that the device is gone, so it is kept apart from TOKEN_INVALID.
    BAD_DEVICE_TOKEN = "bad_device_token"
    # Transient: the same request may succeed later (or on a fresh connection).
    RETRY = "retry"
    # Needs an operator (credential, topic, payload...): retrying unchanged will fail again.
    FAILED = "failed"


# Every reason string Apple documents for an error response (and the JSON of a GOAWAY frame),
# with the outcome and a description an operator can act on.
REASONS: dict[str, tuple[Outcome, str]] = {
    # 400
    "BadCollapseId": (Outcome.FAILED, "apns-collapse-id is longer than 64 bytes; shorten it."),
    "BadDeviceToken": (
        Outcome.BAD_DEVICE_TOKEN,
        "The device token is malformed or belongs to the other environment: a sandbox (development "
        "build) token sent to production or a production token sent to sandbox. Check the app's "
        "host setting for this token.",
    ),
    "BadExpirationDate": (Outcome.FAILED, "apns-expiration is not a valid UNIX timestamp (seconds)."),
    "BadMessageId": (Outcome.FAILED, "apns-id is not a canonical UUID (8-4-4-4-12 hex digits)."),
    "BadPriority": (Outcome.FAILED, "apns-priority must be 10, 5 or 1."),
    "BadTopic": (
        Outcome.FAILED,
        "apns-topic is invalid. For VoIP pushes it must be the bundle id followed by '.voip'.",
    ),
    "DeviceTokenNotForTopic": (
        Outcome.FAILED,
        "The device token was issued for another app/topic: check the app's topic, or whether a "
        "VoIP token is sent with a non-VoIP topic (or the reverse).",
    ),
    "DuplicateHeaders": (Outcome.FAILED, "A request header was sent twice; check the app's extra headers."),
    "IdleTimeout": (Outcome.RETRY, "APNs closed the connection after it sat idle; a new one is opened."),
    "InvalidPushType": (
        Outcome.FAILED,
        "apns-push-type is not a valid type (e.g. voip, alert, background); check the app's push type.",
    ),
    "MissingDeviceToken": (Outcome.FAILED, "The request path has no device token; the stored token is empty"),
    "MissingTopic": (
        Outcome.FAILED,
        "apns-topic is required (token auth, or a certificate for several topics); set the app's topic.",
    ),
    "PayloadEmpty": (Outcome.FAILED, "The notification payload was empty."),
    "TopicDisallowed": (
        Outcome.FAILED,
        "Pushing to this topic is not allowed with this credential: the certificate or key does not "
        "cover the topic (wrong bundle id, or a non-VoIP certificate used for a .voip topic).",
    ),
    # 403
    "BadCertificate": (Outcome.FAILED, "APNs rejected the client certificate; upload a valid one."),
    "BadCertificateEnvironment": (
        Outcome.FAILED,
        "The client certificate is for the other environment (sandbox vs production); fix the app's host "
        "or upload the matching certificate.",
    ),
    "ExpiredProviderToken": (
        Outcome.FAILED,
        "APNs says the provider token (JWT) is older than one hour even after a refresh: check the "
        "server clock (NTP).",
    ),
    "Forbidden": (Outcome.FAILED, "APNs refused the request (the team or key may be revoked or suspended)."),
    "InvalidProviderToken": (
        Outcome.FAILED,
        "The provider token (JWT) is invalid: check the key id, team id and .p8 key of the credential, "
        "and that the key is enabled for APNs.",
    ),
    "MissingProviderToken": (
        Outcome.FAILED,
        "No certificate was presented and no provider token was sent; the credential has no usable auth.",
    ),
    "UnrelatedKeyIdInToken": (
        # APNs binds a connection to the key of its first push; a retry on a new connection works.
        Outcome.RETRY,
        "The connection was bound to another signing key on its first push; the connection is "
        "replaced. If it persists, check that key id and team id belong together.",
    ),
    "BadEnvironmentKeyIdInToken": (
        Outcome.FAILED,
        "The signing key is scoped to the other environment (sandbox vs production); use a key for "
        "this environment or fix the app's host.",
    ),
    # 404
    "BadPath": (Outcome.FAILED, "The request path was not /3/device/<token>; this is a client bug."),
    # 405
    "MethodNotAllowed": (Outcome.FAILED, "APNs only accepts POST; this is a client bug."),
    # 410
    "ExpiredToken": (Outcome.TOKEN_INVALID, "The device token has expired; stop using it."),
    "Unregistered": (
        Outcome.TOKEN_INVALID,
        "The device token is no longer active for the topic (app removed or token rotated); stop using it.",
    ),
    # 413
    "PayloadTooLarge": (
        Outcome.FAILED,
        "The payload is too large (4 KB for regular pushes, 5 KB for VoIP); trim the payload.",
    ),
    # 429
    "TooManyProviderTokenUpdates": (
        Outcome.RETRY,
        "The provider token was renewed too often (more than once per 20 minutes); retry later with the "
        "current token. Several processes sharing one key may cause this.",
    ),
    "TooManyRequests": (Outcome.RETRY, "Too many pushes to the same device token in a short time."),
    # 500
    "InternalServerError": (Outcome.RETRY, "APNs internal server error; retry later."),
    # 503
    "ServiceUnavailable": (Outcome.RETRY, "APNs is unavailable; retry later."),
    "Shutdown": (Outcome.RETRY, "The APNs server is shutting down; a new connection is opened."),
}


# Used when a response carries a reason Apple did not document (or none at all).
_STATUS_FALLBACK: dict[int, Outcome] = {
    410: Outcome.TOKEN_INVALID,
    429: Outcome.RETRY,
    500: Outcome.RETRY,
    502: Outcome.RETRY,
    503: Outcome.RETRY,
    504: Outcome.RETRY,
}


def classify_response(status: int, reason: str) -> tuple[Outcome, str]:
    """Map an APNs status and reason to an outcome and an operator-facing description."""
    if status == 200:
        return Outcome.SENT, ""
    known = REASONS.get(reason)
    if known is not None:
        return known
    outcome = _STATUS_FALLBACK.get(status, Outcome.FAILED)
    return outcome, f"APNs answered HTTP {status} with an undocumented reason {reason!r}."


# Answers that condemn the connection rather than the push: new pushes go to a fresh one.
_CONNECTION_SCOPED_REASONS = frozenset({"Shutdown", "IdleTimeout", "UnrelatedKeyIdInToken"})


# Alerts a TLS server sends when it refuses our client certificate: not transient, an operator
# has to upload another certificate.
_CERT_REJECTED_MARKERS = (
    "ALERT_BAD_CERTIFICATE",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_UNKNOWN_CA",
    "ALERT_ACCESS_DENIED",
    "ALERT_CERTIFICATE_REQUIRED",
)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _goaway_event(chain: list[BaseException]) -> h2.events.ConnectionTerminated | None:
    for item in chain:
        for arg in getattr(item, "args", ()):
            if isinstance(arg, h2.events.ConnectionTerminated):
                return arg
    return None


def _classify_exception(exc: BaseException) -> tuple[Outcome, str, str]:
    """Map a transport failure to (outcome, reason, description)."""
    chain = _exception_chain(exc)
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            return (
                Outcome.FAILED,
                "TLSVerifyFailed",
                f"The APNs server certificate is not trusted ({item.verify_message}). Check the system CA "
                "store, PUSHER_APNS_CA_FILE and the host name; verification is never disabled.",
            )
    for item in chain:
        if isinstance(item, ssl.SSLError):
            text = f"{item.reason or ''} {item}".upper()
            if any(marker in text for marker in _CERT_REJECTED_MARKERS):
                return (
                    Outcome.FAILED,
                    "TLSCertificateRejected",
                    f"APNs refused the client certificate during the TLS handshake ({item.reason}): it is "
                    "expired, revoked, or not an Apple push certificate for this environment.",
                )
    goaway = _goaway_event(chain)
    if goaway is not None:
        apple_reason = ""
        if goaway.additional_data:
            with contextlib.suppress(ValueError, AttributeError):
                apple_reason = str(json.loads(goaway.additional_data).get("reason") or "")
        if apple_reason in REASONS:
            outcome, description = REASONS[apple_reason]
            return outcome, apple_reason, f"APNs closed the connection (GOAWAY): {description}"
        return (
            Outcome.RETRY,
            "GoAway",
            f"APNs closed the connection (GOAWAY, error code {goaway.error_code}, "
            f"data {goaway.additional_data!r}) before answering; retry on a new connection.",
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return Outcome.RETRY, "ConnectTimeout", "Connecting to APNs timed out; retry later."
    if isinstance(exc, httpx.TimeoutException):
        return Outcome.RETRY, "Timeout", "APNs did not answer in time; retry later."
    if isinstance(exc, httpx.ConnectError):
        return Outcome.RETRY, "ConnectError", f"Could not connect to APNs ({exc}); retry later."
    if isinstance(exc, httpx.ReadError | httpx.WriteError) or any(
        isinstance(item, ConnectionError) for item in chain
    ):
        return (
            Outcome.RETRY,
            "ConnectionLost",
            f"The connection to APNs was reset or closed before the answer ({exc!r}); retry.",
        )
    if any(isinstance(arg, h2.events.StreamReset) for item in chain for arg in getattr(item, "args", ())):
        return Outcome.RETRY, "StreamReset", "APNs reset the stream; retry."
    if isinstance(exc, httpx.ProtocolError | h2.exceptions.ProtocolError):
        return Outcome.RETRY, "ProtocolError", f"HTTP/2 protocol error ({exc}); retry on a new connection."
    return Outcome.RETRY, "ConnectionError", f"The connection to APNs failed ({exc!r}); retry."


def _is_transport_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        httpx.TransportError
        | h2.exceptions.H2Error
        | OSError,
    )


@dataclass(frozen=True)
class ApnsCredential:
    """How to authenticate to APNs. PEM texts are secrets; `cache_key` is not and keys connections."""

    kind: Literal["certificate", "token"]
    cache_key: str
    # Certificate auth: the client certificate (chain) and its unencrypted private key.
    cert_pem: str = field(default="", repr=False)
    # Certificate auth: the certificate's private key; token auth: the .p8 signing key.
    key_pem: str = field(default="", repr=False)
    # Token auth only.
    key_id: str = ""
    team_id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("certificate", "token"):
            raise ValueError(f"unknown APNs credential kind {self.kind!r}")
        if not self.cache_key:
            raise ValueError("cache_key is required")
        if self.kind == "certificate" and not (self.cert_pem and self.key_pem):
            raise ValueError("certificate credentials need cert_pem and key_pem")
        if self.kind == "token" and not (self.key_pem and self.key_id and self.team_id):
            raise ValueError("token credentials need key_pem, key_id and team_id")

    def __repr__(self) -> str:
        # Spelled out (not the dataclass repr) so that a field added later cannot leak a secret.
        if self.kind == "token":
            return (
                f"ApnsCredential(kind='token', cache_key={self.cache_key!r}, "
                f"key_id={self.key_id!r}, team_id={self.team_id!r})"
            )
        return f"ApnsCredential(kind='certificate', cache_key={self.cache_key!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class ApnsRequest:
    """One notification to one device token."""

    token: str
    topic: str
    push_type: str
    priority: int | None
    expiration: int | None
    collapse_id: str | None
    extra_headers: dict[str, str]
    body: dict[str, Any]
    host: str
    port: int
    apns_id: str | None = None


@dataclass(frozen=True)
class ApnsResult:
    outcome: Outcome
    # None when no HTTP response arrived (network, TLS, timeout, GOAWAY).
    status: int | None
    # Apple's reason string, or our own name for a transport failure ("Timeout", "ConnectError"...).
    reason: str
    description: str
    apns_id: str | None
    # 410 only: when APNs learned the token was no longer valid (ms since the epoch).
    timestamp_ms: int | None
    latency_s: float


class WarmError(Exception):
    """A warm-up could not open the connection or sign the provider token; the text says why."""


def _no_response(
    outcome: Outcome, reason: str, description: str, request: ApnsRequest, started: float
) -> ApnsResult:
    """A result for a push that got no HTTP response."""
    return ApnsResult(
        outcome=outcome,
        status=None,
        reason=reason,
        description=description,
        apns_id=request.apns_id,
        timestamp_ms=None,
        latency_s=time.monotonic() - started,
    )


class _CredentialProblem(Exception):
    """The credential could not be loaded (bad PEM, key/certificate mismatch...)."""


def result_from_response(request: ApnsRequest, response: httpx.Response, started: float) -> ApnsResult:
    """What APNs answered to `request` (its whole body received already), as the client's result."""
    latency = time.monotonic() - started
    apns_id = response.headers.get("apns-id") or request.apns_id
    status = response.status_code
    if status == 200:
        return ApnsResult(Outcome.SENT, status, "", "", apns_id, None, latency)
    reason = ""
    timestamp_ms: int | None = None
    with contextlib.suppress(ValueError):
        response.read()  # the transport received the whole body; this only hands it over
        data = response.json()
        if isinstance(data, dict):
            reason = str(data.get("reason") or "")
            if isinstance(data.get("timestamp"), int | float):
                timestamp_ms = int(data["timestamp"])
    outcome, description = classify_response(status, reason)
    return ApnsResult(outcome, status, reason, description, apns_id, timestamp_ms, latency)
