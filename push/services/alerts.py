"""What the push side tells operators through hooks (webhooks, alert e-mails): failed and expired
pushes, and credentials that are about to expire or cannot send.

Failed and expired pushes are read from the delivery log, not reported by the push path: the push
lane writes outcomes in batches on its store thread and acks after, and nothing is added there; a
subscription's events are queued by `push_outcomes_enqueue`, which the consumer's webhook thread
runs every few seconds. The log is the durable record, so an outcome written while no sender ran
(a restart, a crash) is still found when one runs again.

Each subscription keeps how far it has read (`push_scan_from`): every delivery created before it
was final when it was read. A delivery is not final while it is in flight (status queued, claimed
before the send), and a push that is never claimed (no app to send through) gets its row with its
outcome, at most LATE after it came in. So each round reads the failed and expired deliveries
created since the cursor, queues those not queued yet (looked up by key), and moves the cursor to
the oldest delivery still in flight or to LATE ago, whichever is older: a round reads again about
LATE's worth of failed deliveries, plus those behind a push still in flight. A queued row older
than ORPHANED (its consumer died and no redelivery took it over) holds nothing back.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from hooks.models import WebhookDelivery, WebhookEventType, WebhookSubscription
from hooks.services import (
    WebhookEvent,
    alert_clear,
    alert_raise,
    webhook_events_queue,
    webhook_subscription_scanned,
    webhook_subscriptions_for,
)
from push.models import Credential, Delivery, DeliveryStatus
from push.selectors import credentials_in_use
from push.services.policy import PUSH_WINDOW_MAX_S

log = logging.getLogger(__name__)

LATE = timedelta(seconds=60)
ORPHANED = timedelta(seconds=PUSH_WINDOW_MAX_S + 300)
PAGE = 500  # deliveries read per query
# Deliveries read per subscription per round; the rest on the next round. A backlog (outcomes
# written while no consumer ran) is caught up a slice per round, so the thread's CPU, which the
# push lane of the same process shares, stays a small part of a core.
ROUND_MAX = 2_000
STATUSES_OF_EVENT = {
    WebhookEventType.PUSH_FAILED: (DeliveryStatus.FAILED, DeliveryStatus.TOKEN_INVALID),
    WebhookEventType.PUSH_EXPIRED: (DeliveryStatus.EXPIRED,),
}
EVENT_OF_STATUS: dict[str, str] = {s: event for event, statuses in STATUSES_OF_EVENT.items() for s in statuses}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def push_event_data(delivery: Delivery) -> dict[str, Any]:
    """A delivery as a webhook tells it: no payload, the token masked."""
    return {
        "delivery": delivery.pk, "status": delivery.status, "reason": delivery.reason, "error": delivery.error[:300],
        "account": delivery.account_id, "device": delivery.device_id, "app": delivery.app_id,
        "provider": delivery.provider, "token": delivery.token_masked, "call_id": delivery.call_id,
        "http_status": delivery.http_status, "attempts": delivery.attempts, "source": delivery.source,
        "created_at": _iso(delivery.created_at), "finished_at": _iso(delivery.finished_at),
    }


def push_outcomes_enqueue(*, now: datetime | None = None, page: int = PAGE, round_max: int = ROUND_MAX) -> int:
    """Queue push.failed / push.expired for every subscription that chose them: the deliveries
    created since its cursor, oldest first, with one of those outcomes and not queued for it yet.
    Returns how many were queued."""
    now = now or timezone.now()
    oldest_in_flight = (
        Delivery.objects.filter(status=DeliveryStatus.QUEUED, created_at__gte=now - ORPHANED)
        .order_by("created_at").values_list("created_at", flat=True).first()
    )
    # Read before the deliveries themselves: whatever is older than this was final by then.
    settled = min(now - LATE, oldest_in_flight or now)
    return sum(_subscription_read(subscription, now=now, settled=settled, page=page, round_max=round_max)
               for subscription in webhook_subscriptions_for(event_types=set(STATUSES_OF_EVENT)))


def _subscription_read(subscription: WebhookSubscription, *, now: datetime, settled: datetime, page: int,
                       round_max: int) -> int:
    statuses = [s for event in subscription.event_types for s in STATUSES_OF_EVENT.get(event, ())]
    scan_from = subscription.push_scan_from or subscription.created_at
    deliveries = Delivery.objects.filter(status__in=statuses, created_at__gte=scan_from)
    if subscription.account_id:
        deliveries = deliveries.filter(account_id=subscription.account_id)
    queued, read, after = 0, 0, None
    while read < round_max:
        # Keyset pages on (created_at, pk): the (status, created_at) index, whatever the tables' statistics say.
        rows = deliveries if after is None else deliveries.filter(
            Q(created_at__gt=after[0]) | Q(created_at=after[0], pk__gt=after[1]))
        keys = list(rows.order_by("created_at", "pk").values_list("created_at", "pk")[:page])
        read += len(keys)
        if keys:
            queued += _queue_new(subscription, [pk for _, pk in keys], now=now)
            after = keys[-1]
        if len(keys) < page:
            webhook_subscription_scanned(subscription=subscription, until=max(scan_from, settled))
            return queued
    # Stopped short (a backlog): the next round goes on from here, reading this last instant again.
    assert after is not None
    webhook_subscription_scanned(subscription=subscription, until=max(scan_from, min(settled, after[0])))
    return queued


def _queue_new(subscription: WebhookSubscription, pks: list[int], *, now: datetime) -> int:
    keys = {pk: f"push:{pk}" for pk in pks}
    already = set(WebhookDelivery.objects.filter(subscription=subscription, event_key__in=keys.values())
                  .values_list("event_key", flat=True))
    new = [pk for pk, key in keys.items() if key not in already]
    if not new:
        return 0
    events = [WebhookEvent(EVENT_OF_STATUS[d.status], keys[d.pk], push_event_data(d), d.account_id)
              for d in Delivery.objects.filter(pk__in=new).order_by("created_at", "pk")]
    return webhook_events_queue(subscription=subscription, events=events, now=now)


def _credential_data(credential: Credential, apps: list[str]) -> dict[str, Any]:
    return {
        "credential": {"id": credential.pk, "name": credential.name, "kind": credential.kind,
                       "not_after": _iso(credential.not_after), "days_to_expiry": credential.days_to_expiry},
        "apps": apps,
    }


def credential_alerts_check(*, now: datetime | None = None) -> None:
    """For each credential an enabled push app uses: `credential.unusable` while it cannot send
    (raised once, again after it was fixed and broke again), and `credential.expiring` once per
    threshold of PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS it passes. A credential first seen past
    several thresholds raises the tightest one, which speaks for the others. Both e-mail
    PUSHER_ALERT_EMAILS."""
    now = now or timezone.now()
    thresholds = sorted(settings.PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS, reverse=True)
    for credential in credentials_in_use():
        apps = sorted(str(app) for app in credential.apps.all() if app.enabled)
        data = _credential_data(credential, apps)
        unusable_key = f"credential.unusable:{credential.pk}"
        reason = credential.cannot_send_reason()
        if reason:
            summary = f"credential {credential.name!r} cannot send: {reason}"
            alert_raise(key=unusable_key, event_type=WebhookEventType.CREDENTIAL_UNUSABLE, summary=summary,
                        data={**data, "reason": reason}, email_text=_email_text(summary, apps), now=now)
            continue
        alert_clear(key=unusable_key, now=now)
        if credential.not_after is None:
            continue
        days_left = (credential.not_after - now).total_seconds() / 86400
        passed = [days for days in thresholds if days_left <= days]
        if not passed:
            continue
        stamp = f"{credential.pk}:{credential.not_after:%Y%m%dT%H%M%S}"  # a renewed credential starts afresh
        for days in passed[:-1]:
            alert_raise(key=f"credential.expiring:{stamp}:{days}", event_type=WebhookEventType.CREDENTIAL_EXPIRING,
                        summary=f"credential {credential.name!r} expires within {days} days", data=data, quiet=True,
                        now=now)
        tightest = passed[-1]
        summary = (f"credential {credential.name!r} expires on {credential.not_after:%Y-%m-%d %H:%M} UTC, "
                   f"in {days_left:.0f} day(s)")
        alert_raise(key=f"credential.expiring:{stamp}:{tightest}", event_type=WebhookEventType.CREDENTIAL_EXPIRING,
                    summary=summary, data={**data, "threshold_days": tightest},
                    email_text=_email_text(summary, apps), now=now)


def _email_text(summary: str, apps: list[str]) -> str:
    return (f"{summary[0].upper()}{summary[1:]}.\n\nUsed by: {', '.join(apps) or 'no enabled push app'}.\n\n"
            "Upload a new one in the admin (Credentials) or with PATCH /api/v1/credentials/<id>/.\n")
