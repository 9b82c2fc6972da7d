"""Scoped API tokens in the API: their authentication (`Authorization: Bearer pst_...`), the account
scope of a request, and which views a scoped token may use with which grants.

A scoped token authenticates as its owner (request.user, so Django's model permissions apply as
for the owner) with the token as request.auth. What it may do beyond that is decided in two places
only: `scoped_token_permits` (called by every permission class of the API: a view says in
`scoped_access` which grants each action needs, and a view that says nothing refuses scoped
tokens) and the account scope of the rows (`request_scope`, applied by the domain selectors through
conventions.AccountRowsMixin and by the services the push endpoints call).

Imported by DRF's settings while rest_framework.views is still loading: nothing here may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rest_framework import authentication, exceptions

from tenancy import services as tenancy_services
from tenancy.models import ScopedToken
from tenancy.scope import EVERY_ACCOUNT, AccountScope

BEARER = "Bearer"


class ScopedTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`, the key of a scoped token (tenancy). `Token <key>` stays the
    plain DRF token's, unchanged: two words, so neither scheme ever reads the other's keys."""

    def authenticate(self, request: Any) -> tuple[Any, ScopedToken] | None:
        words = authentication.get_authorization_header(request).split()
        if not words or words[0].lower() != BEARER.lower().encode():
            return None
        if len(words) != 2:
            raise exceptions.AuthenticationFailed("Invalid bearer header: `Bearer <key>`, the key without spaces.")
        try:
            key = words[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        try:
            token = tenancy_services.scoped_token_authenticate(key=key)
        except tenancy_services.TokenRefused as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None
        return token.owner, token

    def authenticate_header(self, request: Any) -> str:
        return BEARER


def scoped_token_of(request: Any) -> ScopedToken | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ScopedToken) else None


def request_scope(request: Any) -> AccountScope:
    """The accounts whose rows this request may see: a scoped token's, else every account."""
    token = scoped_token_of(request)
    return token.scope if token is not None else EVERY_ACCOUNT


@dataclass(frozen=True)
class ScopedAccess:
    """How a view serves scoped tokens: the grants (tenancy.models.Grant values) an action needs,
    `default` for the actions not named. The view keeps to the token's accounts itself
    (conventions.AccountRowsMixin, or the scope passed to a service)."""

    default: tuple[str, ...] = ()
    actions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def grants_needed(self, action: str | None) -> tuple[str, ...]:
        return self.actions.get(action or "", self.default)


def scoped_token_permits(request: Any, view: Any) -> bool:
    """Whether a scoped token may use this view's action (always true for other principals). Deny
    by default: a view without `scoped_access` has not said how it keeps to a scope."""
    token = scoped_token_of(request)
    if token is None:
        return True
    access = getattr(view, "scoped_access", None)
    if not isinstance(access, ScopedAccess):
        return False
    return all(token.granted(grant) for grant in access.grants_needed(getattr(view, "action", None)))
