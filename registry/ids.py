"""Kazoo document ids as pusher accepts them: they end up in Crossbar URLs.

Kazoo's account and device ids are 32 lowercase hex digits; ids made through Crossbar's API may use
other letters, digits, '-' and '_'. Nothing else: a dot segment (`..`), `/`, `%`, `?`, `#` or a
space in an id taken from a bus message would point the sync's PATCH at another document (`..`
made it PATCH the account itself).
"""

from __future__ import annotations

import re

from core.errors import InvalidInput

KAZOO_ID_MAX = 64
_KAZOO_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def kazoo_id_valid(value: object) -> bool:
    """Whether `value` can be used as an account or device id in a Crossbar URL."""
    return isinstance(value, str) and _KAZOO_ID.fullmatch(value) is not None


def kazoo_id_check(value: object, *, name: str) -> None:
    """Raise InvalidInput (the message is refused and dead-lettered) unless `value` is a usable
    Kazoo id; `name` is its field name on the bus (Account-ID, Authorizing-ID)."""
    if kazoo_id_valid(value):
        return
    shown = repr(value[:70]) if isinstance(value, str) else type(value).__name__
    raise InvalidInput(
        f"{name} {shown} is not a Kazoo id (1 to {KAZOO_ID_MAX} letters, digits, '-' or '_')"
    )
