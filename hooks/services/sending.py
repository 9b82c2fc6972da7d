"""The webhook sender: due deliveries are claimed (a lease, so one sender sends each), POSTed, and
recorded: delivered on a 2xx, else retried with exponential backoff and jitter until
PUSHER_WEBHOOK_MAX_ATTEMPTS attempts or PUSHER_WEBHOOK_MAX_AGE_S, then gave_up with the reason
logged. The consumer runs it in a thread of its own (kazoo.alerting), never on the push path;
`manage.py send_webhooks` runs the same; the admin's and the API's "retry now" and "send test
event" make one attempt through the same function."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import metrics
from core.errors import PusherError
from core.fields import UNDECRYPTABLE_REASON, is_undecryptable
from hooks import wire
from hooks.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEventType, WebhookSubscription
from hooks.transport import Poster, PostResult, webhook_poster

log = logging.getLogger(__name__)

RETRYABLE = (WebhookDeliveryStatus.PENDING, WebhookDeliveryStatus.FAILED)
# One receiver's turn per round: at most this many deliveries or seconds, so a slow receiver
# cannot hold the others back for long.
TURN_MAX_DELIVERIES = 200
TURN_MAX_S = 10.0
# Deliveries claimed (and their outcomes recorded) together: two commits per batch, not per delivery.
CLAIM_BATCH = 20


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    retry_s: float
    retry_max_s: float
    max_age_s: float
    timeout_s: float

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        return cls(max_attempts=settings.PUSHER_WEBHOOK_MAX_ATTEMPTS, retry_s=settings.PUSHER_WEBHOOK_RETRY_S,
                   retry_max_s=settings.PUSHER_WEBHOOK_RETRY_MAX_S, max_age_s=settings.PUSHER_WEBHOOK_MAX_AGE_S,
                   timeout_s=settings.PUSHER_WEBHOOK_TIMEOUT_S)

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery is the claimer's: one attempt's every step (connect, send,
        read) may take timeout_s, plus room for the database."""
        return timedelta(seconds=4 * self.timeout_s + 30)


@dataclass
class SendSummary:
    delivered: int = 0
    failed: int = 0
    gave_up: int = 0
    receivers_down: list[str] = field(default_factory=list)

    def as_line(self) -> str:
        line = f"{self.delivered} delivered, {self.failed} failed (will retry), {self.gave_up} gave up"
        if self.receivers_down:
            line += f"; not answering: {', '.join(self.receivers_down)}"
        return line


def _claim(delivery: WebhookDelivery, *, policy: RetryPolicy) -> bool:
    """Take `delivery` for one attempt, as it was read (status and due time unchanged since): its
    due time becomes the lease's end, so no other sender takes it meanwhile and, should this one
    die mid-attempt, it is due again then (at least once). A gave_up row taken for a manual retry
    counts as failed meanwhile."""
    status = WebhookDeliveryStatus.FAILED if delivery.status == WebhookDeliveryStatus.GAVE_UP else delivery.status
    lease_end = timezone.now() + policy.lease
    taken = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=delivery.status, next_attempt_at=delivery.next_attempt_at, attempts=delivery.attempts,
    ).update(status=status, next_attempt_at=lease_end, sending_until=lease_end)
    if taken:
        delivery.status = status
    return bool(taken)


