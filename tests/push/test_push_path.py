"""The push path end to end over the real RabbitMQ: Kamailio's push_req -> fake APNs / fake FCM."""

import copy
import json
import logging
import time

import pytest
from cryptography.fernet import Fernet

from core import fields
from push import services
from push.models import Delivery, DeliveryStatus, PushApp
from registry.models import Device, PushToken
from tests.amqp import broker_channel, consumer_running, dead_letter_get, publish, sample
from tests.fakes.apns import Answer
from tests.push.pushreq import PUSH, TOKEN, publish_push, push_req

pytestmark = pytest.mark.django_db(transaction=True)

LEGACY = sample("push_req_kamailio_2015_legacy.json")
APNS_EXPECTED = sample("apns_request_constructed.json")
REG = sample("reg_success_kamailio_master.json")
FCM_TOKEN = "dKx9Qm3ZRlO7pYc2wEo1aB:APA91bHq8v2Xz-4kLmN0pQrStUvWxYz_aBcDeFg.with.dots"


@pytest.mark.rabbitmq
def test_kamailio_push_req_becomes_exactly_the_expected_apns_request(apple_app, apns_trusting_fake):
    with consumer_running() as consumer, broker_channel() as channel:
        before_ms = int(time.time() * 1000)
        publish_push(channel, PUSH["body"])
        consumer.wait_handled(1)
    (request,) = apns_trusting_fake.requests
    assert request.method == "POST"
    assert request.path == f"/3/device/{TOKEN}"
    assert request.alpn == "h2" and request.auth == "certificate"
    for name in ("apns-topic", "apns-push-type", "apns-priority"):
        assert request.headers[name] == APNS_EXPECTED["headers"][name]
    body = dict(request.body)
    stamp = int(body.pop("utc_unix_timestamp_ms"))
    assert before_ms <= stamp <= int(time.time() * 1000)
    expected = dict(APNS_EXPECTED["body"])
    expected.pop("utc_unix_timestamp_ms")
    assert body == expected
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.SENT and delivery.http_status == 200
    assert delivery.provider_message_id and delivery.attempts == 1 and delivery.latency_ms > 0
    assert delivery.msg_id == PUSH["body"]["Msg-ID"] and delivery.call_id == PUSH["body"]["Call-ID"]


@pytest.mark.rabbitmq
def test_push_req_becomes_the_expected_fcm_v1_request(firebase_app, fake_fcm):
    body = push_req(**{"Token-Type": "firebase", "Token-App": "com.acme.phone", "Token-ID": FCM_TOKEN})
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, body)  # the token has dots: only the `#` binding receives it
        consumer.wait_handled(1)
    (request,) = [r for r in fake_fcm.requests if r.path.endswith("messages:send")]
    assert request.path == "/v1/projects/acme-phone/messages:send"
    message = request.body["message"]
    assert message["token"] == FCM_TOKEN
    assert message["android"]["priority"] == "high" and message["android"]["ttl"] == "30s"
    data = message["data"]
    assert all(isinstance(v, str) for v in data.values())
    assert json.loads(data["alert"]) == {"loc-key": "IC_SIL", "loc-args": ["+15551234567 - John Doe"]}
    assert data["sound"] == "ring.caf" and data["Call-ID"] == body["Call-ID"]
    for key, value in body["Payload"].items():
        assert data[key] == value
    assert int(data["utc_unix_timestamp_ms"]) > 0
    assert Delivery.objects.get().status == DeliveryStatus.SENT


def test_legacy_alert_body_push_req(apple_app, apns_trusting_fake):
    body = copy.deepcopy(LEGACY["body"])
    body["Token-App"] = "com.acme.phone.voip.prod"
    delivery = services.push_request_handle(fields=body, source="api")
    assert delivery.status == DeliveryStatus.SENT
    (request,) = apns_trusting_fake.requests
    # As old Kazoo's pm_apple sent it: a localized IC_MSG alert, ring.caf, call-id at the top level.
    assert request.body["aps"] == {"alert": {"loc-key": "IC_MSG", "loc-args": [body["Alert-Body"]]},
                                   "sound": "ring.caf"}
    assert request.body["call-id"] == body["Call-ID"]


