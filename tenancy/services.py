"""Scoped API tokens: made, revoked and checked here, whatever face asks (the admin, the API, the
command, the API's authentication).

The key is `pst_` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: a key that
random needs no slow hash, and a stolen table gives no key. The clear key exists once, in what
`scoped_token_create` returns, for the face to show and forget.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import InvalidInput, PusherError
from core.text import text_storable_problem
from tenancy.models import Grant, ScopedToken, TokenState
from tenancy.scope import account_ids_clean

log = logging.getLogger(__name__)

KEY_PREFIX = "pst_"
# The stored prefix: "pst_" and 8 characters of the key, enough to tell tokens apart in a list,
# far too few to guess the other 35.
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 8
KEY_MAX_LENGTH = 100
NAME_MAX_LENGTH = 100
# last_used_at is written at most this often per token: not one UPDATE per API request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenRefused(PusherError):
    """A key that authenticates nobody: unknown, revoked, expired, or its owner inactive."""

    code = "token_refused"


@dataclass(frozen=True)
class ScopedTokenCreated:
    token: ScopedToken
    key: str  # the only copy of the clear key: show it once, store it nowhere


@dataclass(frozen=True)
class ScopedTokenParams:
    """A token's settings as every face gives them, checked (scoped_token_params_check)."""

    name: str
    owner: Any
    account_ids: tuple[str, ...]
    grants: frozenset[str]
    expires_at: datetime | None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def scoped_token_params_check(
    *, name: str, owner: AbstractBaseUser | None, account_ids: Iterable[object], grants: Iterable[str] = (),
    expires_at: datetime | None = None, now: datetime | None = None,
) -> ScopedTokenParams:
    """The checks of scoped_token_create, for a face that shows a refusal before it saves (the
    admin's form). Raises InvalidInput with a code: name_invalid, owner_invalid,
    account_id_invalid, grant_invalid, expiry_invalid."""
    name = (name or "").strip()
    problem = text_storable_problem(name)
    if not name or len(name) > NAME_MAX_LENGTH or problem:
        raise InvalidInput(
            f"a token needs a name of 1 to {NAME_MAX_LENGTH} characters" + (f": it {problem}" if problem else ""),
            code="name_invalid",
        )
    if owner is None or owner.pk is None or not owner.is_active:
        raise InvalidInput("a token's owner is an active user: the token acts as that user", code="owner_invalid")
    cleaned_ids = account_ids_clean(account_ids)
    grant_set = frozenset(grants)
    unknown = sorted(grant_set - set(Grant.values))
    if unknown:
        raise InvalidInput(
            f"unknown grant(s) {', '.join(map(repr, unknown))} (known: {', '.join(Grant.values)})",
            code="grant_invalid",
        )
    if expires_at is not None and expires_at <= (now or timezone.now()):
        raise InvalidInput("a token's expiry must be in the future", code="expiry_invalid")
    return ScopedTokenParams(name=name, owner=owner, account_ids=cleaned_ids, grants=grant_set,
                             expires_at=expires_at)


def scoped_token_create(
    *, name: str, owner: AbstractBaseUser | None, account_ids: Iterable[object], grants: Iterable[str] = (),
    expires_at: datetime | None = None,
) -> ScopedTokenCreated:
    """Make a token limited to `account_ids` (Kazoo account ids) with the `grants` (tenancy.models.Grant
    values), acting as `owner`. Answers the token and its clear key, which is never stored."""
    params = scoped_token_params_check(name=name, owner=owner, account_ids=account_ids, grants=grants,
                                       expires_at=expires_at)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = ScopedToken.objects.create(
        name=params.name, owner=params.owner, key_prefix=key[:SHOWN_PREFIX_LENGTH], key_hash=key_hash(key),
        account_ids=list(params.account_ids), expires_at=params.expires_at,
        **{f"grant_{grant}": grant in params.grants for grant in Grant.values},
    )
    # The key's prefix, never the key.
    log.info("scoped token #%d %r (%s…) made for %s: accounts %s, grants %s", token.pk, token.name, token.key_prefix,
             owner, ",".join(params.account_ids), ",".join(sorted(params.grants)) or "none")
    return ScopedTokenCreated(token=token, key=key)


@transaction.atomic
def scoped_token_revoke(*, token: ScopedToken) -> ScopedToken:
    """Refuse the token from now on (its next request gets 401). Revoking a revoked token changes
    nothing. A revoked token stays listed, for the record; it cannot be brought back."""
    token = ScopedToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        log.info("scoped token #%d %r (%s…) revoked", token.pk, token.name, token.key_prefix)
    return token


def scoped_token_authenticate(*, key: str) -> ScopedToken:
    """The token this key belongs to, with its owner, when it may be used now; records its use (at
    most once a minute). Raises TokenRefused (unknown, revoked, expired, owner inactive)."""
    if not key.startswith(KEY_PREFIX) or len(key) > KEY_MAX_LENGTH:
        raise TokenRefused("Invalid token.")
    token = ScopedToken.objects.select_related("owner").filter(key_hash=key_hash(key)).first()
    if token is None:
        raise TokenRefused("Invalid token.")
    now = timezone.now()
    state = token.state(now)
    if state == TokenState.REVOKED:
        raise TokenRefused("Token revoked.")
    if state == TokenState.EXPIRED:
        raise TokenRefused("Token expired.")
    if not token.owner.is_active:
        raise TokenRefused("User inactive or deleted.")
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION:
        ScopedToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        token.last_used_at = now
    return token
