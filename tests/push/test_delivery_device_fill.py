"""Deliveries of Kamailio's push_req (no Account-ID / Endpoint-ID) get the token's device."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from push import services
from push.models import Delivery
from push.services import deliveries as store
from push.services import policy
from registry.models import Device, PushToken
from tests.push.pushreq import PUSH, TOKEN, push_req

pytestmark = pytest.mark.django_db

ACCOUNT = "3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
DEVICE = "8f7e6d5c4b3a29181716151413121110"
OTHER_TOKEN = "ab" * 32


def token_on_device(token: str, device_id: str, *, account_id: str = ACCOUNT, active: bool = True) -> Device:
    device, _ = Device.objects.get_or_create(account_id=account_id, device_id=device_id)
    PushToken.objects.create(device=device, token=token, token_type="apple", app="com.acme.phone.voip.prod",
                             active=active, last_seen_at=timezone.now())
    return device


def job(**changes):
    return policy.push_job_prepare(fields=push_req(**changes), source="amqp")


def test_kamailio_push_req_has_no_account_or_device():
    assert "Account-ID" not in PUSH["body"] and "Endpoint-ID" not in PUSH["body"]


def test_claim_batch_fills_account_and_device_from_the_token_in_one_query():
    token_on_device(TOKEN, DEVICE)
    token_on_device(OTHER_TOKEN, "11" * 16)
    token_on_device("cd" * 32, "22" * 16, active=False)  # a retired token names no device
    jobs = [
        job(**{"Msg-ID": "a"}),
        job(**{"Msg-ID": "b", "Token-ID": OTHER_TOKEN}),
        job(**{"Msg-ID": "c", "Token-ID": "cd" * 32}),
        job(**{"Msg-ID": "d", "Token-ID": "ef" * 32}),  # unknown token
        job(**{"Msg-ID": "e", "Account-ID": "99" * 16, "Endpoint-ID": "98" * 16}),  # named: kept
        job(**{"Msg-ID": "f", "Account-ID": "99" * 16}),  # another account than the token's: not filled
    ]

    with CaptureQueriesContext(connection) as queries:
        store.deliveries_claim(jobs)

    assert sum("registry_pushtoken" in q["sql"] for q in queries.captured_queries) == 1
    rows = {d.msg_id: (d.account_id, d.device_id) for d in Delivery.objects.all()}
    assert rows == {
        "a": (ACCOUNT, DEVICE),
        "b": (ACCOUNT, "11" * 16),
        "c": ("", ""),
        "d": ("", ""),
        "e": ("99" * 16, "98" * 16),
        "f": ("99" * 16, ""),
    }


def test_without_missing_ids_no_token_query():
    with CaptureQueriesContext(connection) as queries:
        store.deliveries_claim([job(**{"Msg-ID": "x", "Account-ID": ACCOUNT, "Endpoint-ID": DEVICE})])
    assert not any("registry_pushtoken" in q["sql"] for q in queries.captured_queries)


def test_most_recently_seen_device_wins_for_a_shared_token():
    token_on_device(TOKEN, "33" * 16)
    token_on_device(TOKEN, DEVICE)
    (delivery,) = store.deliveries_claim([job(**{"Msg-ID": "s"})])
    assert delivery is not None and (delivery.account_id, delivery.device_id) == (ACCOUNT, DEVICE)


def test_single_claim_path_fills_too(apple_app):
    token_on_device(TOKEN, DEVICE)
    delivery = services.push_request_handle(fields=push_req(**{"Msg-ID": "single"}), source="api")
    assert (delivery.account_id, delivery.device_id) == (ACCOUNT, DEVICE)
    delivery.refresh_from_db()
    assert (delivery.account_id, delivery.device_id) == (ACCOUNT, DEVICE)
