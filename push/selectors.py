"""Reads of push apps and credentials, related rows joined (the dashboard's and /metrics' included)."""

from datetime import datetime, timedelta

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncMinute

from push.models import Credential, Delivery, PushApp

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
