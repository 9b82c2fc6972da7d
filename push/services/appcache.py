"""The push apps as the push path reads them: cached a few seconds, cleared on every change."""

from __future__ import annotations

import threading
import time

from django.db import transaction

from push.models import Provider, PushApp
from registry.models import PushToken

APP_CACHE_TTL_S = 5.0


_app_cache: dict[tuple[str, str], tuple[float, PushApp | None]] = {}


# An Apple app's active tokens the registry learnt as sandbox ones (RFC 8599 pn-provider=apns.dev):
# read with the app (one more query per app and APP_CACHE_TTL_S while it pushes; a token registered
# meanwhile counts from the next read), so the push path knows them without a query of its own.
_sandbox_tokens: dict[str, frozenset[str]] = {}


_app_cache_lock = threading.Lock()


def push_app_get(*, app_id: str, provider: str) -> PushApp | None:
    """The app with its credential, cached a few seconds: read on every push, yet an admin edit
    applies everywhere within seconds without a restart (Kazoo needed one)."""
    key = (app_id, provider)
    now = time.monotonic()
    with _app_cache_lock:
        hit = _app_cache.get(key)
        if hit is not None and now - hit[0] < APP_CACHE_TTL_S:
            return hit[1]
    app = PushApp.objects.select_related("credential").filter(app_id=app_id, provider=provider).first()
    sandbox = _sandbox_tokens_read(app_id) if provider == Provider.APPLE and app is not None else frozenset()
    with _app_cache_lock:
        _app_cache[key] = (now, app)
        if provider == Provider.APPLE:
            _sandbox_tokens[app_id] = sandbox
    return app


def _sandbox_tokens_read(app_id: str) -> frozenset[str]:
    tokens = PushToken.objects.filter(app=app_id, sandbox=True, active=True).values_list("token", flat=True)
    return frozenset(tokens)


def apns_token_sandbox(*, app_id: str, token: str) -> bool:
    """Whether the registry learnt this token of this Apple app as a sandbox (development build)
    one, as of the app's cache entry (never the database: the push lane asks on its event loop)."""
    with _app_cache_lock:
        return token in _sandbox_tokens.get(app_id, frozenset())


def push_app_cached(*, app_id: str, provider: str) -> tuple[bool, PushApp | None]:
    """(fresh, app) from the cache alone, never the database: for a caller on an event loop, which
    refreshes a stale or missing entry with `push_app_get` on a thread meanwhile. A stale entry is
    still returned (an edit reaches it a moment later); a missing one is (False, None)."""
    with _app_cache_lock:
        hit = _app_cache.get((app_id, provider))
    if hit is None:
        return False, None
    return time.monotonic() - hit[0] < APP_CACHE_TTL_S, hit[1]


def push_app_cache_clear() -> None:
    with _app_cache_lock:
        _app_cache.clear()
        _sandbox_tokens.clear()


def _push_apps_changed() -> None:
    """This process sees an app or credential change now, the others within APP_CACHE_TTL_S;
    cleared again at commit so that no push reads the old row back into the cache meanwhile."""
    push_app_cache_clear()
    transaction.on_commit(push_app_cache_clear)
