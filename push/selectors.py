"""Reads of push apps and credentials, related rows joined (the dashboard's and /metrics' included)."""

import json
from datetime import datetime, timedelta

from django.db import connections
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncMinute

from push.models import Credential, Delivery, PushApp
from tenancy.scope import AccountScope

EXPIRY_WARN_DAYS = 30


def push_apps_with_expiry() -> QuerySet[PushApp]:
    """Apps whose credential has an end date (certificates), credential joined."""
    return PushApp.objects.select_related("credential").filter(credential__not_after__isnull=False)


def push_apps_sendable() -> list[PushApp]:
    """Enabled apps with a credential they can send with, credential joined (the warm-up's list)."""
    apps = PushApp.objects.select_related("credential").filter(enabled=True, credential__isnull=False).order_by("pk")
    return [app for app in apps if app.credential is not None and not app.credential.cannot_send_reason()]


def credentials_expiring(*, now: datetime, days: int = EXPIRY_WARN_DAYS) -> QuerySet[Credential]:
    """Credentials ending within `days` (already expired ones first), their apps prefetched."""
    return (
        Credential.objects.filter(not_after__lte=now + timedelta(days=days))
        .prefetch_related("apps")
        .order_by("not_after")
    )


def credentials_in_use() -> QuerySet[Credential]:
    """Credentials an enabled push app uses, their apps prefetched (what the credential alerts watch)."""
    return Credential.objects.filter(apps__enabled=True).distinct().prefetch_related("apps").order_by("pk")


def delivery_counts(*, since: datetime) -> QuerySet:
    """Deliveries created since `since`, counted per (provider, status): rows of provider, status, n."""
    return (
        Delivery.objects.filter(created_at__gte=since)
        .values("provider", "status")
        .annotate(n=Count("id"))
        .order_by()
    )


def delivery_latencies(*, since: datetime, limit: int) -> QuerySet:
    """(provider, latency_ms) of the newest `limit` deliveries since `since` that have a latency."""
    return (
        Delivery.objects.filter(created_at__gte=since, latency_ms__isnull=False)
        .order_by("-created_at")
        .values_list("provider", "latency_ms")[:limit]
    )


def delivery_counts_per_minute(*, since: datetime) -> QuerySet:
    """Deliveries created since `since`, counted per (minute, status): rows of minute, status, n."""
    return (
        Delivery.objects.filter(created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute", "status")
        .annotate(n=Count("id"))
        .order_by()
    )


def deliveries_in_scope(*, scope: AccountScope, queryset: QuerySet[Delivery] | None = None) -> QuerySet[Delivery]:
    """The deliveries of the scope's accounts (their push_req's Account-ID); one that named no
    account is in no scope."""
    return scope.rows(Delivery.objects.all() if queryset is None else queryset, account_field="account_id")


# What a delivery's push_type holds besides an Apple app's own type: APNs' apns-push-type values
# pusher sends, and FCM's message kinds (push.services.policy).
DELIVERY_PUSH_TYPES = ("alert", "background", "voip", "data", "notification")


def delivery_push_types() -> list[str]:
    """The push types a delivery can carry, from the push apps (a few rows), not from the log."""
    own = PushApp.objects.exclude(push_type="").order_by().values_list("push_type", flat=True).distinct()
    return sorted({*DELIVERY_PUSH_TYPES, *own})


# Up to this many rows a list's count is exact; beyond, PostgreSQL's planner estimate. A COUNT(*)
# reads every row it counts: a second or more for an unfiltered delivery log of 10 million rows,
# on every page of the admin and the API. Counting to 10,001 costs a few milliseconds.
COUNT_EXACT_MAX = 10_000


def rows_count(queryset: QuerySet, *, exact_up_to: int | None = None) -> tuple[int, bool]:
    """(count, estimated) of a list: exact when at most `exact_up_to` (COUNT_EXACT_MAX) rows match;
    otherwise, on PostgreSQL, the planner's estimate of the query (never below exact_up_to + 1), so
    that the cost stays bounded however many rows there are. Other databases (SQLite) count in full."""
    if exact_up_to is None:
        exact_up_to = COUNT_EXACT_MAX
    capped = _count_capped(queryset, exact_up_to)
    if capped <= exact_up_to:
        return capped, False
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return queryset.count(), False
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return max(int(plan[0]["Plan"]["Plan Rows"]), exact_up_to + 1), True


def rows_exceed(queryset: QuerySet, *, limit: int | None = None) -> bool:
    """Whether more than `limit` (COUNT_EXACT_MAX) rows match: a count that stops at limit + 1."""
    limit = COUNT_EXACT_MAX if limit is None else limit
    return _count_capped(queryset, limit) > limit


def _count_capped(queryset: QuerySet, limit: int) -> int:
    return queryset.order_by()[: limit + 1].count()


# Indexed columns an operator pastes an id from (a log line, Kazoo, a phone): exact matches, which
# an index answers at any size, where a substring search reads the whole log.
DELIVERY_SEARCH_FIELDS = ("call_id", "msg_id", "account_id", "device_id", "token")


def deliveries_search(queryset: QuerySet[Delivery], *, term: str) -> QuerySet[Delivery]:
    """The deliveries whose Call-ID, Msg-ID, account id, device id or full token is exactly `term`."""
    term = term.strip()
    if not term:
        return queryset
    match = Q()
    for name in DELIVERY_SEARCH_FIELDS:
        match |= Q(**{name: term})
    return queryset.filter(match)
