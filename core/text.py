"""Text rules every store and peer shares: what can be stored, and how a token is shown."""

from __future__ import annotations

import json
import re
from typing import Any

from core.errors import InvalidInput


def text_storable_check(fields: dict[str, Any]) -> None:
    """Text no peer accepts: lone surrogates (`\\ud800` in JSON: not UTF-8 for APNs, FCM or
    PostgreSQL) and NUL characters (PostgreSQL text refuses them). Refused as a bad message rather
    than failing half-way through the work."""
    try:
        text = json.dumps(fields, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput("body holds a string that is not valid Unicode (a lone surrogate)") from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"body cannot be handled: {str(exc)[:120]}") from exc
    if "\\u0000" in text and _has_nul(fields):  # the cheap test first; the walk tells escapes apart
        raise InvalidInput("body holds a NUL character")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def mask_token(token: str) -> str:
    """Enough of a token to recognise it, not enough to push to it."""
    if len(token) <= 12:
        return "…" if token else ""
    return f"{token[:6]}…{token[-4:]}"


# What a pasted file's content looks like, as opposed to a path: a PEM block, JSON, a long run of
# base64, several lines, or more than a path component may hold.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{40,}")


def path_shown(value: str) -> str:
    """A path given on a command line, as an error message may show it: quoted, unless it looks
    like a file's content given in its place (`add_apple_app APP "$(cat voip.pem)"`). That content
    may be a private key, so it is never echoed; the message says what the argument looks like."""
    stripped = value.strip()
    if (
        len(value) > 255
        or not value.isprintable()
        or "-----BEGIN" in value
        or stripped.startswith(("{", "["))
        or _BASE64_RUN.fullmatch(stripped) is not None
    ):
        return f"the argument given as a path ({len(value)} characters that look like a file's content, not a path)"
    return repr(value)
