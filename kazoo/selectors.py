"""Reads of the consumers' state (their heartbeat rows) and of the devices due a drift check."""

from datetime import datetime, timedelta

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from kazoo.models import ConsumerStatus
from registry.models import Device, SyncStatus

CONSUMER_FRESH = timedelta(seconds=30)


def consumers_alive(*, now: datetime) -> QuerySet[ConsumerStatus]:
    """Consumer processes whose heartbeat (every 5 s) is recent."""
    return ConsumerStatus.objects.filter(updated_at__gte=now - CONSUMER_FRESH).order_by("name")


def consumers_connected(*, names: list[str]) -> set[str]:
    """Which of these consumer processes (host:pid) said, in a recent heartbeat, that they consume."""
    fresh = timezone.now() - CONSUMER_FRESH
    return set(ConsumerStatus.objects.filter(name__in=names, connected=True, updated_at__gte=fresh)
               .values_list("name", flat=True))


def consumer_last_connected() -> datetime | None:
    """When a consumer last said, in a heartbeat, that it consumes; None when none ever did."""
    return ConsumerStatus.objects.filter(last_connected_at__isnull=False).order_by("-last_connected_at").values_list(
        "last_connected_at", flat=True).first()


def consumers_recent(*, limit: int = 10) -> list[ConsumerStatus]:
    """The consumers' newest heartbeat rows (alive or not)."""
    return list(ConsumerStatus.objects.order_by("-updated_at")[:limit])


def devices_reconcile_due(*, limit: int | None, account_id: str | None = None) -> list[Device]:
    """Devices whose push object Kazoo should hold as pusher does (one set, or one cleared by
    pusher), in step as far as pusher knows (synced, or kept locally): the least recently checked
    first, never-checked ones before all. Devices waiting to sync are left to the sync loop."""
    devices = Device.objects.filter(
        Q(push__isnull=False) | Q(push_changed_at__isnull=False),
        sync_status__in=[SyncStatus.SYNCED, SyncStatus.LOCAL],
    )
    if account_id is not None:
        devices = devices.filter(account_id=account_id)
    devices = devices.select_related("reconcile").order_by(F("reconcile__checked_at").asc(nulls_first=True), "pk")
    return list(devices if limit is None else devices[:limit])
