"""APNs provider tokens (JWT, ES256), one per team and key for every process that shares a store.

Apple wants a provider token renewed at most every 20 minutes and at least every 60, and answers
`TooManyProviderTokenUpdates` to a team whose key mints too often. Ten consumer processes (or hosts)
that each mint their own renew ten tokens an hour; with a `TokenStore` (the database, wired up by
push.services.apns_tokens) they share one: a process that finds no fresh token in its memory asks
the store, and only when the store has none either does it mint one, offered with compare-and-set so
that of several processes minting at once one token wins and every process uses that one.

No ORM here: the store is a port; its calls are blocking and are made off the event loop by the
client (once per token lifetime per process, not per push).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import jwt

from push.providers.apns_protocol import ApnsCredential

log = logging.getLogger(__name__)


class TokenProblem(Exception):
    """The credential's key cannot sign a provider token."""


@dataclass(frozen=True)
class SharedToken:
    token: str
    issued_at: float


class TokenStore(Protocol):
    """Where the processes of one deployment share their provider tokens."""

    def current(self, *, team_id: str, key_id: str, key_fingerprint: str) -> SharedToken | None:
        """The token stored for this team and key, if it was signed with this key."""

    def offer(self, *, team_id: str, key_id: str, key_fingerprint: str, token: SharedToken,
              replacing: str | None, max_age: float, now: float) -> SharedToken:
        """Store `token` unless another fresh one (not `replacing`, signed with this key) is stored
        already; return the one stored."""


@dataclass
class _Cached:
    token: str
    issued_at: float
    key_pem: str


def key_fingerprint(key_pem: str) -> str:
    """Names the signing key without revealing it: a replaced .p8 key never reuses the old key's token."""
    return hashlib.sha256(key_pem.encode()).hexdigest()


class ProviderTokens:
    """The provider tokens of one client: in memory, backed by an optional shared store."""

    def __init__(self, *, max_age: float, clock: Callable[[], float], store: TokenStore | None = None) -> None:
        self.max_age = max_age
        self.clock = clock
        self.store = store
        self._cached: dict[tuple[str, str], _Cached] = {}

    def clear(self) -> None:
        self._cached = {}

    def cached(self, credential: ApnsCredential, *, stale: str | None = None) -> str | None:
        """A fresh token from memory (no I/O), or None: then `fetch` (off the loop when `store`)."""
        held = self._cached.get((credential.team_id, credential.key_id))
        if (
            held is not None
            and held.key_pem == credential.key_pem
            and self.clock() - held.issued_at < self.max_age
            # Compare-and-swap: when many streams get ExpiredProviderToken at once only the first
            # re-mints; the others reuse its token (minting often triggers TooManyProviderTokenUpdates).
            and (stale is None or held.token != stale)
        ):
            return held.token
        return None

    def fetch(self, credential: ApnsCredential, *, stale: str | None = None) -> str:
        """The token to use: the store's if it holds a fresh one (not `stale`), else a new one,
        offered to the store (whose answer wins). Blocking when there is a store."""
        now = self.clock()
        fingerprint = key_fingerprint(credential.key_pem)
        names = {"team_id": credential.team_id, "key_id": credential.key_id, "key_fingerprint": fingerprint}
        store, shared = self.store, None
        if store is not None:
            try:
                shared = store.current(**names)
            except Exception as exc:  # noqa: BLE001 - a push never fails for want of the shared store
                log.warning("shared APNs provider tokens unavailable (%s); minting one for this process",
                            type(exc).__name__)
                store = None
        if shared is not None and now - shared.issued_at < self.max_age and shared.token != stale:
            return self._keep(credential, shared)
        minted = SharedToken(self._mint(credential, int(now)), int(now))
        if store is not None:
            try:
                minted = store.offer(**names, token=minted, replacing=shared.token if shared else None,
                                     max_age=self.max_age, now=now)
            except Exception as exc:  # noqa: BLE001 - as above: this process's own token then
                log.warning("could not share the new APNs provider token (%s)", type(exc).__name__)
        return self._keep(credential, minted)

    def _keep(self, credential: ApnsCredential, token: SharedToken) -> str:
        self._cached[(credential.team_id, credential.key_id)] = _Cached(token.token, token.issued_at,
                                                                        credential.key_pem)
        return token.token

    @staticmethod
    def _mint(credential: ApnsCredential, issued_at: int) -> str:
        try:
            return jwt.encode(
                {"iss": credential.team_id, "iat": issued_at},
                credential.key_pem,
                algorithm="ES256",
                headers={"kid": credential.key_id},
            )
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise TokenProblem(f"the .p8 signing key cannot be used for ES256 ({exc})") from exc
