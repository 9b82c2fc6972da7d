"""Limits on JSON read from clients (API bodies, websocket frames), checked before json.loads.

Python's json decoder recurses once per nested array or object, so a few kilobytes of `[[[[...`
raise RecursionError (a 500, not a 400). `json_depth_exceeds` measures the nesting without
recursing and without parsing, so deep input is refused before the decoder sees it."""

from __future__ import annotations

import re

# Far deeper than any document pusher takes (a push payload, a rule's properties), far below the
# interpreter's recursion limit.
MAX_JSON_DEPTH = 64

# A bracket, or a whole JSON string (escapes included; an unterminated one runs to the end), so
# that brackets inside strings are skipped. Linear: the alternatives inside the string never overlap.
_TOKEN = re.compile(r'[\[\]{}]|"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when `text` nests arrays/objects more than `limit` deep (counting `[` and `{` outside
    strings). Iterative; for text that is not JSON the answer only has to bound what the decoder
    would recurse into before it stops at the first error, which it does."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _TOKEN.finditer(text):
        char = text[match.start()]
        if char == '"':
            continue
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return False
