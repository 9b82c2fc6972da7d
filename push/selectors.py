"""Reads of push apps and credentials, related rows joined (the dashboard's and /metrics' included)."""

from datetime import datetime, timedelta

from django.db.models import QuerySet

from push.models import Credential, PushApp

EXPIRY_WARN_DAYS = 30


def push_apps_with_expiry() -> QuerySet[PushApp]:
    """Apps whose credential has an end date (certificates), credential joined."""
    return PushApp.objects.select_related("credential").filter(credential__not_after__isnull=False)


def credentials_expiring(*, now: datetime, days: int = EXPIRY_WARN_DAYS) -> QuerySet[Credential]:
    """Credentials ending within `days` (already expired ones first), their apps prefetched."""
    return (
        Credential.objects.filter(not_after__lte=now + timedelta(days=days))
        .prefetch_related("apps")
        .order_by("not_after")
    )
