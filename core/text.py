"""Text rules every store and peer shares: what can be stored, and how a token is shown."""

from __future__ import annotations

import json
import re
from typing import Any

from core.errors import InvalidInput


def text_storable_problem(value: Any) -> str | None:
    """What no store or peer accepts in a JSON value's strings (keys included), else None: lone
    surrogates (`\\ud800` in JSON: not UTF-8 for APNs, FCM or PostgreSQL) and NUL characters
    (PostgreSQL text and jsonb refuse them). The one check of every face: the consumer refuses such
    a message, the API such a field."""
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a string that is not valid Unicode (a lone surrogate)"
    except (TypeError, ValueError, RecursionError) as exc:
        return f"cannot be handled: {str(exc)[:120]}"
    if "\\u0000" in text and _has_nul(value):  # the cheap test first; the walk tells escapes apart
        return "holds a NUL character"
    return None


# UTF-8 for U+D800..U+DFFF, which json.loads decodes (with surrogatepass) into lone surrogates.
_UTF8_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")


def json_text_maybe_unstorable(body: bytes) -> bool:
    """Whether JSON text `body` may decode to a value `text_storable_problem` refuses; False means
    it cannot, so a consumer can skip re-encoding every message it decodes. A lone surrogate or a
    NUL reaches the decoded strings only through a `\\u` escape, or through the UTF-8 of a
    surrogate; raw NUL bytes are no JSON (json.loads refuses control characters in strings), and
    UTF-16 and UTF-32 text (which json.loads also reads) always holds NUL bytes, so it is checked."""
    return b"\\u" in body or b"\x00" in body or _UTF8_SURROGATE.search(body) is not None


def text_storable_check(fields: dict[str, Any]) -> None:
    """Raises InvalidInput for a message whose text cannot be stored or sent (see above)."""
    problem = text_storable_problem(fields)
    if problem:
        raise InvalidInput(f"body {problem}")


def _has_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
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


def duration_ms_text(milliseconds: float | None) -> str:
    """A latency as people read it: "950 ms", "9,871 ms", then seconds: "18.4 s"."""
    if milliseconds is None:
        return "—"
    if milliseconds < 1:
        return f"{milliseconds:.1f} ms"
    if milliseconds < 10_000:
        return f"{milliseconds:,.0f} ms"
    return f"{milliseconds / 1000:,.1f} s"


def json_kind(value: Any) -> str:
    """How a refusal names a JSON value of the wrong kind ("an object"), never quoting it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