def _attempt(delivery: WebhookDelivery, *, post: Poster, policy: RetryPolicy) -> WebhookDelivery:
    """One attempt of a claimed delivery; its outcome is set on it, for `_record` to write."""
    subscription = delivery.subscription
    if subscription is None:
        result = PostResult(None, "subscription deleted")
    elif is_undecryptable(subscription.secret):
        result = PostResult(None, f"not sent: the subscription's {UNDECRYPTABLE_REASON}")
    else:
        delivery_id = str(delivery.uuid)
        body = wire.request_body(delivery_id=delivery_id, event_type=delivery.event_type,
                                 created_at=delivery.created_at, data=delivery.payload)
        headers = wire.request_headers(secret=subscription.secret, timestamp=int(time.time()), body=body,
                                       event_type=delivery.event_type, delivery_id=delivery_id)
        result = post(subscription.url, body, headers)
    now = timezone.now()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_http_status = result.status
    if result.ok:
        delivery.status = WebhookDeliveryStatus.DELIVERED
        delivery.delivered_at, delivery.next_attempt_at, delivery.last_error = now, None, ""
    else:
        delivery.last_error = result.error[:500]
        age_s = (now - delivery.created_at).total_seconds()
        if subscription is None or delivery.attempts >= policy.max_attempts or age_s >= policy.max_age_s:
            delivery.status, delivery.next_attempt_at = WebhookDeliveryStatus.GAVE_UP, None
            origin = wire.url_origin(subscription.url) if subscription is not None else "-"
            log.warning("webhook %s (%s) to %r at %s gave up after %d attempt(s) over %.0f s: %s", delivery.uuid,
                        delivery.event_type, delivery.subscription_name, origin, delivery.attempts, age_s,
                        delivery.last_error)
        else:
            delivery.status = WebhookDeliveryStatus.FAILED
            delay = wire.retry_delay(delivery.attempts, base_s=policy.retry_s, max_s=policy.retry_max_s)
            delivery.next_attempt_at = now + timedelta(seconds=delay)
            log.info("webhook %s (%s) to %r failed, attempt %d of %d, next in %.0f s: %s", delivery.uuid,
                     delivery.event_type, delivery.subscription_name, delivery.attempts, policy.max_attempts, delay,
                     delivery.last_error)
    delivery.sending_until = None
    metrics.WEBHOOK_ATTEMPTS.labels(outcome=delivery.status).inc()
    return delivery


RECORDED = ["status", "attempts", "next_attempt_at", "sending_until", "last_attempt_at", "last_http_status",
            "last_error", "delivered_at"]


def _record(attempted: list[WebhookDelivery], *, released: list[WebhookDelivery], due_at: datetime) -> None:
    """Write the outcomes of a claim's attempts, and hand back (due at `due_at`, nothing counted)
    the deliveries of the claim not attempted: one transaction."""
    with transaction.atomic():
        for delivery in attempted:  # (one small UPDATE each: bulk_update's CASE per field costs more to build)
            outcome = {name: getattr(delivery, name) for name in RECORDED}
            WebhookDelivery.objects.filter(pk=delivery.pk).update(**outcome)
        if released:
            WebhookDelivery.objects.filter(pk__in=[d.pk for d in released]).update(
                next_attempt_at=due_at, sending_until=None)


def webhook_deliveries_send_due(*, now: datetime | None = None) -> SendSummary:
    """Send what is due, receiver by receiver (enabled subscriptions; oldest events first). A
    receiver that fails an attempt gets no more this round: its other due deliveries wait as long
    as the one that failed (no attempt counted), so a receiver that is down gets one request per
    retry step, not one per delivery."""
    now = now or timezone.now()
    policy = RetryPolicy.from_settings()
    summary = SendSummary()
    subscription_ids = list(
        WebhookDelivery.objects.filter(status__in=RETRYABLE, next_attempt_at__lte=now, subscription__enabled=True)
        .order_by().values_list("subscription_id", flat=True).distinct()
    )
    if not subscription_ids:
        return summary
    with webhook_poster(timeout_s=policy.timeout_s) as post:
        for subscription in WebhookSubscription.objects.filter(pk__in=subscription_ids).order_by("pk"):
            _turn(subscription, now=now, post=post, policy=policy, summary=summary)
    return summary


