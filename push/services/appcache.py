"""The push apps as the push path reads them: cached a few seconds, cleared on every change."""

from __future__ import annotations

import threading
import time

from django.db import transaction

from push.models import PushApp

APP_CACHE_TTL_S = 5.0


_app_cache: dict[tuple[str, str], tuple[float, PushApp | None]] = {}


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
    with _app_cache_lock:
        _app_cache[key] = (now, app)
    return app


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


def _push_apps_changed() -> None:
    """This process sees an app or credential change now, the others within APP_CACHE_TTL_S;
    cleared again at commit so that no push reads the old row back into the cache meanwhile."""
    push_app_cache_clear()
    transaction.on_commit(push_app_cache_clear)
