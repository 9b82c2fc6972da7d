"""Reads of the registry, with the related rows the callers need already joined."""

import time
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from registry.models import Device, UserAgentRule
from registry.pushobject import Rule

# Rules are read on every reg_success; a short cache keeps that off the database while an
# edit in the admin still applies within seconds in every process, without a restart.
RULES_TTL_S = 2.0
_rules_cache: tuple[float, tuple[Rule, ...]] | None = None


def user_agent_rules_enabled(*, fresh: bool = False) -> tuple[Rule, ...]:
    global _rules_cache
    now = time.monotonic()
    if fresh or _rules_cache is None or now - _rules_cache[0] > RULES_TTL_S:
        rules = tuple(
            Rule(name=r.name, regex=r.regex, properties=dict(r.properties or {}))
            for r in UserAgentRule.objects.filter(enabled=True).order_by("position", "name")
        )
        _rules_cache = (now, rules)
    return _rules_cache[1]


def rules_cache_clear() -> None:
    global _rules_cache
    _rules_cache = None


def device_digest_get(*, account_id: str, device_id: str) -> tuple[str, Any] | None:
    """(registration_digest, last_seen_at) of a device, or None. Raw SQL on purpose: every
    reg_success (each device every few minutes) asks this, and the ORM's query building costs
    several times the query itself."""
    with connection.cursor() as cursor:
        cursor.execute(_DIGEST_SQL, [account_id, device_id])
        row = cursor.fetchone()
    if row is None:
        return None
    digest, last_seen = row
    if isinstance(last_seen, str):  # SQLite hands back text for raw queries
        last_seen = datetime.fromisoformat(last_seen)
    if last_seen is not None and timezone.is_naive(last_seen):
        last_seen = timezone.make_aware(last_seen, UTC)
    return digest, last_seen


_DIGEST_SQL = (
    f"SELECT registration_digest, last_seen_at FROM {Device._meta.db_table} "  # noqa: S608 - fixed identifiers
    "WHERE account_id = %s AND device_id = %s"
)


def device_get(*, account_id: str, device_id: str) -> Device | None:
    # order_by(): no ORDER BY for a unique lookup (on the hot path of every reg_success).
    return next(iter(Device.objects.filter(account_id=account_id, device_id=device_id).order_by()[:1]), None)