def _claim_due(subscription: WebhookSubscription, *, now: datetime, policy: RetryPolicy) -> list[WebhookDelivery]:
    """Take up to CLAIM_BATCH due deliveries of a subscription, oldest first, for this sender: one
    transaction (rows another sender holds locked are skipped on PostgreSQL; SQLite has one writer
    at a time). Their due time becomes the lease's end, as for `_claim`."""
    lease_end = timezone.now() + policy.lease
    due = WebhookDelivery.objects.filter(subscription=subscription, status__in=RETRYABLE, next_attempt_at__lte=now)
    with transaction.atomic():
        claimed = list(due.select_for_update(skip_locked=True).order_by("created_at", "pk")[:CLAIM_BATCH])
        WebhookDelivery.objects.filter(pk__in=[d.pk for d in claimed]).update(
            next_attempt_at=lease_end, sending_until=lease_end)
    for delivery in claimed:
        delivery.subscription = subscription
    return claimed


def _turn(subscription: WebhookSubscription, *, now: datetime, post: Poster, policy: RetryPolicy,
          summary: SendSummary) -> None:
    """One receiver's turn: claims of CLAIM_BATCH, each attempted in order and recorded together,
    until nothing is due, TURN_MAX_DELIVERIES or TURN_MAX_S, or the receiver fails an attempt: then
    the deliveries not attempted wait as long as the one that failed."""
    ends = time.monotonic() + TURN_MAX_S
    for _ in range(TURN_MAX_DELIVERIES // CLAIM_BATCH):
        claimed = _claim_due(subscription, now=now, policy=policy)
        attempted: list[WebhookDelivery] = []
        failure: WebhookDelivery | None = None
        for delivery in claimed:
            if failure is not None or time.monotonic() > ends:
                break
            attempted.append(_attempt(delivery, post=post, policy=policy))
            if delivery.status != WebhookDeliveryStatus.DELIVERED:
                failure = delivery
        wait_until = now
        if failure is not None:
            wait_until = failure.next_attempt_at or timezone.now() + timedelta(seconds=policy.retry_s)
        _record(attempted, released=claimed[len(attempted):], due_at=wait_until)
        for delivery in attempted:
            if delivery.status == WebhookDeliveryStatus.DELIVERED:
                summary.delivered += 1
            elif delivery.status == WebhookDeliveryStatus.GAVE_UP:
                summary.gave_up += 1
            else:
                summary.failed += 1
        if failure is not None:
            summary.receivers_down.append(subscription.name)
            # The others due, claimed or not, wait with it: one request per retry step.
            WebhookDelivery.objects.filter(subscription=subscription, status__in=RETRYABLE,
                                           next_attempt_at__lte=now).update(next_attempt_at=wait_until)
            return
        if len(claimed) < CLAIM_BATCH or time.monotonic() > ends:
            return


def webhook_delivery_retry(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """One attempt now, whatever the delivery's schedule (the admin's and the API's "retry now"): a
    row that gave up gets one more attempt, and gives up again if it fails. Raises PusherError
    for a delivered row, or one another sender is sending right now."""
    policy = RetryPolicy.from_settings()
    delivery = WebhookDelivery.objects.select_related("subscription").get(pk=delivery.pk)
    if delivery.status == WebhookDeliveryStatus.DELIVERED:
        raise PusherError(f"webhook delivery {delivery.uuid} was delivered already", code="webhook_delivered")
    busy = delivery.sending_until is not None and delivery.sending_until > timezone.now()
    if busy or not _claim(delivery, policy=policy):
        raise PusherError(f"webhook delivery {delivery.uuid} is being sent right now", code="webhook_busy")
    with webhook_poster(timeout_s=policy.timeout_s) as post:
        _attempt(delivery, post=post, policy=policy)
    _record([delivery], released=[], due_at=timezone.now())
    return delivery


def webhook_test_send(*, subscription: WebhookSubscription) -> WebhookDelivery:
    """A `webhook.test` event to this subscription (enabled or not), attempted now; the answer is
    in the delivery returned. Failed, it is retried like any other while the subscription is
    enabled."""
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        subscription=subscription, subscription_name=subscription.name, event_type=WebhookEventType.TEST,
        event_key=f"test:{uuid.uuid4()}",
        payload={"message": "a test event from pusher", "subscription": subscription.name},
        next_attempt_at=now, created_at=now,
    )
    return webhook_delivery_retry(delivery=delivery)
