"""Which events reach a subscription: failed and expired pushes read from the delivery log (each once,
none from before the subscription, none lost to a push still in flight), deactivated tokens queued
with the deactivation, and the account filter."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from hooks import services
from hooks.models import WebhookDelivery, WebhookSubscription
from push.models import Delivery, DeliveryStatus
from push.services.alerts import LATE, ORPHANED, push_outcomes_enqueue
from push.services.sending import token_dead
from registry.models import Device, PushToken
from registry.services import push_token_deactivate
from tests.hooks.receiver import Receiver

pytestmark = pytest.mark.django_db

TOKEN = "5f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
ACCOUNT_A = "a" * 32
ACCOUNT_B = "b" * 32


def subscribe(name: str = "ops", events: tuple[str, ...] = ("push.failed", "push.expired"),
              **kwargs: object) -> WebhookSubscription:
    return services.webhook_subscription_create(name=name, url="http://127.0.0.1:9/in", secret="x" * 20,
                                                event_types=list(events), **kwargs)


def delivery(status: str, *, account: str = ACCOUNT_A, ago_s: float = 0.0, **kwargs: object) -> Delivery:
    values: dict = {"created_at": timezone.now() - timedelta(seconds=ago_s), "source": "amqp", "status": status,
                    "account_id": account, "device_id": "d" * 32, "app_id": "com.acme.phone.voip.prod",
                    "provider": "apple", "token": TOKEN, "token_type": "apple", "call_id": f"call-{status}",
                    "reason": "" if status == "sent" else "BadDeviceToken", "attempts": 1}
    if status != DeliveryStatus.QUEUED:
        values["finished_at"] = timezone.now()
    values.update(kwargs)
    return Delivery.objects.create(**values)


def queued() -> dict[str, str]:
    """event_key -> event_type of the webhook deliveries queued."""
    return dict(WebhookDelivery.objects.values_list("event_key", "event_type"))


def test_failed_and_expired_pushes_are_queued_once_each() -> None:
    subscribe()
    failed = delivery(DeliveryStatus.FAILED)
    dead = delivery(DeliveryStatus.TOKEN_INVALID)
    expired = delivery(DeliveryStatus.EXPIRED)
    for status in (DeliveryStatus.SENT, DeliveryStatus.DUPLICATE, DeliveryStatus.QUEUED):
        delivery(status)

    assert push_outcomes_enqueue() == 3
    assert push_outcomes_enqueue() == 0  # read again, queued already

    assert queued() == {f"push:{failed.pk}": "push.failed", f"push:{dead.pk}": "push.failed",
                        f"push:{expired.pk}": "push.expired"}
    data = WebhookDelivery.objects.get(event_key=f"push:{failed.pk}").payload
    assert data["token"] == "5f1e2d…e1f0" and TOKEN not in json.dumps(data)
    assert (data["delivery"], data["status"], data["reason"], data["account"]) == (
        failed.pk, "failed", "BadDeviceToken", ACCOUNT_A)


def test_a_subscription_gets_only_the_events_it_chose() -> None:
    subscribe(events=("push.expired",))
    delivery(DeliveryStatus.FAILED)
    expired = delivery(DeliveryStatus.EXPIRED)

    push_outcomes_enqueue()

    assert queued() == {f"push:{expired.pk}": "push.expired"}


def test_an_account_filter_keeps_other_accounts_out() -> None:
    subscribe(account_id=ACCOUNT_B)
    delivery(DeliveryStatus.FAILED, account=ACCOUNT_A)
    theirs = delivery(DeliveryStatus.FAILED, account=ACCOUNT_B)

    push_outcomes_enqueue()

    assert queued() == {f"push:{theirs.pk}": "push.failed"}


def test_pushes_from_before_the_subscription_are_not_sent() -> None:
    delivery(DeliveryStatus.FAILED, ago_s=5)
    subscribe()

    assert push_outcomes_enqueue() == 0


@pytest.mark.parametrize("change", ["events", "enabled"])
def test_push_events_start_when_chosen_or_enabled_not_before(change: str) -> None:
    if change == "events":
        subscription = subscribe(events=("consumer.down",))
    else:
        subscription = subscribe()
        services.webhook_subscription_update(subscription=subscription, enabled=False)
    delivery(DeliveryStatus.FAILED)  # while the subscription did not want it
    push_outcomes_enqueue()

    if change == "events":
        services.webhook_subscription_update(subscription=subscription, event_types=["push.failed"])
    else:
        services.webhook_subscription_update(subscription=subscription, enabled=True)
    now_wanted = delivery(DeliveryStatus.FAILED, ago_s=-1)

    push_outcomes_enqueue()
    assert queued() == {f"push:{now_wanted.pk}": "push.failed"}


def test_a_push_in_flight_at_one_scan_is_queued_when_it_fails() -> None:
    subscribe()
    in_flight = delivery(DeliveryStatus.QUEUED)
    assert push_outcomes_enqueue() == 0

    Delivery.objects.filter(pk=in_flight.pk).update(status=DeliveryStatus.FAILED, finished_at=timezone.now())

    assert push_outcomes_enqueue() == 1
    assert queued() == {f"push:{in_flight.pk}": "push.failed"}


def test_the_log_is_read_in_pages_and_the_cursor_moves_to_what_has_settled() -> None:
    subscription = subscribe()
    for n in range(5):
        delivery(DeliveryStatus.FAILED, ago_s=-n)  # created after the subscription, oldest first
    later = timezone.now() + timedelta(minutes=5)

    assert push_outcomes_enqueue(now=later, page=2) == 5
    assert push_outcomes_enqueue(now=later, page=2) == 0

    subscription.refresh_from_db()
    assert subscription.push_scan_from == later - LATE  # nothing in flight: LATE behind the round


def test_a_backlog_longer_than_a_round_goes_on_next_round() -> None:
    subscription = subscribe()
    rows = [delivery(DeliveryStatus.FAILED, ago_s=-n) for n in range(5)]
    later = timezone.now() + timedelta(minutes=5)

    counts = [push_outcomes_enqueue(now=later, page=2, round_max=2) for _ in range(5)]

    # Each round after the first reads the last instant of the one before again (queued already).
    assert counts == [2, 1, 1, 1, 0] and len(queued()) == 5
    subscription.refresh_from_db()
    assert subscription.push_scan_from == later - LATE
    assert rows[-1].created_at < subscription.push_scan_from


def test_the_cursor_stays_behind_a_push_in_flight() -> None:
    subscription = subscribe()
    in_flight = delivery(DeliveryStatus.QUEUED, ago_s=-1)
    delivery(DeliveryStatus.FAILED, ago_s=-2)
    later = timezone.now() + timedelta(minutes=5)

    assert push_outcomes_enqueue(now=later) == 1
    subscription.refresh_from_db()
    assert subscription.push_scan_from == in_flight.created_at

    Delivery.objects.filter(pk=in_flight.pk).update(status=DeliveryStatus.EXPIRED, finished_at=later)
    assert push_outcomes_enqueue(now=later) == 1
    assert queued()[f"push:{in_flight.pk}"] == "push.expired"
    subscription.refresh_from_db()
    assert subscription.push_scan_from == later - LATE


def test_a_push_left_in_flight_by_a_dead_consumer_holds_nothing_back() -> None:
    subscription = subscribe()
    delivery(DeliveryStatus.QUEUED, ago_s=-1)  # its consumer was SIGKILLed; nobody took it over
    much_later = timezone.now() + ORPHANED + timedelta(minutes=5)

    push_outcomes_enqueue(now=much_later)

    subscription.refresh_from_db()
    assert subscription.push_scan_from == much_later - LATE


def device_with_token() -> PushToken:
    device = Device.objects.create(account_id=ACCOUNT_A, device_id="d" * 32, username="1001", realm="acme.example")
    return PushToken.objects.create(device=device, token=TOKEN, token_type="apple", app="com.acme.phone",
                                    last_seen_at=timezone.now())


def test_a_deactivated_token_is_queued_with_the_deactivation() -> None:
    subscribe(events=("token.deactivated",))
    token = device_with_token()

    push_token_deactivate(token=token, reason="lost phone")

    row = WebhookDelivery.objects.get()
    assert row.event_type == "token.deactivated" and row.account_id == ACCOUNT_A
    assert row.payload["token"] == "5f1e2d…e1f0" and row.payload["reason"] == "lost phone"
    assert TOKEN not in json.dumps(row.payload)


def test_a_deactivation_rolled_back_queues_nothing() -> None:
    subscribe(events=("token.deactivated",))
    token = device_with_token()

    with pytest.raises(RuntimeError), transaction.atomic():
        push_token_deactivate(token=token, reason="lost phone")
        raise RuntimeError("the caller's transaction fails")

    assert not WebhookDelivery.objects.exists()


def test_a_token_the_provider_says_is_dead_is_reported(receiver: Receiver) -> None:
    services.webhook_subscription_create(name="ops", url=receiver.url, secret="x" * 20,
                                         event_types=["token.deactivated"])
    device_with_token()

    token_dead(token=TOKEN, reason="apple answered 410 Unregistered")
    services.webhook_deliveries_send_due()

    [request] = receiver.received
    body = json.loads(request.body)
    assert body["type"] == "token.deactivated"
    assert body["data"]["reason"] == "apple answered 410 Unregistered" and body["data"]["account"] == ACCOUNT_A


def test_a_failed_push_reaches_the_receiver(receiver: Receiver) -> None:
    services.webhook_subscription_create(name="ops", url=receiver.url, secret="x" * 20, event_types=["push.failed"])
    failed = delivery(DeliveryStatus.FAILED, ago_s=-1)

    push_outcomes_enqueue()
    services.webhook_deliveries_send_due()

    [request] = receiver.received
    body = json.loads(request.body)
    assert body["type"] == "push.failed" and body["data"]["delivery"] == failed.pk
    assert body["data"]["call_id"] == "call-failed" and TOKEN.encode() not in request.body
