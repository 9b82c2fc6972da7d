"""Bad messages over the real RabbitMQ: each one lands in the dead-letter queue with its reason,
the good ones published after them are handled, and the queue drains (nothing stuck, no crash loop)."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from django.conf import settings

from push.models import Delivery, DeliveryStatus
from registry.models import Device
from tests.amqp import broker_channel, consumer_running, dead_letters, publish
from tests.reliability import strategies as s

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.rabbitmq]


REG_KEY = "registration.success.acme%2Esip%2Eexample%2Ecom.user_k3j4h5"
PUSH_KEY = f"notification.push.apple.{s.APNS_TOKEN}"


def reg(**changes: Any) -> bytes:
    return json.dumps({**s.REG, "Msg-ID": uuid.uuid4().hex, **changes}).encode()


def push(**changes: Any) -> bytes:
    body = copy.deepcopy(s.PUSH)
    body.update({"Msg-ID": uuid.uuid4().hex, "Call-ID": uuid.uuid4().hex}, **changes)
    return json.dumps(body).encode()


def bad_messages() -> list[tuple[str, str, bytes, str, str | None, str]]:
    """(name, exchange, body, content type, content encoding, words expected in x-pusher-reason)."""
    limit = settings.PUSHER_MAX_MESSAGE_BYTES
    no_token = json.loads(push())
    del no_token["Token-ID"]
    return [
        ("not JSON", "registrar", b"{not json", "application/json", None, "not valid JSON"),
        ("invalid UTF-8", "registrar", b'{"Event-Name": "\xc3\x28"}', "application/json", None, "not valid JSON"),
        ("JSON array", "pushes", b"[1, 2, 3]", "application/json", None, "not an object"),
        ("too deep", "pushes", b"[" * 100_000 + b"]" * 100_000, "application/json", None, "not valid JSON"),
        ("gzip bomb", "registrar", s.gzip_bomb(limit), "application/json", "gzip", "inflates beyond"),
        ("oversized", "pushes", b" " * (limit + 1), "application/json", None, "exceeds"),
        ("Erlang terms", "registrar", reg(), "application/erlang", None, "application/erlang"),
        ("unknown encoding", "registrar", reg(), "application/json", "br", "not supported"),
        ("not gzip", "registrar", b"plain bytes", "application/json", "gzip", "not gzip"),
        ("broken Contact", "registrar", reg(Contact="<sip:broken"), "application/json", None, "Contact"),
        ("no Token-ID", "pushes", json.dumps(no_token).encode(), "application/json", None, "Token-ID"),
        ("Token-ID object", "pushes", push(**{"Token-ID": {"a": 1}}), "application/json", None, "Token-ID"),
    ]


def test_bad_messages_are_dead_lettered_with_their_reason_and_good_ones_still_flow(
    rules: None, apple_app: Any, apns_trusting_fake: Any
) -> None:
    bad = bad_messages()
    good_pushes = [push() for _ in range(3)]
    with consumer_running() as consumer, broker_channel() as channel:
        for _name, exchange, body, content_type, encoding, _words in bad:
            key = REG_KEY if exchange == "registrar" else PUSH_KEY
            publish(channel, exchange, key, body, content_type=content_type, content_encoding=encoding)
        publish(channel, "registrar", REG_KEY, reg())
        for body in good_pushes:
            publish(channel, "pushes", PUSH_KEY, body)
        total = len(bad) + 1 + len(good_pushes)
        consumer.wait_handled(total, timeout=30)
        letters = dead_letters(channel, consumer.config.dead_letter_queue, len(bad))
        left = channel.queue_declare(consumer.config.queue, passive=True).method.message_count

    assert left == 0, "messages left in the queue"
    assert consumer.worker.dead_lettered == len(bad)
    reasons = {body: headers for headers, body in letters}
    assert len(letters) == len(bad)
    for name, exchange, body, _content_type, _encoding, words in bad:
        headers = reasons.get(body)
        assert headers is not None, f"{name}: not in the dead-letter queue"
        assert words in headers["x-pusher-reason"], f"{name}: reason {headers['x-pusher-reason']!r}"
        assert headers["x-original-exchange"] == exchange
        assert not headers["x-pusher-reason"].startswith("internal error"), name

    assert Device.objects.get(device_id=s.REG["Custom-Channel-Vars"]["Authorizing-ID"]).push is not None
    assert Delivery.objects.filter(status=DeliveryStatus.SENT).count() == len(good_pushes)
    assert len(apns_trusting_fake.requests) == len(good_pushes)
