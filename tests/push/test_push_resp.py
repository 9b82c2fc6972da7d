"""Legacy push_resp for 2015-era Kamailio configs (blocking kazoo_query), over the real RabbitMQ."""

import copy
import json
import time
import uuid

import pytest

from tests.amqp import broker_channel, consumer_running, publish, sample

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.rabbitmq]

LEGACY = sample("push_req_kamailio_2015_legacy.json")
REG = sample("reg_success_kamailio_master.json")


def get_one(channel, queue, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return properties, json.loads(body)
        time.sleep(0.05)
    return None, None


@pytest.mark.parametrize("enabled", [True, False])
def test_push_resp_echoes_msg_id_to_server_id_when_the_device_registers(settings, acme_rule, apple_app, enabled):
    settings.PUSHER_LEGACY_PUSH_RESP = enabled
    server_id = f"kamailio@kam1.example.com-<{uuid.uuid4().hex[:6]}>-script-17"
    push = copy.deepcopy(LEGACY["body"])
    push.update({"Server-ID": server_id, "Token-App": "com.acme.phone.voip.prod", "Msg-ID": uuid.uuid4().hex})
    with consumer_running() as consumer, broker_channel() as channel:
        reply_queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(reply_queue, "targeted", routing_key=server_id)
        publish(channel, "pushes", LEGACY["amqp"]["routing_key"], push)
        consumer.wait_handled(1)
        publish(channel, REG["amqp"]["exchange"], REG["amqp"]["routing_key"], REG["body"])
        publish(channel, REG["amqp"]["exchange"], REG["amqp"]["routing_key"], REG["body"])  # answered once
        consumer.wait_handled(3)
        properties, answer = get_one(channel, reply_queue, timeout=3.0 if enabled else 1.0)
        second, _ = get_one(channel, reply_queue, timeout=0.5)
    if not enabled:
        assert answer is None  # current Kamailio waits for nothing: no reply by default
        return
    assert properties.content_type == "application/json"
    assert answer["Event-Category"] == "notification" and answer["Event-Name"] == "push_resp"
    assert answer["Msg-ID"] == push["Msg-ID"] and answer["Token-ID"] == push["Token-ID"]
    assert second is None