@pytest.mark.rabbitmq
def test_redelivered_push_req_is_sent_once(apple_app, apns_trusting_fake):
    with consumer_running() as consumer, broker_channel() as channel:
        for _ in range(3):
            publish_push(channel, PUSH["body"])
        consumer.wait_handled(3)
    assert len(apns_trusting_fake.requests) == 1
    assert Delivery.objects.count() == 1


def test_410_deactivates_token_and_clears_push_object(apple_app, apns_trusting_fake, registered_device):
    apns_trusting_fake.set_token_answer(TOKEN, Answer.unregistered(timestamp_ms=int(time.time() * 1000) + 1000))
    delivery = services.push_request_handle(fields=push_req(), source="api")
    assert delivery.status == DeliveryStatus.TOKEN_INVALID and delivery.http_status == 410
    token = PushToken.objects.get(token=TOKEN)
    assert not token.active and "410" in token.deactivated_reason
    assert Device.objects.get(pk=registered_device.pk).push is None


def test_410_older_than_the_last_registration_keeps_the_token(apple_app, apns_trusting_fake, registered_device):
    apns_trusting_fake.set_token_answer(TOKEN, Answer.unregistered(timestamp_ms=int(time.time() * 1000) - 3_600_000))
    delivery = services.push_request_handle(fields=push_req(), source="api")
    assert delivery.status == DeliveryStatus.TOKEN_INVALID
    assert PushToken.objects.get(token=TOKEN).active
    assert Device.objects.get(pk=registered_device.pk).push is not None


def test_bad_device_token_does_not_kill_the_token(apple_app, apns_trusting_fake, registered_device, settings):
    settings.PUSHER_BAD_DEVICE_TOKEN_FLAG_AFTER = 2
    apns_trusting_fake.set_token_answer(TOKEN, Answer.error(400, "BadDeviceToken"))
    for _ in range(2):
        delivery = services.push_request_handle(fields=push_req(**{"Msg-ID": None}), source="api")
        assert delivery.status == DeliveryStatus.FAILED and delivery.reason == "BadDeviceToken"
    assert PushToken.objects.get(token=TOKEN).active
    app = PushApp.objects.get(pk=apple_app.pk)
    assert app.bad_device_token_count == 2 and "sandbox" in app.flagged_reason


@pytest.mark.parametrize("answer", [Answer.error(500, "InternalServerError"), Answer.error(503, "ServiceUnavailable"),
                                    Answer.error(429, "TooManyRequests"), Answer.reset(), Answer.goaway()])
def test_transient_errors_are_retried_on_a_fresh_connection(apple_app, apns_trusting_fake, answer):
    apns_trusting_fake.enqueue(answer)
    delivery = services.push_request_handle(fields=push_req(), source="api")
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 2


def test_retries_stop_at_the_deadline(apple_app, apns_trusting_fake):
    apns_trusting_fake.set_default(Answer.error(503, "ServiceUnavailable"))
    delivery = services.push_request_handle(fields=push_req(Expires=2), source="api")
    assert delivery.status == DeliveryStatus.EXPIRED and delivery.reason == "deadline"
    assert delivery.attempts >= 2 and "ServiceUnavailable" in delivery.error
    assert len(apns_trusting_fake.requests) == delivery.attempts
    # never sent late: no attempt reached the provider after the 2 s window closed
    assert all(r.received_at <= delivery.deadline_at.timestamp() for r in apns_trusting_fake.requests)


@pytest.mark.parametrize(
    "changes, reason, text",
    [
        ({"Token-Type": "blackberry"}, "unknown_token_type", "blackberry"),
        ({"Token-App": "com.unknown.app"}, "app_unusable", "no apple push app"),
    ],
)
def test_unusable_push_req_is_a_failed_delivery_with_a_reason(apple_app, changes, reason, text):
    delivery = services.push_request_handle(fields=push_req(**changes), source="api")
    assert delivery.status == DeliveryStatus.FAILED and delivery.reason == reason and text in delivery.error


