"""/api/v1/send's push_notify_aor: every device of an AOR is pushed at the same time."""

import time

import pytest
from django.utils import timezone

from push.models import DeliveryStatus
from push.services.notify import NOTIFY_INCOMING_CALL, Notification, push_notify_aor
from push.services.sending import PushRequest, push_requests_handle
from registry.models import Device, PushToken
from tests.fakes.apns import Answer
from tests.push.pushreq import push_req

pytestmark = pytest.mark.django_db

ACCOUNT = "3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
AOR = "sip:alice@acme.sip.example.com"
APP = "com.acme.phone.voip.prod"
SLOW_S = 0.6


def phone(device_id: str, token: str) -> Device:
    device = Device.objects.create(account_id=ACCOUNT, device_id=device_id, username="alice",
                                   realm="acme.sip.example.com")
    PushToken.objects.create(device=device, token=token, token_type="apple", app=APP, kind="voip",
                             last_seen_at=timezone.now())
    return device


def test_two_phones_of_an_aor_are_pushed_at_once_in_order(apple_app, apns_trusting_fake):
    phones = [phone("a1" * 16, "1a" * 32), phone("b2" * 16, "2b" * 32)]
    apns_trusting_fake.set_default(Answer.ok(delay=SLOW_S))
    started = time.monotonic()

    deliveries = push_notify_aor(aor=AOR, notification=Notification(kind=NOTIFY_INCOMING_CALL, payload={}))

    elapsed = time.monotonic() - started
    assert [d.device_id for d in deliveries] == [p.device_id for p in phones]
    assert [d.token for d in deliveries] == ["1a" * 32, "2b" * 32]
    assert all(d.status == DeliveryStatus.SENT for d in deliveries)
    first, second = sorted(apns_trusting_fake.requests, key=lambda r: r.received_at)
    # The second push reached the provider before the first was answered: they overlapped.
    assert second.received_at - first.received_at < SLOW_S / 2
    assert elapsed < 2 * SLOW_S


def test_results_keep_request_order_with_failures_and_duplicates_between(apple_app, apns_trusting_fake):
    apns_trusting_fake.set_default(Answer.ok(delay=0.2))
    requests = [
        PushRequest(fields=push_req(**{"Msg-ID": "one", "Token-ID": "1c" * 32}), source="api"),
        PushRequest(fields=push_req(**{"Msg-ID": "two", "Token-App": "com.unknown.app"}), source="api"),
        PushRequest(fields=push_req(**{"Msg-ID": "three", "Token-ID": "3c" * 32}), source="api"),
        PushRequest(fields=push_req(**{"Msg-ID": "one", "Token-ID": "1c" * 32}), source="api"),
    ]

    deliveries = push_requests_handle(requests=requests)

    assert [d.msg_id for d in deliveries] == ["one", "two", "three", "one"]
    assert [d.status for d in deliveries] == [
        DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SENT, DeliveryStatus.DUPLICATE,
    ]
    assert len(apns_trusting_fake.requests) == 2
