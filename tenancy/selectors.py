"""Reads of scoped tokens."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone

from tenancy.models import ScopedToken, TokenState


def scoped_tokens_in_state(*, state: str, queryset: QuerySet[ScopedToken] | None = None,
                           now: datetime | None = None) -> QuerySet[ScopedToken]:
    """The tokens whose ScopedToken.state is `state` (a TokenState value) now."""
    now = now or timezone.now()
    tokens = ScopedToken.objects.all() if queryset is None else queryset
    unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    if state == TokenState.REVOKED:
        return tokens.filter(revoked_at__isnull=False)
    if state == TokenState.EXPIRED:
        return tokens.filter(revoked_at__isnull=True).exclude(unexpired)
    if state == TokenState.ACTIVE:
        return tokens.filter(unexpired, revoked_at__isnull=True)
    raise ValueError(f"unknown token state {state!r}")