def test_disabled_app_and_legacy_key_fail_with_a_reason(apple_app, firebase_app):
    PushApp.objects.filter(pk=apple_app.pk).update(enabled=False)
    delivery = services.push_request_handle(fields=push_req(), source="api")
    assert delivery.status == DeliveryStatus.FAILED and "disabled" in delivery.error
    legacy = services.credential_save(name="legacy", parsed=services.credential_parse(
        kind="fcm_legacy_key", data="AAAA-legacy-server-key"))
    PushApp.objects.filter(pk=firebase_app.pk).update(credential=legacy)
    services.push_app_cache_clear()
    delivery = services.push_request_handle(
        fields=push_req(**{"Token-Type": "android", "Token-App": "com.acme.phone", "Msg-ID": "m2"}), source="api")
    assert delivery.status == DeliveryStatus.FAILED and "legacy" in delivery.error


@pytest.mark.rabbitmq
def test_a_credential_no_key_decrypts_fails_the_push_as_app_unusable(apple_app, apns_trusting_fake, settings):
    """FIELD_ENCRYPTION_KEY replaced without keeping the key the certificate was written with: the
    consumer's push engine refuses the app with the reason, nothing reaches APNs, nothing crashes."""
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    fields._fernet.cache_clear()
    services.push_app_cache_clear()
    try:
        with consumer_running() as consumer, broker_channel() as channel:
            publish_push(channel, PUSH["body"])
            consumer.wait_handled(1)
        delivery = Delivery.objects.get()
    finally:
        fields._fernet.cache_clear()
    assert delivery.status == DeliveryStatus.FAILED and delivery.reason == "app_unusable"
    assert delivery.error == fields.UNDECRYPTABLE_REASON
    assert apns_trusting_fake.requests == []


@pytest.mark.parametrize(
    "answer, status",
    [("UNREGISTERED", DeliveryStatus.TOKEN_INVALID), ("INVALID_TOKEN", DeliveryStatus.TOKEN_INVALID),
     ("SENDER_ID_MISMATCH", DeliveryStatus.TOKEN_INVALID), ("INVALID_ARGUMENT", DeliveryStatus.FAILED),
     ("PERMISSION_DENIED", DeliveryStatus.FAILED)],
)
def test_fcm_error_answers(firebase_app, fake_fcm, answer, status):
    fake_fcm.set_answer(answer)
    delivery = services.push_request_handle(
        fields=push_req(**{"Token-Type": "fcm", "Token-App": "com.acme.phone", "Token-ID": FCM_TOKEN}), source="api")
    assert delivery.status == status


def test_fcm_token_endpoint_down_then_back(firebase_app, fake_fcm):
    fake_fcm.token_endpoint_down(True)
    body = push_req(**{"Token-Type": "google", "Token-App": "com.acme.phone", "Token-ID": FCM_TOKEN, "Expires": 1})
    delivery = services.push_request_handle(fields=body, source="api")
    assert delivery.status == DeliveryStatus.EXPIRED and "token endpoint" in delivery.error.lower()
    fake_fcm.token_endpoint_down(False)
    delivery = services.push_request_handle(fields={**body, "Msg-ID": "again"}, source="api")
    assert delivery.status == DeliveryStatus.SENT


@pytest.mark.rabbitmq
def test_missing_token_id_is_dead_lettered(apple_app):
    body = push_req()
    del body["Token-ID"]
    with consumer_running() as consumer, broker_channel() as channel:
        publish(channel, "pushes", "notification.push.apple.x", body)
        consumer.wait_handled(1)
        method, properties, _ = dead_letter_get(channel, consumer.config.dead_letter_queue)
    assert method is not None and "Token-ID" in properties.headers["x-pusher-reason"]


def _queued_claim(msg_id, claimed_ago_s, *, attempts=0, deadline_in_s=20):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    return Delivery.objects.create(
        msg_id=msg_id, source="amqp", status=DeliveryStatus.QUEUED, token=TOKEN, app_id="com.acme.phone.voip.prod",
        created_at=now - timedelta(seconds=claimed_ago_s), claimed_at=now - timedelta(seconds=claimed_ago_s),
        deadline_at=now + timedelta(seconds=deadline_in_s), attempts=attempts,
    )


