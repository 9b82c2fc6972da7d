"""Reads of the registry, with the related rows the callers need already joined."""

import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from core.errors import InvalidInput
from registry.models import Device, PushToken, SyncStatus, TokenReporter, UserAgentRule
from registry.pushobject import Rule, rule_match, rule_regex_caches_clear
from tenancy.scope import EVERY_ACCOUNT, AccountScope

# Rules are read on every reg_success; a short cache keeps that off the database while an
# edit in the admin still applies within seconds in every process, without a restart.
RULES_TTL_S = 2.0
_rules_cache: tuple[float, tuple[Rule, ...]] | None = None
# The regexes of the rule set last read: when they change (in any process, whoever changed them),
# the compiled regexes and match results cached for the old ones are dropped.
_rules_regexes: frozenset[str] | None = None


def user_agent_rules_enabled(*, fresh: bool = False) -> tuple[Rule, ...]:
    global _rules_cache, _rules_regexes
    now = time.monotonic()
    if fresh or _rules_cache is None or now - _rules_cache[0] > RULES_TTL_S:
        rules = tuple(
            Rule(name=r.name, regex=r.regex, properties=dict(r.properties or {}))
            for r in UserAgentRule.objects.filter(enabled=True).order_by("position", "name")
        )
        regexes = frozenset(rule.regex for rule in rules)
        if regexes != _rules_regexes:
            rule_regex_caches_clear()
            _rules_regexes = regexes
        _rules_cache = (now, rules)
    return _rules_cache[1]


def rules_cache_clear() -> None:
    """The rules or the token reporters changed (registry.rules, registry.reporting, the Kazoo
    config import): read them again, and drop the compiled regexes cached for them at once."""
    global _rules_cache, _reporters_cache
    _rules_cache = None
    _reporters_cache = None
    rule_regex_caches_clear()


def rules_cache_clear_now_and_on_commit() -> None:
    """After a write to the rules or the reporters: this process reads them again at once and once
    the write commits; the consumer within RULES_TTL_S."""
    rules_cache_clear()
    transaction.on_commit(rules_cache_clear)


# The enabled token reporters' User-Agent regexes, as rules named after the reporters: every
# reg_success without a push object asks them, so they are cached like the rules.
_reporters_cache: tuple[float, tuple[Rule, ...]] | None = None


def token_reporter_user_agents() -> tuple[Rule, ...]:
    global _reporters_cache
    now = time.monotonic()
    if _reporters_cache is None or now - _reporters_cache[0] > RULES_TTL_S:
        reporters = TokenReporter.objects.filter(enabled=True).exclude(user_agent_regex="").order_by("slug")
        _reporters_cache = (now, tuple(Rule(name=r.slug, regex=r.user_agent_regex, properties={})
                                       for r in reporters.only("slug", "user_agent_regex")))
    return _reporters_cache[1]


def token_reporter_for_user_agent(*, user_agent: object, timeout: float) -> str | None:
    """The slug of the first enabled token reporter whose User-Agent regex matches (time-boxed, as
    a rule's), or None."""
    rules = token_reporter_user_agents()
    if not rules or not isinstance(user_agent, str):
        return None
    rule = rule_match(rules, user_agent, timeout=timeout)
    return rule.name if rule else None


@dataclass(frozen=True, slots=True)
class DeviceDigest:
    """What a reg_success needs to know about a stored device to tell whether it changed."""

    pk: int
    digest: str
    last_seen_at: datetime | None


def device_digests_get(*, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], DeviceDigest]:
    """The stored digest of each (account_id, device_id) that exists, in one query. Raw SQL on
    purpose: every reg_success asks this (each device every few minutes), and the ORM's query
    building costs several times the query itself."""
    if not keys:
        return {}
    table = Device._meta.db_table
    columns = "d.account_id, d.device_id, d.id, d.registration_digest, d.last_seen_at"
    if connection.vendor == "postgresql":
        # Two array parameters instead of 2N placeholders: less to adapt and to plan.
        sql = (
            f"SELECT {columns} FROM {table} d "  # noqa: S608 - fixed identifiers
            "JOIN unnest(%s::text[], %s::text[]) AS k(account_id, device_id) "
            "ON d.account_id = k.account_id AND d.device_id = k.device_id"
        )
        params: list[Any] = [[k[0] for k in keys], [k[1] for k in keys]]
    else:
        values = ", ".join(["(%s, %s)"] * len(keys))
        sql = f"SELECT {columns} FROM {table} d WHERE (d.account_id, d.device_id) IN (VALUES {values})"  # noqa: S608
        params = [part for key in keys for part in key]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    found = {}
    for account_id, device_id, pk, digest, last_seen in rows:
        if isinstance(last_seen, str):  # SQLite hands back text for raw queries
            last_seen = datetime.fromisoformat(last_seen)
        if last_seen is not None and timezone.is_naive(last_seen):
            last_seen = timezone.make_aware(last_seen, UTC)
        found[(account_id, device_id)] = DeviceDigest(pk=pk, digest=digest, last_seen_at=last_seen)
    return found


