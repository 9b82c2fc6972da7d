"""Input checks over the real consumer (issue 13): ids that are not Kazoo ids never reach a Crossbar
URL, push_req fields of the wrong JSON type are refused at once as the API refuses them, and a dead
letter keeps what its publisher put on the message."""

from __future__ import annotations

import copy
import json
import time
import uuid
from typing import Any

import pika
import pytest

from push.models import Delivery
from registry.models import Device, SyncStatus
from tests.amqp import broker_channel, consumer_running, dead_letters, publish, wait_for
from tests.reliability import strategies as s

# A vhost of their own: on "/" these messages would also reach the pusher queues of other runs.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.rabbitmq]

REG_KEY = "registration.success.acme%2Esip%2Eexample%2Ecom.user_k3j4h5"
PUSH_KEY = f"notification.push.apple.{s.APNS_TOKEN}"
ACCOUNT = s.REG["Custom-Channel-Vars"]["Account-ID"]
DEVICE = s.REG["Custom-Channel-Vars"]["Authorizing-ID"]


@pytest.fixture
def kazoo(settings: Any, fake_crossbar: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr("kazoo.sync._client", None)  # a fresh client: the fake forgot earlier tokens
    settings.KAZOO_CROSSBAR_URL = fake_crossbar.url
    settings.KAZOO_API_KEY = fake_crossbar.api_key
    return fake_crossbar


def letters(channel: Any, queue: str, count: int) -> list[tuple[dict[str, Any], bytes]]:
    """The dead letters, once `count` are there."""
    return dead_letters(channel, queue, count, timeout=15)


def reg(**ccvs: str) -> bytes:
    body = copy.deepcopy(s.REG)
    body["Msg-ID"] = uuid.uuid4().hex
    body["Custom-Channel-Vars"].update(ccvs)
    return json.dumps(body).encode()


def push(**changes: Any) -> bytes:
    body = copy.deepcopy(s.PUSH)
    body.update({"Msg-ID": uuid.uuid4().hex, "Call-ID": uuid.uuid4().hex}, **changes)
    return json.dumps(body).encode()


def test_an_authorizing_id_of_dot_dot_is_dead_lettered_and_never_reaches_crossbar(
    rules: None, kazoo: Any
) -> None:
    bad = reg(**{"Authorizing-ID": ".."})
    with consumer_running() as consumer, broker_channel() as channel:
        publish(channel, "registrar", REG_KEY, bad)
        publish(channel, "registrar", REG_KEY, reg())  # the good one after it still goes through
        consumer.wait_handled(2)
        assert wait_for(lambda: Device.objects.filter(sync_status=SyncStatus.SYNCED).exists())
        got = letters(channel, consumer.config.dead_letter_queue, 1)

    assert [(headers["x-pusher-reason"], body) for headers, body in got] == [
        ("Authorizing-ID '..' is not a Kazoo id (1 to 64 letters, digits, '-' or '_')", bad)
    ]
    assert list(Device.objects.values_list("account_id", "device_id")) == [(ACCOUNT, DEVICE)]
    # Only the good device's document was touched (a second PATCH clears keys an earlier test left
    # in the fake's copy of it); never the account document a '..' would have reached.
    paths = {r.path for r in kazoo.requests if r.method != "PUT"}
    assert paths == {f"/v2/accounts/{ACCOUNT}/devices/{DEVICE}"}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"Token-ID": 12345}, "push_req Token-ID must be a string, not a number"),
        ({"Token-ID": 1.5e300}, "push_req Token-ID must be a string, not a number"),
        ({"Token-ID": True}, "push_req Token-ID must be a string, not a boolean"),
        ({"Token-ID": ["a" * 64]}, "push_req Token-ID must be a string, not a list"),
        ({"Token-Type": 1}, "push_req Token-Type must be a string, not a number"),
        ({"Token-App": 42}, "push_req Token-App must be a string, not a number"),
        ({"Token-Type": "apple" + " " * 40}, "push_req Token-Type is longer than 32 characters"),
        ({"Token-App": "a" * 256}, "push_req Token-App is longer than 255 characters"),
    ],
)
def test_push_req_fields_of_the_wrong_type_are_dead_lettered_at_once(
    apple_app: Any, apns_trusting_fake: Any, changes: dict[str, Any], reason: str
) -> None:
    bad = push(**changes)
    with consumer_running() as consumer, broker_channel() as channel:
        started = time.monotonic()
        publish(channel, "pushes", PUSH_KEY, bad)
        consumer.wait_handled(1)
        took = time.monotonic() - started
        got = letters(channel, consumer.config.dead_letter_queue, 1)

    assert [(headers["x-pusher-reason"], body) for headers, body in got] == [(reason, bad)]
    assert took < 5, "refused at once, not retried"
    assert apns_trusting_fake.requests == [] and not Delivery.objects.exists()


def test_a_dead_letter_keeps_the_publishers_headers_and_properties() -> None:
    original = {"x-trace-id": "abc-123", "hops": 3, "nested": {"a": "b"}, "x-pusher-reason": "forged"}
    properties = pika.BasicProperties(
        content_type="application/json", content_encoding="identity", headers=original,
        message_id="m-1", correlation_id="c-1", reply_to="reply.queue", timestamp=1_700_000_000,
        app_id="kamailio-test",
    )
    with consumer_running() as consumer, broker_channel() as channel:
        channel.basic_publish("registrar", REG_KEY, b"{not json", properties)
        consumer.wait_handled(1)
        assert wait_for(lambda: channel.queue_declare(consumer.config.dead_letter_queue, passive=True)
                        .method.message_count == 1)
        method, got, body = channel.basic_get(consumer.config.dead_letter_queue, auto_ack=True)

    assert method is not None and body == b"{not json"
    headers = dict(got.headers)
    assert {key: headers[key] for key in ("x-trace-id", "hops", "nested")} == {
        "x-trace-id": "abc-123", "hops": 3, "nested": {"a": "b"}
    }
    assert headers["x-pusher-reason"].startswith("body is not valid JSON")  # pusher's own win
    assert headers["x-original-exchange"] == "registrar" and headers["x-original-routing-key"] == REG_KEY
    assert (got.content_type, got.content_encoding, got.message_id, got.correlation_id, got.reply_to,
            got.timestamp, got.app_id, got.delivery_mode) == (
        "application/json", "identity", "m-1", "c-1", "reply.queue", 1_700_000_000, "kamailio-test", 2)
