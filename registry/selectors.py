"""Reads of the registry, with the related rows the callers need already joined."""

import time

from django.db.models import QuerySet

from registry.models import Device, PushToken, UserAgentRule
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


def device_get(*, account_id: str, device_id: str) -> Device | None:
    # order_by(): no ORDER BY for a unique lookup (on the hot path of every reg_success).
    return next(iter(Device.objects.filter(account_id=account_id, device_id=device_id).order_by()[:1]), None)


def device_list() -> QuerySet[Device]:
    return Device.objects.all()


def token_list_active(*, device: Device) -> QuerySet[PushToken]:
    return device.tokens.filter(active=True).select_related("device")