def devices_by_pk(*, pks: Collection[int]) -> dict[int, Device]:
    """Full rows of the devices a batch of registrations is about to change."""
    if not pks:
        return {}
    return {device.pk: device for device in Device.objects.filter(pk__in=list(pks)).order_by()}


def device_get(*, account_id: str, device_id: str) -> Device | None:
    # order_by(): no ORDER BY for a unique lookup.
    return next(iter(Device.objects.filter(account_id=account_id, device_id=device_id).order_by()[:1]), None)


def devices_sync_due(*, limit: int) -> list[Device]:
    """Devices whose push object waits to reach Kazoo and whose turn has come, oldest turn first."""
    return list(
        Device.objects.filter(
            sync_status__in=[SyncStatus.PENDING, SyncStatus.FAILED], sync_next_at__lte=timezone.now()
        ).order_by("sync_next_at")[:limit]
    )


def devices_waiting_sync() -> QuerySet[Device]:
    """Devices whose push object has not reached Kazoo yet (pending or failing), oldest change first."""
    return Device.objects.filter(sync_status__in=[SyncStatus.PENDING, SyncStatus.FAILED]).order_by(
        "push_changed_at", "pk"
    )


def token_devices_get(*, tokens: Collection[str]) -> dict[str, tuple[str, str]]:
    """(account_id, device_id) of the device holding each of these tokens active, in one query;
    the most recently seen device when several hold the same token.

    Plain SQL: the push lane asks this for every batch of outcomes, and compiling the ORM's join
    cost more CPU than the rest of the batch's writes together (~1 ms per call, measured)."""
    if not tokens:
        return {}
    owners: dict[str, tuple[str, str]] = {}
    tokens = list(tokens)
    token_table, device_table = PushToken._meta.db_table, Device._meta.db_table
    placeholders = ", ".join(["%s"] * len(tokens))
    sql = (f"SELECT t.token, d.account_id, d.device_id FROM {token_table} t "  # noqa: S608 - model identifiers
           f"JOIN {device_table} d ON d.id = t.device_id WHERE t.active AND t.token IN ({placeholders}) "
           "ORDER BY t.last_seen_at DESC, t.id DESC")
    with connection.cursor() as cursor:
        cursor.execute(sql, tokens)
        for token, account_id, device_id in cursor.fetchall():
            owners.setdefault(token, (account_id, device_id))
    return owners


_SIP_SCHEME = re.compile(r"^sips?:", re.IGNORECASE)


def aor_split(aor: str) -> tuple[str, str]:
    """`sip:user@realm` (Kamailio's X-KAZOO-AOR), `user@realm` or `<sip:user@realm;params>` ->
    (user, realm). Raises InvalidInput (code aor_invalid) for anything else."""
    text = (aor or "").strip()
    if text.startswith("<") and ">" in text:
        text = text[1:text.index(">")]
    text = _SIP_SCHEME.sub("", text.split(";", 1)[0].strip(), count=1)
    user, at, realm = text.rpartition("@")
    if not at or not user or not realm:
        raise InvalidInput(f"{aor!r} is not an AOR (sip:user@realm)", code="aor_invalid")
    return unquote(user), realm


def devices_for_account(*, username: str, realm: str) -> list[Device]:
    """The devices registered as username@realm (the realm case-insensitive), the most recently
    registered first."""
    return list(Device.objects.filter(username=username, realm__iexact=realm).order_by(
        F("last_registration_at").desc(nulls_last=True), "-pk"))


def device_list_for_aor(*, aor: str, scope: AccountScope = EVERY_ACCOUNT) -> list[Device]:
    """The devices registered as this AOR (SIP username + realm; the realm case-insensitive, as DNS
    names are) among the accounts of `scope`, with their tokens."""
    user, realm = aor_split(aor)
    devices = devices_in_scope(scope=scope).filter(username=user, realm__iexact=realm)
    return list(devices.prefetch_related("tokens"))


# --- Account scope: which devices and tokens a principal sees (tenancy.scope) ---------------------


def devices_in_scope(*, scope: AccountScope, queryset: QuerySet[Device] | None = None) -> QuerySet[Device]:
    """The devices of the scope's accounts (`queryset` narrowed, or all devices)."""
    return scope.rows(Device.objects.all() if queryset is None else queryset, account_field="account_id")


def push_tokens_in_scope(
    *, scope: AccountScope, queryset: QuerySet[PushToken] | None = None
) -> QuerySet[PushToken]:
    """The push tokens of the devices of the scope's accounts."""
    return scope.rows(PushToken.objects.all() if queryset is None else queryset, account_field="device__account_id")


def push_token_holders(*, token: str, scope: AccountScope) -> list[tuple[str, str]]:
    """(account_id, device_id) of the devices of the scope's accounts holding `token`, active ones
    first, then the most recently seen."""
    tokens = push_tokens_in_scope(scope=scope).filter(token=token).order_by("-active", "-last_seen_at", "-pk")
    return [(account_id, device_id) for account_id, device_id in
            tokens.values_list("device__account_id", "device__device_id")]
