"""The registration path over the real RabbitMQ: reg_success published exactly as Kamailio does."""

import copy
import gzip
import json
import time

import pytest

from registry.models import Device, PushToken, SyncStatus
from tests.amqp import broker_channel, consumer_running, dead_letters, publish, sample, wait_for
from tests.vhost import rabbitmqctl, vhost_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.rabbitmq]

REG = sample("reg_success_kamailio_master.json")
DEVICE_PUSH = sample("device_push_object.json")["doc"]["push"]
ACCOUNT = REG["body"]["Custom-Channel-Vars"]["Account-ID"]
DEVICE = REG["body"]["Custom-Channel-Vars"]["Authorizing-ID"]


@pytest.fixture
def kazoo(settings, fake_crossbar, monkeypatch):
    # A fresh client: the fake forgets the auth tokens of earlier tests.
    monkeypatch.setattr("kazoo.sync._client", None)
    settings.KAZOO_CROSSBAR_URL = fake_crossbar.url
    settings.KAZOO_API_KEY = fake_crossbar.api_key
    return fake_crossbar


def publish_reg(channel, body=None, **kwargs):
    publish(channel, REG["amqp"]["exchange"], REG["amqp"]["routing_key"], body or REG["body"], **kwargs)


def patches(fake):
    return [r for r in fake.requests if r.method == "PATCH"]


def test_sample_reg_success_stores_push_object_and_reaches_kazoo(acme_rule, kazoo):
    with consumer_running() as consumer, broker_channel() as channel:
        publish_reg(channel)
        consumer.wait_handled(1)
        device = Device.objects.get(account_id=ACCOUNT, device_id=DEVICE)
        assert device.push == DEVICE_PUSH
        assert device.username == "user_k3j4h5" and device.realm == "acme.sip.example.com"
        token = PushToken.objects.get(device=device)
        assert (token.token, token.token_type, token.app, token.active) == (
            DEVICE_PUSH["Token-ID"], "apple", "com.acme.phone.voip.prod", True,
        )
        assert wait_for(lambda: Device.objects.get(pk=device.pk).sync_status == SyncStatus.SYNCED)
    assert kazoo.devices[(ACCOUNT, DEVICE)]["push"] == DEVICE_PUSH
    assert len(patches(kazoo)) == 1


def test_redelivered_registration_changes_nothing(acme_rule, kazoo):
    with consumer_running() as consumer, broker_channel() as channel:
        publish_reg(channel)
        consumer.wait_handled(1)
        assert wait_for(lambda: Device.objects.get(device_id=DEVICE).sync_status == SyncStatus.SYNCED)
        before = Device.objects.values().get(device_id=DEVICE)
        for _ in range(3):
            publish_reg(channel)
        consumer.wait_handled(4)
        time.sleep(0.3)
    assert Device.objects.count() == 1 and PushToken.objects.count() == 1
    assert Device.objects.values().get(device_id=DEVICE) == before
    assert len(patches(kazoo)) == 1


def test_changed_token_rewrites_push_object_and_retires_old_token(acme_rule):
    body = copy.deepcopy(REG["body"])
    body["Contact"] = body["Contact"].replace(DEVICE_PUSH["Token-ID"], "ab" * 32)
    with consumer_running() as consumer, broker_channel() as channel:
        publish_reg(channel)
        publish_reg(channel, body)
        consumer.wait_handled(2)
    device = Device.objects.get(device_id=DEVICE)
    assert device.push["Token-ID"] == "ab" * 32
    assert device.sync_status == SyncStatus.LOCAL  # Kazoo not configured: stored locally only
    old = PushToken.objects.get(token=DEVICE_PUSH["Token-ID"])
    assert not old.active and old.deactivated_reason


def test_unregister_never_creates_a_push_object(acme_rule):
    body = copy.deepcopy(REG["body"])
    body.update({"Status": "Unregistered", "Expires": 0})
    with consumer_running() as consumer, broker_channel() as channel:
        publish_reg(channel, body)
        consumer.wait_handled(1)
    assert not Device.objects.exists()


def test_gzip_body_and_string_numbers_accepted(acme_rule):
    body = copy.deepcopy(REG["body"])
    body.update({"Expires": "600", "Event-Timestamp": "1732700000"})
    with consumer_running() as consumer, broker_channel() as channel:
        publish_reg(channel, gzip.compress(json.dumps(body).encode()), content_encoding="gzip")
        consumer.wait_handled(1)
    assert Device.objects.get(device_id=DEVICE).push == DEVICE_PUSH


@pytest.mark.parametrize(
    "poison, reason",
    [
        (b"{not json", "not valid JSON"),
        (json.dumps({**REG["body"], "Contact": "<sip:broken"}).encode(), "Contact"),
        (json.dumps([1, 2, 3]).encode(), "not an object"),
    ],
)
def test_poison_message_is_dead_lettered_and_the_next_one_handled(acme_rule, poison, reason):
    with consumer_running() as consumer, broker_channel() as channel:
        publish_reg(channel, poison)
        publish_reg(channel)
        consumer.wait_handled(2)
        assert Device.objects.get(device_id=DEVICE).push == DEVICE_PUSH
        letters = dead_letters(channel, consumer.config.dead_letter_queue, 1)
    assert len(letters) == 1
    headers, body = letters[0]
    assert body == poison
    assert reason in headers["x-pusher-reason"]
    assert headers["x-original-exchange"] == "registrar"


def test_wrong_content_type_is_dead_lettered(acme_rule):
    with consumer_running() as consumer, broker_channel() as channel:
        publish_reg(channel, content_type="application/erlang")
        consumer.wait_handled(1)
        letters = dead_letters(channel, consumer.config.dead_letter_queue, 1)
    assert len(letters) == 1 and "application/erlang" in letters[0][0]["x-pusher-reason"]


def test_consumer_reconnects_after_connections_are_force_closed(acme_rule):
    body = copy.deepcopy(REG["body"])
    body["Contact"] = body["Contact"].replace(DEVICE_PUSH["Token-ID"], "cd" * 32)
    with consumer_running() as consumer:
        with broker_channel() as channel:
            publish_reg(channel)
            consumer.wait_handled(1)
        # Only this session's vhost: without -p, close_all_connections closes every connection on "/".
        rabbitmqctl("close_all_connections", "-p", vhost_of(consumer.config.amqp_url), "pusher test")
        assert wait_for(lambda: not consumer.worker.connected.is_set(), timeout=10)
        assert consumer.worker.connected.wait(20), "consumer did not reconnect"
        with broker_channel() as channel:
            publish_reg(channel, body)
            assert wait_for(lambda: Device.objects.get(device_id=DEVICE).push["Token-ID"] == "cd" * 32, 20)
