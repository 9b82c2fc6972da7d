"""Text rules every store and peer shares: what can be stored, and how a token is shown."""

from __future__ import annotations

import json
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
