"""Events into the webhook outbox, and alerts: conditions raised once (their event queued, their
e-mail sent) and left alone until they clear.

Each domain reports its own events here (hooks knows none of them): registry a deactivated token in
the transaction that deactivates it; push its failed and expired pushes, read from the delivery log
off the push path, and its credentials' health; kazoo its consumers' outages. A queued event is a
WebhookDelivery row per subscription, written in the caller's transaction, so an event and the
change it reports commit (or roll back) together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from hooks.models import Alert, WebhookDelivery, WebhookSubscription
from hooks.services.subscriptions import webhook_subscriptions_for

log = logging.getLogger(__name__)

EMAIL_ATTEMPTS_MAX = 5


@dataclass(frozen=True)
class WebhookEvent:
    event_type: str
    key: str  # the event's identity: queued at most once per subscription
    data: dict[str, Any] = field(default_factory=dict)  # JSON: no secrets, tokens masked
    account_id: str = ""  # the account it concerns; "" for a platform event


def _account_matches(subscription: WebhookSubscription, account_id: str) -> bool:
    return not subscription.account_id or not account_id or subscription.account_id == account_id


def webhook_events_queue(*, subscription: WebhookSubscription, events: list[WebhookEvent],
                         now: datetime | None = None) -> int:
    """Queue events for one subscription, due at once; an event already queued for it (same key)
    is left as it is. Returns how many were offered."""
    now = now or timezone.now()
    rows = [
        WebhookDelivery(subscription=subscription, subscription_name=subscription.name, event_type=event.event_type,
                        event_key=event.key[:200], account_id=event.account_id[:64], payload=event.data,
                        next_attempt_at=now, created_at=now)
        for event in events if _account_matches(subscription, event.account_id)
    ]
    WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def webhook_event_record(*, event: WebhookEvent, now: datetime | None = None) -> int:
    """Queue `event` for every enabled subscription that chose its type (and whose account filter
    it passes), in the caller's transaction. Returns for how many."""
    now = now or timezone.now()
    return sum(webhook_events_queue(subscription=s, events=[event], now=now)
               for s in webhook_subscriptions_for(event_types={event.event_type}))


def alert_raise(*, key: str, event_type: str, summary: str, data: dict[str, Any], email_text: str = "",
                quiet: bool = False, now: datetime | None = None) -> bool:
    """Raise the alert `key` unless it is up already. Raised now: its event is queued for the
    subscriptions that chose `event_type`, and with `email_text` an e-mail goes to
    PUSHER_ALERT_EMAILS (now, and on the next checks while sending fails). `quiet` only marks it
    raised: a threshold passed together with a tighter one, which speaks for both. Returns whether
    it was raised now (by this call: of two processes checking at once, one raises it)."""
    if Alert.objects.filter(key=key, active=True).exists():
        return False  # up already: the common case, every round while the condition lasts
    now = now or timezone.now()
    summary = " ".join(summary.split())[:500]
    email_wanted = bool(email_text and settings.PUSHER_ALERT_EMAILS and not quiet)
    values: dict[str, Any] = {
        "event_type": event_type, "active": True, "summary": summary, "data": data, "raised_at": now,
        "cleared_at": None, "email_wanted": email_wanted, "email_text": email_text if email_wanted else "",
        "emailed_at": None, "email_attempts": 0, "email_error": "",
    }
    with transaction.atomic():
        if not Alert.objects.filter(key=key, active=False).update(**values):
            try:
                with transaction.atomic():  # a savepoint: the conflict must not break the outer transaction
                    Alert.objects.create(key=key, **values)
            except IntegrityError:
                return False  # raised meanwhile by another process
        if not quiet:
            webhook_event_record(event=WebhookEvent(event_type, f"alert:{key}:{now.isoformat()}", data), now=now)
    if not quiet:
        log.warning("alert raised: %s", summary)
    if email_wanted:
        alert_emails_send()
    return True


def alert_clear(*, key: str, event: WebhookEvent | None = None, now: datetime | None = None) -> bool:
    """The condition of alert `key` is over: the alert may be raised again. `event` (a recovery)
    is queued only when the alert was up. Returns whether it was up."""
    now = now or timezone.now()
    with transaction.atomic():
        cleared = Alert.objects.filter(key=key, active=True).update(active=False, cleared_at=now)
        if cleared and event is not None:
            webhook_event_record(event=event, now=now)
    if cleared:
        log.info("alert cleared: %s", key)
    return bool(cleared)


def alert_emails_send() -> int:
    """Send the alert e-mails still to go (through Django's mail settings, EMAIL_URL) to
    PUSHER_ALERT_EMAILS; a failure is logged and kept on the alert, and tried again on the next
    call, up to EMAIL_ATTEMPTS_MAX times. Returns how many were sent."""
    recipients = list(settings.PUSHER_ALERT_EMAILS)
    if not recipients:
        return 0
    sent = 0
    due = Alert.objects.filter(email_wanted=True, emailed_at__isnull=True, email_attempts__lt=EMAIL_ATTEMPTS_MAX)
    for alert in due.order_by("raised_at")[:50]:
        taken = Alert.objects.filter(pk=alert.pk, emailed_at__isnull=True, email_attempts=alert.email_attempts).update(
            email_attempts=F("email_attempts") + 1)
        if not taken:  # another process is sending it
            continue
        attempt = alert.email_attempts + 1
        try:
            send_mail(f"[pusher] {alert.summary}"[:250], alert.email_text, None, recipients)
        except Exception as exc:  # noqa: BLE001 - SMTP, DNS, TLS...: recorded, tried again next time
            error = f"{type(exc).__name__}: {exc}"[:500]
            Alert.objects.filter(pk=alert.pk).update(email_error=error)
            last = " (giving up)" if attempt >= EMAIL_ATTEMPTS_MAX else ""
            log.warning("alert e-mail %r not sent, attempt %d of %d%s: %s", alert.summary, attempt,
                        EMAIL_ATTEMPTS_MAX, last, error)
            continue
        Alert.objects.filter(pk=alert.pk).update(emailed_at=timezone.now(), email_error="")
        log.info("alert e-mail %r sent to %d address(es)", alert.summary, len(recipients))
        sent += 1
    return sent