def test_push_of_a_dead_sender_is_sent_again_within_its_deadline(apple_app, apns_trusting_fake):
    """A redelivered push_req whose sender died mid-send (its lease ran out): taken over and sent
    again, recorded normally, the attempt count going on from the dead sender's."""
    orphan = _queued_claim("orphan-1", claimed_ago_s=10, attempts=1)
    delivery = services.push_request_handle(fields=push_req(**{"Msg-ID": "orphan-1"}), source="amqp")
    assert delivery.pk == orphan.pk
    assert delivery.status == DeliveryStatus.SENT and delivery.reason == "" and delivery.http_status == 200
    assert delivery.attempts == 3  # 1 recorded + the 1 it had under way when it died + this one
    (request,) = apns_trusting_fake.requests
    assert request.token == TOKEN
    stored = Delivery.objects.get(pk=orphan.pk)
    assert stored.status == DeliveryStatus.SENT and stored.attempts == 3
    assert stored.latency_ms >= 10_000  # from when the push_req first arrived


def test_push_of_a_dead_sender_past_its_deadline_is_recorded_expired(apple_app, apns_trusting_fake):
    orphan = _queued_claim("orphan-2", claimed_ago_s=30, deadline_in_s=-5)
    delivery = services.push_request_handle(fields=push_req(**{"Msg-ID": "orphan-2"}), source="amqp")
    assert delivery.pk == orphan.pk
    assert delivery.status == DeliveryStatus.EXPIRED and delivery.reason == "deadline"
    assert "sender died" in delivery.error and delivery.attempts == 1
    assert apns_trusting_fake.requests == []
    assert Delivery.objects.get(pk=orphan.pk).status == DeliveryStatus.EXPIRED


def test_redelivery_waits_for_a_live_sender_then_acks_a_duplicate(apple_app, apns_trusting_fake):
    """A redelivered push_req whose sender is alive (fresh lease) is neither sent again nor closed
    early: it waits for the sender's outcome."""
    import threading

    from django.db import connection

    live = _queued_claim("live-1", claimed_ago_s=0)

    def sender_finishes() -> None:
        Delivery.objects.filter(pk=live.pk).update(status=DeliveryStatus.SENT)
        connection.close()  # this thread's own connection; the test database is dropped later

    threading.Timer(0.5, sender_finishes).start()
    delivery = services.push_request_handle(fields=push_req(**{"Msg-ID": "live-1"}), source="amqp")
    assert delivery.status == DeliveryStatus.DUPLICATE and str(live.pk) in delivery.reason
    assert apns_trusting_fake.requests == []
    assert Delivery.objects.get(pk=live.pk).status == DeliveryStatus.SENT


def _messages_counted(outcome):
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("pusher_messages_total", {"event": "push_req", "outcome": outcome}) or 0


def _push_lines(caplog, msg_id):
    return [r.getMessage() for r in caplog.records
            if r.name == "pusher.messages" and r.getMessage().startswith(f"push_req msg_id={msg_id} ")]


@pytest.mark.rabbitmq
def test_a_push_req_published_twice_to_one_consumer_leaves_a_line_for_each(apple_app, apns_trusting_fake, caplog):
    """The lane's memory of recent Msg-IDs acks the second copy as a duplicate: logged and counted
    like every other push_req, not acked silently."""
    caplog.set_level(logging.INFO, logger="pusher.messages")
    body = push_req(**{"Msg-ID": "twice-to-one"})
    before = _messages_counted("duplicate")
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, body)
        publish_push(channel, body)
        consumer.wait_handled(2)
    assert len(apns_trusting_fake.requests) == 1
    lines = _push_lines(caplog, "twice-to-one")
    assert len(lines) == 2, lines
    assert sum("status=sent " in line for line in lines) == 1
    (duplicate,) = [line for line in lines if "status=duplicate " in line]
    assert "reason=Msg-ID already taken by this consumer" in duplicate
    assert f"call_id={body['Call-ID']} " in duplicate and TOKEN not in duplicate  # the token masked
    assert _messages_counted("duplicate") == before + 1


