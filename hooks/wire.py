"""What a webhook request is, as pure functions: the URL rules, the body, the signature and headers,
and the retry schedule. No ORM, no network.

The signature is HMAC-SHA256, keyed with the subscription's secret, over `<timestamp>.<body>`
(the timestamp as sent in X-Pusher-Timestamp, a dot, the body's bytes), in hex, sent as
`X-Pusher-Signature: sha256=<hex>`. Signing the timestamp with the body lets a receiver refuse an
old request replayed (README, "Webhooks and alerts").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

URL_MAX = 2000
SCHEMES = ("http", "https")
USER_AGENT = "pusher-webhooks/1"


def url_problem(url: str) -> str:
    """Why `url` cannot be a webhook's URL, or "": http or https, a host, a valid port, no
    user:password (it would be shown back in the admin and the API: the signature authenticates
    pusher), no fragment, no spaces or control characters."""
    if not url:
        return "a URL is required"
    if len(url) > URL_MAX:
        return f"a URL is at most {URL_MAX} characters"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "the URL holds spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed on access: out of range or not a number raises ValueError
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme.lower() not in SCHEMES:
        return "only http:// and https:// URLs can receive webhooks"
    if "@" in parts.netloc:
        return ("the URL holds a user name or password, which would be shown in the admin and the API: "
                "leave it out and check the X-Pusher-Signature header instead")
    if not parts.hostname:
        return "the URL has no host"
    if port == 0:
        return "the URL's port must be 1 to 65535"
    if parts.fragment or url.endswith("#"):
        return "the URL has a #fragment, which is never sent to a server"
    return ""


def url_origin(url: str) -> str:
    """scheme://host[:port] of a URL: what logs name (the path or query may carry a token of the
    receiver's, as in Slack-style URLs)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "(invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def request_body(*, delivery_id: str, event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    """The JSON body: the same bytes on every attempt of one delivery."""
    envelope = {"id": delivery_id, "type": event_type, "created_at": created_at.isoformat(), "data": data}
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, keyed with the secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def request_headers(*, secret: str, timestamp: int, body: bytes, event_type: str, delivery_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Pusher-Event": event_type,
        "X-Pusher-Delivery": delivery_id,
        "X-Pusher-Timestamp": str(timestamp),
        "X-Pusher-Signature": signature(secret=secret, timestamp=timestamp, body=body),
    }


def retry_delay(attempts: int, *, base_s: float, max_s: float,
                rand: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait after `attempts` failed attempts: base, doubled per attempt, capped; then
    "equal jitter" (half fixed, half random), so receivers coming back are not hit by every
    sender's retries at the same moment."""
    ceiling = min(base_s * 2 ** min(max(attempts - 1, 0), 60), max_s)  # (2**60: long past any cap)
    return ceiling / 2 + rand(0, ceiling / 2)
