"""Limits on JSON read from clients (API bodies, websocket frames), checked before json.loads.

Python's json decoder recurses once per nested array or object, so a few kilobytes of `[[[[...`
raise RecursionError (a 500, not a 400). `json_depth_exceeds` measures the nesting without
recursing and without parsing, so deep input is refused before the decoder sees it.

Also what a model's JSON object field accepts (json_object_problem), for every face alike."""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

from django.core.exceptions import ValidationError

from core.text import text_storable_problem

# Far deeper than any document pusher takes (a push payload, a rule's properties), far below the
# interpreter's recursion limit.
MAX_JSON_DEPTH = 64

# A whole JSON string, escapes included (an unterminated one runs to the end). Linear: the
# alternatives inside the string never overlap.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
# Outside strings only the brackets count, as [ and ] whatever their kind (a [} is a syntax error
# where the decoder stops, so counting it as a pair never hides depth the decoder would reach).
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))
_STEP = {ord("["): 1, ord("]"): -1}


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when `text` nests arrays/objects more than `limit` deep, counting `[`/`{` up and `]`/`}`
    down outside strings. No recursion, no parsing, and C-speed steps only (regex, bytes methods,
    itertools). On 2.5 MB bodies: 2-30 ms for ordinary shapes, and less than json.loads of the same
    body for the costliest valid shape (wide and just under the limit: ~0.7 s against ~1 s).

    For text that is not JSON the count only has to bound what the decoder recurses into before
    it stops at the first error, and it does: the decoder never reads past a closer without an
    opener."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _STRING.sub("", text).encode("utf-8", "ignore").translate(_AS_SQUARE, _NOT_BRACKET)
    if b"[" * (limit + 1) in brackets:  # the usual attack, `[[[[...`, found by one search
        return True
    # Each pass drops the innermost pairs, one level of every nest: a balanced document at most
    # `limit` deep is gone after `limit` passes (the usual case: big and shallow).
    rest = brackets
    for _ in range(limit):
        reduced = rest.replace(b"[]", b"")
        if len(reduced) == len(rest):
            break
        rest = reduced
    if not rest:
        return False
    # Deeper, or unbalanced: the running depth of the whole text, stopping at the first step over.
    return any(map(limit.__lt__, accumulate(map(_STEP.__getitem__, brackets))))


# --- JSON object fields ------------------------------------------------------------------------

# A model's JSON object fields (a rule's properties, a push app's extra headers, a token reporter's
# parameters and fixed values) take what the API's JSONObjectField takes, whichever face writes them.
JSON_OBJECT_REQUIRED = "must be a JSON object, e.g. {}"


def json_object_problem(value: Any) -> str | None:
    """Why `value` cannot be stored in a JSON object field, else None: not an object (null, a list,
    a string), or text no store takes (core.text: a lone surrogate, a NUL, nesting too deep)."""
    if not isinstance(value, dict):
        return JSON_OBJECT_REQUIRED
    problem = text_storable_problem(value)
    return f"value {problem}" if problem else None


def json_object_fields_clean(instance: Any, *names: str) -> None:
    """For a model's clean(): raises ValidationError naming each of the fields `names` whose value
    json_object_problem refuses. In clean() rather than as field validators, which Django skips for
    the values it counts as empty (null, []): those reached the database (null: an IntegrityError)
    or the services, which read an object."""
    errors = {name: [problem] for name in names if (problem := json_object_problem(getattr(instance, name)))}
    if errors:
        raise ValidationError(errors)