@pytest.mark.rabbitmq
def test_a_push_req_whose_msg_id_has_a_row_already_is_logged_as_a_duplicate(apple_app, apns_trusting_fake, caplog):
    """A Msg-ID recorded before (another consumer's, or this one's before a restart): the lane
    sends it (nothing is read in front of a send), its row finds the Msg-ID taken, and it is acked
    as a duplicate with its line and its count."""
    caplog.set_level(logging.INFO, logger="pusher.messages")
    services.push_request_handle(fields=push_req(**{"Msg-ID": "row-already"}), source="amqp")
    before = _messages_counted("duplicate")
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, push_req(**{"Msg-ID": "row-already"}))
        consumer.wait_handled(1)
    assert Delivery.objects.count() == 1
    (line,) = _push_lines(caplog, "row-already")
    assert "status=duplicate " in line
    assert "reason=Msg-ID also taken by another consumer, sent by both" in line
    assert _messages_counted("duplicate") == before + 1


@pytest.mark.parametrize("token_type", ["gcm", "GCM"])
def test_a_gcm_push_req_goes_to_fcm_as_kazoo_sends_it(firebase_app, fake_fcm, token_type):
    """Kazoo's pusher takes `gcm` (Google Cloud Messaging, FCM's predecessor) for Firebase, and the
    registry learns tokens of that type: a push to one goes out through FCM."""
    delivery = services.push_request_handle(
        fields=push_req(**{"Token-Type": token_type, "Token-App": "com.acme.phone", "Token-ID": FCM_TOKEN}),
        source="api")
    assert delivery.status == DeliveryStatus.SENT, (delivery.reason, delivery.error)
    assert delivery.provider == "firebase"
    (request,) = [r for r in fake_fcm.requests if r.path.endswith("messages:send")]
    assert request.body["message"]["token"] == FCM_TOKEN


def test_every_token_type_the_registry_learns_is_one_a_push_can_go_to():
    """The registry stores tokens of the types it knows (registry.pushobject); a push_req reads the
    same types. One list, so that learning and pushing cannot drift apart."""
    from push.services.policy import PROVIDER_OF_TOKEN_TYPE
    from registry.pushobject import APNS_TOKEN_TYPES, FCM_TOKEN_TYPES

    assert {t for t, p in PROVIDER_OF_TOKEN_TYPE.items() if p == "apple"} == APNS_TOKEN_TYPES
    assert {t for t, p in PROVIDER_OF_TOKEN_TYPE.items() if p == "firebase"} == FCM_TOKEN_TYPES
    assert set(PROVIDER_OF_TOKEN_TYPE) == APNS_TOKEN_TYPES | FCM_TOKEN_TYPES


@pytest.mark.rabbitmq
@pytest.mark.parametrize(("field", "value", "kind"), [
    ("Call-ID", {"a": 1}, "an object"), ("Msg-ID", {"a": 1}, "an object"), ("Msg-ID", ["m"], "a list"),
    ("Call-ID", 42, "a number"),
])
def test_a_push_req_with_an_identifier_that_is_no_string_is_dead_lettered(apple_app, apns_trusting_fake, caplog,
                                                                          field, value, kind):
    """Kamailio always sends Msg-ID and Call-ID as strings (Kazoo's API says so); the HTTP face refuses
    any other, so the bus does too: dead-lettered with the reason, never sent with an empty call-id."""
    caplog.set_level(logging.INFO)
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, push_req(**{field: value}))
        consumer.wait_handled(1)
        method, properties, _ = dead_letter_get(channel, consumer.config.dead_letter_queue)
    assert method is not None
    assert properties.headers["x-pusher-reason"].endswith(f"{field} must be a string, not {kind}")
    assert apns_trusting_fake.requests == [] and not Delivery.objects.exists()
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead-lettered")]
    assert "msg_id=- " in line or field == "Call-ID"
    assert "{'a': 1}" not in line and "['m']" not in line
