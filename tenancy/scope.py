"""The account scope: which Kazoo accounts' rows a principal may see.

One rule for every face and every kind of row: a principal scoped to a set of accounts sees a row
only when the row's account is one of them, and a row of no account (a delivery whose push_req named
none) is in no scope. An unscoped principal (a user, a plain DRF token, a command, the consumer) sees
every account. The domain packages know which field of their rows holds the account
(registry.selectors, push.selectors) and filter through `AccountScope.rows`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from django.db.models import Model, QuerySet

from core.errors import InvalidInput, PusherError

# Kazoo makes account ids as 32 lowercase hex digits (kz_binary:rand_hex(16)). A scope names only
# such ids: a looser pattern would let a typo scope a token to an account that cannot exist.
KAZOO_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")
SCOPE_ACCOUNTS_MAX = 1000

M = TypeVar("M", bound=Model)


class OutOfScope(PusherError):
    """What a scoped principal asked for is not among its accounts' rows. Every face answers it as
    "not found" (the API: 404), never as "forbidden", so that it learns nothing about other accounts."""

    code = "not_found"


def account_ids_clean(values: Iterable[object]) -> tuple[str, ...]:
    """The account ids of a scope, checked (each 32 lowercase hex digits; at least one, at most
    SCOPE_ACCOUNTS_MAX), without duplicates, sorted. Raises InvalidInput (code account_id_invalid)."""
    if isinstance(values, str | bytes):
        raise InvalidInput("account ids are a list of ids, not one text", code="account_id_invalid")
    cleaned: set[str] = set()
    for value in values:
        text = value.strip() if isinstance(value, str) else value
        if not isinstance(text, str) or not KAZOO_ACCOUNT_ID.fullmatch(text):
            shown = repr(text[:40]) if isinstance(text, str) else type(text).__name__
            raise InvalidInput(
                f"{shown} is not a Kazoo account id (32 lowercase hex digits)", code="account_id_invalid"
            )
        cleaned.add(text)
        if len(cleaned) > SCOPE_ACCOUNTS_MAX:
            raise InvalidInput(f"a scope holds at most {SCOPE_ACCOUNTS_MAX} accounts", code="account_id_invalid")
    if not cleaned:
        raise InvalidInput("a scope needs at least one account id", code="account_id_invalid")
    return tuple(sorted(cleaned))


@dataclass(frozen=True)
class AccountScope:
    """The accounts a principal may see: `account_ids` None for every account."""

    account_ids: frozenset[str] | None = None

    @classmethod
    def of(cls, account_ids: Iterable[str]) -> AccountScope:
        return cls(frozenset(account_ids))

    @property
    def restricted(self) -> bool:
        return self.account_ids is not None

    def allows(self, account_id: str | None) -> bool:
        return self.account_ids is None or (bool(account_id) and account_id in self.account_ids)

    def rows(self, queryset: QuerySet[M], *, account_field: str = "account_id") -> QuerySet[M]:
        """`queryset` narrowed to the rows whose `account_field` (a lookup path: `device__account_id`)
        is an account of the scope."""
        if self.account_ids is None:
            return queryset
        return queryset.filter(**{f"{account_field}__in": sorted(self.account_ids)})


EVERY_ACCOUNT = AccountScope()
