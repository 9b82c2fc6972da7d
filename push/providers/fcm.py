"""Firebase Cloud Messaging, HTTP v1 API: what the service hands the transport and gets back.

The request, result and credential types, and the message body they make, live here; the sender
itself (`FcmSender`, push/providers/fcm_sender.py: requests, google-auth and pyfcm, 6.7 MB and ~160
modules once imported) is loaded the first time `fcm.FcmSender` is used, so a process that pushes
only through Apple never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from push.providers.fcm_sender import FcmSender

DEFAULT_ENDPOINT = "https://fcm.googleapis.com"


class Outcome(str, Enum):  # noqa: UP042 - same base as push.providers.apns.Outcome; values compare as str
    """What the service should do with a result; same names/values as push.providers.apns.Outcome."""

    SENT = "sent"
    TOKEN_INVALID = "token_invalid"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class FcmCredential:
    """A Firebase service account, as parsed from its JSON file, plus the project to send for."""

    service_account_info: dict[str, Any]
    project_id: str
    cache_key: str  # non-secret; FcmSender keeps one client (and access token) per key

    def __repr__(self) -> str:
        # Written by hand so the private key can never reach a log line, a traceback or an admin page.
        email = self.service_account_info.get("client_email")
        return (
            f"FcmCredential(project_id={self.project_id!r}, cache_key={self.cache_key!r}, "
            f"client_email={email!r}, private_key=<hidden>)"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class FcmRequest:
    token: str
    data: dict[str, str]  # HTTP v1 only accepts string values; the caller JSON-encodes nested ones
    android_priority: str  # "high" | "normal"
    ttl_s: int | None
    collapse_key: str | None = None
    notification: dict[str, Any] | None = None  # {"title", "body", "image"} for visible notifications


@dataclass(frozen=True)
class FcmResult:
    outcome: Outcome
    status: int | None  # HTTP status of the send; None when the send never got an answer
    reason: str  # FCM errorCode/status (UNREGISTERED, QUOTA_EXCEEDED...) or a transport error class
    description: str  # human-readable detail; never contains key material or access tokens
    message_name: str | None  # "projects/<p>/messages/<id>" on success
    latency_s: float  # whole send() call, token fetch included
    retry_after_s: float | None = None  # Google's Retry-After (429/503), for the service's backoff


def fcm_message_build(request: FcmRequest) -> dict[str, Any]:
    """The HTTP v1 request body for one message (pure)."""
    android: dict[str, Any] = {"priority": request.android_priority}
    if request.ttl_s is not None:
        android["ttl"] = f"{request.ttl_s}s"  # google.protobuf.Duration's JSON form
    if request.collapse_key:
        android["collapse_key"] = request.collapse_key
    message: dict[str, Any] = {"token": request.token, "data": dict(request.data), "android": android}
    if request.notification:
        message["notification"] = dict(request.notification)
    return {"message": message}


class FcmWarmError(Exception):
    """A warm-up could not fetch the access token; the text says why."""


def __getattr__(name: str) -> Any:
    # PEP 562: `fcm.FcmSender` imports the sender (and its libraries) when first asked for.
    if name == "FcmSender":
        from push.providers.fcm_sender import FcmSender

        return FcmSender
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ENDPOINT",
    "FcmCredential",
    "FcmRequest",
    "FcmResult",
    "FcmSender",
    "FcmWarmError",
    "Outcome",
    "fcm_message_build",
]
