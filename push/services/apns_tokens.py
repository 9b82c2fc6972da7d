"""The database as the APNs client's shared store of provider tokens (push.providers.apns_tokens):
one row per team and key, replaced with compare-and-set."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import IntegrityError, connection, transaction

from core.fields import is_undecryptable, rows_reencrypt
from push.models import ApnsProviderToken
from push.providers.apns_tokens import SharedToken


class DatabaseTokenStore:
    """Called on the APNs client's worker threads, once per token lifetime per process."""

    def current(self, *, team_id: str, key_id: str, key_fingerprint: str) -> SharedToken | None:
        with _closing_connection():
            row = ApnsProviderToken.objects.filter(team_id=team_id, key_id=key_id).first()
        if row is None or row.key_fingerprint != key_fingerprint or is_undecryptable(row.token):
            return None  # (a token encrypted with a key since dropped is minted again, never sent as is)
        return SharedToken(row.token, row.issued_at)

    def offer(self, *, team_id: str, key_id: str, key_fingerprint: str, token: SharedToken,
              replacing: str | None, max_age: float, now: float) -> SharedToken:
        for _ in range(2):  # a second round only after losing a race to insert the first row
            try:
                with _closing_connection(), transaction.atomic():
                    row = ApnsProviderToken.objects.select_for_update().filter(team_id=team_id, key_id=key_id).first()
                    if (row is not None and row.key_fingerprint == key_fingerprint and row.token != replacing
                            and not is_undecryptable(row.token) and now - row.issued_at < max_age):
                        return SharedToken(row.token, row.issued_at)  # another process renewed it first
                    if row is None:
                        ApnsProviderToken.objects.create(
                            team_id=team_id, key_id=key_id, key_fingerprint=key_fingerprint, token=token.token,
                            issued_at=token.issued_at,
                        )
                    else:
                        row.key_fingerprint, row.token, row.issued_at = key_fingerprint, token.token, token.issued_at
                        row.save(update_fields=["key_fingerprint", "token", "issued_at", "updated_at"])
                    return token
            except IntegrityError:
                continue
        return token


@contextlib.contextmanager
def _closing_connection() -> Iterator[None]:
    """Called on the APNs client's worker threads, about once an hour: the thread's connection is
    closed after each use rather than held (and left broken by an outage) for the client's life."""
    try:
        yield
    finally:
        if not connection.in_atomic_block:
            connection.close()


@transaction.atomic
def apns_provider_tokens_reencrypt() -> tuple[int, int]:
    """Rewrite the shared provider tokens with the first FIELD_ENCRYPTION_KEY (key rotation, as
    `credentials_reencrypt` does for credentials). One no key decrypts is deleted rather than kept:
    it is a copy of what the signing key makes again, and the next push mints one. Returns
    (re-encrypted, deleted)."""
    count, dropped = rows_reencrypt(ApnsProviderToken, field="token", label="pk")
    ApnsProviderToken.objects.filter(pk__in=[int(pk) for pk in dropped]).delete()
    return count, len(dropped)
