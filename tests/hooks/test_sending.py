"""The webhook sender against a real local receiver: signed requests, at least once, retries with
backoff, giving up with the reason logged, and a delivery log that keeps every row."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

from core import fields
from core.errors import PusherError
from hooks import services
from hooks.models import WebhookDelivery, WebhookSubscription
from hooks.services import WebhookEvent
from hooks.services.sending import RetryPolicy, _claim
from tests.hooks.receiver import Receiver

pytestmark = pytest.mark.django_db

SECRET = "whsec-0123456789-abcdefghij"


def subscribe(url: str, name: str = "ops", **kwargs: object) -> WebhookSubscription:
    values: dict = {"name": name, "url": url, "secret": SECRET, "event_types": ["consumer.down", "token.deactivated"]}
    values.update(kwargs)
    return services.webhook_subscription_create(**values)


def happen(key: str = "e1", *, event_type: str = "consumer.down", account: str = "") -> None:
    services.webhook_event_record(event=WebhookEvent(event_type, key, {"what": key}, account))


def send() -> services.SendSummary:
    return services.webhook_deliveries_send_due()


def only_row() -> WebhookDelivery:
    return WebhookDelivery.objects.get()


def test_a_delivery_is_signed_so_that_the_receiver_can_verify_it(receiver: Receiver) -> None:
    subscribe(receiver.url)
    happen("outage-1")

    summary = send()

    assert summary.delivered == 1
    row = only_row()
    assert (row.status, row.attempts, row.last_http_status, row.last_error) == ("delivered", 1, 200, "")
    assert row.delivered_at is not None and row.next_attempt_at is None
    [request] = receiver.received
    assert request.path == "/hooks/pusher"
    # What a receiver does: HMAC-SHA256 with the shared secret over "<X-Pusher-Timestamp>.<raw body>".
    timestamp = receiver.header(0, "X-Pusher-Timestamp")
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(receiver.header(0, "X-Pusher-Signature"), f"sha256={expected}")
    assert abs(int(timestamp) - time.time()) < 60
    assert receiver.header(0, "X-Pusher-Event") == "consumer.down"
    assert receiver.header(0, "X-Pusher-Delivery") == str(row.uuid)
    assert receiver.header(0, "Content-Type") == "application/json"
    body = json.loads(request.body)
    assert body == {"id": str(row.uuid), "type": "consumer.down", "created_at": row.created_at.isoformat(),
                    "data": {"what": "outage-1"}}
    assert SECRET.encode() not in request.body


def test_a_receiver_down_then_up_gets_it_after_retries(down_receiver: Receiver) -> None:
    subscribe(down_receiver.url)
    happen()

    send()
    send()
    row = only_row()
    assert (row.status, row.attempts, row.last_http_status) == ("failed", 2, None)
    assert "ConnectError" in row.last_error and row.next_attempt_at is not None

    down_receiver.start()
    summary = send()

    row.refresh_from_db()
    assert summary.delivered == 1
    assert (row.status, row.attempts, row.last_http_status, row.last_error) == ("delivered", 3, 200, "")
    assert len(down_receiver.received) == 1
    assert down_receiver.header(0, "X-Pusher-Delivery") == str(row.uuid)


def test_a_refusing_receiver_gets_the_same_delivery_again_until_it_answers_2xx(receiver: Receiver) -> None:
    receiver.answers.extend([503, 500])
    subscribe(receiver.url)
    happen()

    for _ in range(3):
        send()

    row = only_row()
    assert (row.status, row.attempts) == ("delivered", 3)
    assert [r.headers["X-Pusher-Delivery"] for r in receiver.received] == [str(row.uuid)] * 3
    # One body, each attempt signed with its own timestamp.
    assert len({r.body for r in receiver.received}) == 1


def test_an_always_down_receiver_is_given_up_with_the_reason_logged(down_receiver: Receiver, caplog) -> None:
    subscribe(down_receiver.url)
    for key in ("e1", "e2", "e3"):
        happen(key)

    with caplog.at_level(logging.INFO, logger="hooks"):
        for _ in range(4 * 3 + 2):  # four attempts each, one receiver turn per round while it is down
            send()

    rows = list(WebhookDelivery.objects.order_by("created_at", "pk"))
    assert len(rows) == 3  # the delivery log keeps every row
    assert [(r.status, r.attempts) for r in rows] == [("gave_up", 4)] * 3
    assert all("ConnectError" in r.last_error and r.next_attempt_at is None for r in rows)
    gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert len(gave_up) == 3 and all(r.levelno == logging.WARNING for r in gave_up)
    assert "after 4 attempt(s)" in gave_up[0].getMessage() and "ConnectError" in gave_up[0].getMessage()
    assert "http://127.0.0.1" in gave_up[0].getMessage() and "/hooks/pusher" not in gave_up[0].getMessage()
    assert SECRET not in caplog.text

    # Given up is final for the sender: no more attempts.
    down_receiver.start()
    assert send().delivered == 0 and not down_receiver.received


def test_a_delivery_older_than_the_max_age_gives_up_at_its_next_failure(down_receiver: Receiver, settings) -> None:
    subscribe(down_receiver.url)
    happen()
    WebhookDelivery.objects.update(created_at=timezone.now() - timedelta(hours=2))
    settings.PUSHER_WEBHOOK_MAX_AGE_S = 3600

    send()

    row = only_row()
    assert (row.status, row.attempts) == ("gave_up", 1)


def test_a_receiver_that_is_down_gets_one_request_per_retry_not_one_per_event(receiver: Receiver) -> None:
    receiver.default = 503
    subscribe(receiver.url)
    for n in range(5):
        happen(f"e{n}")

    summary = send()

    assert (summary.failed, summary.delivered, len(receiver.received)) == (1, 0, 1)
    failed = WebhookDelivery.objects.get(status="failed")
    assert failed.event_key == "e0" and failed.attempts == 1 and failed.last_http_status == 503
    assert "HTTP 503: receiver says no" in failed.last_error
    waiting = WebhookDelivery.objects.filter(status="pending")
    assert waiting.count() == 4
    assert {(w.attempts, w.next_attempt_at) for w in waiting} == {(0, failed.next_attempt_at)}


def test_one_receiver_down_does_not_hold_back_another(down_receiver: Receiver, receiver: Receiver) -> None:
    subscribe(down_receiver.url, name="down")
    subscribe(receiver.url, name="up")
    happen()

    summary = send()

    assert (summary.delivered, summary.failed, summary.receivers_down) == (1, 1, ["down"])
    assert len(receiver.received) == 1


def test_redirects_are_not_deliveries(receiver: Receiver) -> None:
    receiver.default = 302
    subscribe(receiver.url)
    happen()

    send()

    row = only_row()
    assert row.status == "failed" and row.last_http_status == 302
    assert "redirect" in row.last_error


def test_a_receiver_that_does_not_answer_in_time_is_a_failure(receiver: Receiver, settings) -> None:
    settings.PUSHER_WEBHOOK_TIMEOUT_S = 0.5
    receiver.delay_s = 3.0
    subscribe(receiver.url)
    happen()

    started = time.monotonic()
    send()
    waited = time.monotonic() - started

    row = only_row()
    assert row.status == "failed" and row.last_http_status is None
    assert "no answer within 0.5 s" in row.last_error
    assert waited < receiver.delay_s  # the sender did not wait for the slow answer


def test_a_sender_that_died_mid_attempt_leaves_the_delivery_due_again(receiver: Receiver) -> None:
    subscribe(receiver.url)
    happen()
    row = only_row()
    assert _claim(row, policy=RetryPolicy.from_settings())  # a sender took it, then died (never recorded)

    assert send().delivered == 0  # its lease holds: nobody else sends it meanwhile
    row.refresh_from_db()
    lease_end = row.next_attempt_at
    assert lease_end is not None and lease_end > timezone.now()

    summary = services.webhook_deliveries_send_due(now=lease_end + timedelta(seconds=1))

    assert summary.delivered == 1 and len(receiver.received) == 1


def test_retry_now_makes_one_more_attempt_whatever_the_schedule(down_receiver: Receiver, settings) -> None:
    settings.PUSHER_WEBHOOK_MAX_ATTEMPTS = 1
    subscribe(down_receiver.url)
    happen()
    send()
    row = only_row()
    assert row.status == "gave_up"

    again = services.webhook_delivery_retry(delivery=row)
    assert (again.status, again.attempts) == ("gave_up", 2)  # still down: gives up again, one attempt more

    down_receiver.start()
    again = services.webhook_delivery_retry(delivery=row)
    assert (again.status, again.attempts) == ("delivered", 3)
    with pytest.raises(PusherError, match="delivered already"):
        services.webhook_delivery_retry(delivery=row)


def test_retry_now_refuses_a_delivery_being_sent(receiver: Receiver) -> None:
    subscribe(receiver.url)
    happen()
    row = only_row()
    assert _claim(row, policy=RetryPolicy.from_settings())

    with pytest.raises(PusherError, match="being sent right now"):
        services.webhook_delivery_retry(delivery=row)
    assert not receiver.received


def test_a_disabled_subscription_keeps_its_deliveries_until_enabled(receiver: Receiver) -> None:
    subscription = subscribe(receiver.url)
    happen("before")
    services.webhook_subscription_update(subscription=subscription, enabled=False)
    happen("while disabled")  # not queued: the subscription is off

    assert send().delivered == 0 and WebhookDelivery.objects.count() == 1

    services.webhook_subscription_update(subscription=subscription, enabled=True)
    assert send().delivered == 1


def test_deleting_a_subscription_keeps_its_delivery_log(down_receiver: Receiver) -> None:
    subscription = subscribe(down_receiver.url)
    happen("sent")
    happen("waiting")
    down_receiver.start()
    send()
    down_receiver.stop()
    assert WebhookDelivery.objects.filter(status="delivered").count() == 2
    happen("never sent")

    services.webhook_subscription_delete(subscription=subscription)

    rows = {r.event_key: r for r in WebhookDelivery.objects.all()}
    assert len(rows) == 3 and all(r.subscription_id is None and r.subscription_name == "ops" for r in rows.values())
    assert (rows["never sent"].status, rows["never sent"].last_error) == ("gave_up", "subscription deleted")
    assert rows["sent"].status == "delivered"


def test_a_secret_no_key_decrypts_is_never_used_to_sign(receiver: Receiver, settings) -> None:
    subscribe(receiver.url)
    happen()
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    fields._fernet.cache_clear()
    try:
        send()
    finally:
        fields._fernet.cache_clear()

    row = only_row()
    assert row.status == "failed" and "cannot be decrypted" in row.last_error
    assert not receiver.received


def test_an_event_is_queued_once_per_subscription(receiver: Receiver) -> None:
    subscribe(receiver.url)
    happen("same")
    happen("same")

    assert WebhookDelivery.objects.count() == 1
