"""The consumer's concurrent push path (kazoo.pushlane) over the real RabbitMQ, and its batch writes."""

import time

import pytest

from push import services
from push.models import Delivery, DeliveryStatus
from push.services import deliveries as store
from push.services import policy
from registry.models import Device, PushToken
from tests.amqp import broker_channel, consumer_running, dead_letter_get, sample, wait_for
from tests.fakes.apns import Answer
from tests.push.pushreq import PUSH, TOKEN, publish_push, push_req

pytestmark = pytest.mark.django_db(transaction=True)

REG = sample("reg_success_kamailio_master.json")


def queue_depth(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def test_claim_batch_claims_each_msg_id_once(apple_app):
    existing = services.push_request_handle(fields=push_req(**{"Msg-ID": "seen-before"}), source="api")
    jobs = [
        policy.push_job_prepare(fields=push_req(**{"Msg-ID": msg_id}), source="amqp")
        for msg_id in ("new-1", "seen-before", "new-2", "new-1", None)
    ]
    claimed = store.deliveries_claim(jobs)
    assert [d is not None for d in claimed] == [True, False, True, False, True]
    assert claimed[0].msg_id == "new-1" and claimed[2].msg_id == "new-2" and claimed[4].msg_id is None
    stored = {d.pk: d for d in Delivery.objects.exclude(pk=existing.pk)}
    assert set(stored) == {claimed[0].pk, claimed[2].pk, claimed[4].pk}
    assert all(d.status == DeliveryStatus.QUEUED and d.claimed_at is not None for d in stored.values())
    assert stored[claimed[0].pk].call_id == PUSH["body"]["Call-ID"] and stored[claimed[0].pk].token == TOKEN


def test_finished_batch_is_recorded(apple_app):
    jobs = [policy.push_job_prepare(fields=push_req(**{"Msg-ID": f"r{i}"}), source="amqp") for i in range(3)]
    deliveries = store.deliveries_claim(jobs)
    result = services.SendResult(outcome="sent", status=200, reason="", description="", message_id="apns-1")
    store.delivery_finish_apply(deliveries[0], policy.finish_of_result(result, 1), started=time.time())
    store.delivery_finish_apply(deliveries[1], policy.Finish(DeliveryStatus.EXPIRED, "deadline", "late", 3),
                                   started=time.time())
    store.delivery_finish_apply(deliveries[2], policy.Finish(DeliveryStatus.FAILED, "app_unusable", "no app"),
                                   started=time.time())
    store.deliveries_save_finished(deliveries)
    rows = {d.msg_id: d for d in Delivery.objects.all()}
    assert rows["r0"].status == DeliveryStatus.SENT and rows["r0"].http_status == 200
    assert rows["r0"].provider_message_id == "apns-1" and rows["r0"].latency_ms is not None
    assert rows["r1"].status == DeliveryStatus.EXPIRED and rows["r1"].attempts == 3 and rows["r1"].error == "late"
    assert rows["r2"].status == DeliveryStatus.FAILED and rows["r2"].reason == "app_unusable"
    assert all(d.finished_at is not None for d in rows.values())


@pytest.mark.rabbitmq
def test_a_burst_is_sent_once_each_with_duplicates_acked(apple_app, apns_trusting_fake):
    apns_trusting_fake.set_default(Answer.ok(delay=0.05))  # many streams in flight at once
    bodies = [push_req(**{"Msg-ID": f"burst-{i}", "Call-ID": f"call-{i}"}) for i in range(80)]
    duplicates = bodies[:10]
    with consumer_running() as consumer, broker_channel() as channel:
        for body in bodies + duplicates:
            publish_push(channel, body)
        consumer.wait_handled(90, timeout=30)
        assert queue_depth(channel, consumer.config.queue) == 0
    assert sorted(r.body["aps"]["call-id"] for r in apns_trusting_fake.requests) == sorted(
        b["Call-ID"] for b in bodies
    )
    assert Delivery.objects.count() == 80
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.SENT}
    assert consumer.worker.dead_lettered == 0


@pytest.mark.rabbitmq
def test_consumer_retries_then_records_each_outcome(apple_app, apns_trusting_fake):
    apns_trusting_fake.enqueue(Answer.error(503, "ServiceUnavailable"))  # the first request answered: one retry
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, push_req(**{"Msg-ID": "one"}))
        consumer.wait_handled(1, timeout=15)
        apns_trusting_fake.set_default(Answer.error(503, "ServiceUnavailable"))
        publish_push(channel, push_req(**{"Msg-ID": "two", "Expires": 1, "Call-ID": "call-two"}))
        publish_push(channel, push_req(**{"Msg-ID": "three", "Token-App": "com.unknown.app"}))
        consumer.wait_handled(3, timeout=15)
    one, two, three = (Delivery.objects.get(msg_id=m) for m in ("one", "two", "three"))
    assert one.status == DeliveryStatus.SENT and one.attempts == 2
    assert two.status == DeliveryStatus.EXPIRED and two.reason == "deadline" and "ServiceUnavailable" in two.error
    assert three.status == DeliveryStatus.FAILED and three.reason == "app_unusable"
    # never sent late: no attempt of "two" reached the provider after its 1 s window closed
    attempts_of_two = [r for r in apns_trusting_fake.requests if r.body["aps"]["call-id"] == "call-two"]
    assert len(attempts_of_two) == two.attempts >= 2
    assert all(r.received_at <= two.deadline_at.timestamp() for r in attempts_of_two)


@pytest.mark.rabbitmq
def test_consumer_410_deactivates_the_token_and_clears_the_push_object(
    apple_app, apns_trusting_fake, registered_device
):
    device = registered_device
    apns_trusting_fake.set_token_answer(TOKEN, Answer.unregistered(timestamp_ms=int(time.time() * 1000) + 1000))
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, push_req())
        consumer.wait_handled(1, timeout=15)
    assert Delivery.objects.get().status == DeliveryStatus.TOKEN_INVALID
    assert not PushToken.objects.get(token=TOKEN).active
    assert Device.objects.get(pk=device.pk).push is None


@pytest.mark.rabbitmq
def test_other_events_on_the_pushes_exchange_are_acked_as_ignored(apple_app, apns_trusting_fake):
    body = push_req(**{"Event-Name": "push_resp"})
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, body)
        publish_push(channel, push_req(**{"Msg-ID": "after"}))
        consumer.wait_handled(2, timeout=15)
        assert queue_depth(channel, consumer.config.queue) == 0
    assert Delivery.objects.get().msg_id == "after"
    assert len(apns_trusting_fake.requests) == 1 and consumer.worker.dead_lettered == 0


@pytest.mark.rabbitmq
def test_a_bad_push_req_in_a_burst_is_dead_lettered_alone(apple_app, apns_trusting_fake):
    bad = push_req(**{"Msg-ID": "bad"})
    del bad["Token-App"]
    with consumer_running() as consumer, broker_channel() as channel:
        for i in range(5):
            publish_push(channel, push_req(**{"Msg-ID": f"good-{i}"}))
        publish_push(channel, bad)
        for i in range(5, 10):
            publish_push(channel, push_req(**{"Msg-ID": f"good-{i}"}))
        consumer.wait_handled(11, timeout=15)
        method, properties, _ = dead_letter_get(channel, consumer.config.dead_letter_queue)
    assert method is not None and "Token-App" in properties.headers["x-pusher-reason"]
    assert properties.headers["x-pusher-msg-id"] == "bad"
    assert Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 10


@pytest.mark.rabbitmq
def test_a_lane_that_cannot_build_its_client_dead_letters_instead_of_holding(apple_app, monkeypatch):
    # A missing PUSHER_APNS_CA_FILE made building the APNs client fail: every push_req then stayed
    # unacked for good. Now each is dead-lettered with the reason, and the consumer keeps going.
    from push.providers import apns

    def broken() -> None:
        raise FileNotFoundError(2, "No such file or directory", "/nonexistent/ca.pem")

    monkeypatch.setattr(apns, "get_client", broken)
    with consumer_running() as consumer, broker_channel() as channel:
        for i in range(3):
            publish_push(channel, push_req(**{"Msg-ID": f"stuck-{i}"}))
        consumer.wait_handled(3, timeout=15)
        reasons = [dead_letter_get(channel, consumer.config.dead_letter_queue)[1].headers["x-pusher-reason"]
                   for _ in range(3)]
        assert queue_depth(channel, consumer.config.queue) == 0
    assert len(reasons) == 3 and all("push lane unavailable: FileNotFoundError" in r for r in reasons)



@pytest.mark.rabbitmq
def test_an_unexpected_error_taking_a_push_req_dead_letters_it_alone(apple_app, apns_trusting_fake, monkeypatch):
    # The push lane takes a delivery inside pika's callback on the loop: a bug there must cost that
    # one message (dead-lettered, acked), not the connection or the messages read with it.
    from kazoo import pushlane

    prepare = pushlane.push_job_prepare

    def buggy(*, fields, **kwargs):
        if fields.get("Msg-ID") == "buggy":
            raise RuntimeError("a bug")
        return prepare(fields=fields, **kwargs)

    monkeypatch.setattr(pushlane, "push_job_prepare", buggy)
    with consumer_running() as consumer, broker_channel() as channel:
        for msg_id in ("one", "buggy", "two"):
            publish_push(channel, push_req(**{"Msg-ID": msg_id}))
        consumer.wait_handled(3)
        method, properties, _ = dead_letter_get(channel, consumer.config.dead_letter_queue)
        assert wait_for(lambda: queue_depth(channel, consumer.config.queue) == 0)
        assert consumer.worker.connected.is_set()
    assert method is not None and properties.headers["x-pusher-reason"] == "internal error: RuntimeError"
    assert properties.headers["x-pusher-msg-id"] == "buggy"
    sent = {"one": DeliveryStatus.SENT, "two": DeliveryStatus.SENT}
    assert {d.msg_id: d.status for d in Delivery.objects.all()} == sent


@pytest.mark.rabbitmq
def test_a_stop_with_pushes_in_flight_waits_for_their_answers_and_acks_them(apple_app, apns_trusting_fake):
    # The graceful stop on the loop: no new deliveries, the pushes out already are answered,
    # recorded and acked, then the connection closes: nothing goes back to the queue.
    apns_trusting_fake.set_default(Answer.ok(delay=1.0))
    with consumer_running() as consumer, broker_channel() as channel:
        for i in range(5):
            publish_push(channel, push_req(**{"Msg-ID": f"in-flight-{i}"}))
        assert wait_for(lambda: len(apns_trusting_fake.requests) == 5)
        started = time.monotonic()
        consumer.worker.stop()
        consumer.thread.join(timeout=30)
        assert not consumer.thread.is_alive() and time.monotonic() - started < 10
        assert queue_depth(channel, consumer.config.queue) == 0  # acked, not returned on close
    assert consumer.worker.messages_total == 5
    assert sorted(Delivery.objects.values_list("status", flat=True)) == [DeliveryStatus.SENT] * 5


@pytest.mark.rabbitmq
def test_a_consumer_whose_loop_stops_under_it_reconnects_on_the_new_clients_loop(apple_app, apns_trusting_fake,
                                                                                  settings):
    # The consuming connection lives on the APNs client's loop; reconfiguring the client closes
    # that loop. The consumer notices, gives the old connection's socket up (so the broker
    # redelivers what it held) and consumes again on the new client's loop.
    from push.providers import apns

    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, push_req(**{"Msg-ID": "before"}))
        consumer.wait_handled(1)
        old_loop = apns.get_client().loop()
        apns.configure(ca_file=apns_trusting_fake.ca_file, jwt_max_age=settings.PUSHER_APNS_JWT_MAX_AGE_S)
        assert wait_for(lambda: not consumer.worker.connected.is_set(), timeout=10)
        assert wait_for(lambda: consumer.worker.connected.is_set(), timeout=15)
        assert apns.get_client().loop() is not old_loop
        # the old connection is gone from the broker, not left holding its deliveries
        consumers = channel.queue_declare(consumer.config.queue, passive=True).method.consumer_count
        assert consumers == 1
        publish_push(channel, push_req(**{"Msg-ID": "after"}))
        consumer.wait_handled(2)
        assert wait_for(lambda: queue_depth(channel, consumer.config.queue) == 0)
    assert {d.msg_id: d.status for d in Delivery.objects.all()} == {
        "before": DeliveryStatus.SENT, "after": DeliveryStatus.SENT,
    }


@pytest.mark.rabbitmq
def test_the_lane_fills_a_push_reqs_device_from_its_token(apple_app, apns_trusting_fake, registered_device):
    # Kamailio's push_req carries no Account-ID / Endpoint-ID; the lane fills them from the token's
    # device with the outcome (off the send), so the delivery log still says whose phone it was.
    body = push_req(**{"Msg-ID": "no-ids"})
    body.pop("Account-ID", None)
    body.pop("Endpoint-ID", None)
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, body)
        consumer.wait_handled(1, timeout=15)
    delivery = Delivery.objects.get(msg_id="no-ids")
    assert delivery.status == DeliveryStatus.SENT
    assert (delivery.account_id, delivery.device_id) == (registered_device.account_id, registered_device.device_id)


def _settled(consumer) -> list:
    """What the consumer settled each message with, as it settles them."""
    handled, settle = [], consumer.worker._settle

    def recording(channel, tag, message, outcome):
        handled.append(outcome)
        return settle(channel, tag, message, outcome)

    consumer.worker._settle = recording
    return handled


@pytest.mark.rabbitmq
def test_a_fresh_push_req_reaches_the_provider_before_its_claim_is_written(apple_app, apns_trusting_fake, monkeypatch):
    """Nothing on the disk in front of the send: a push still unanswered after CLAIM_AFTER_S is claimed
    while it is sent. The claim thread is held until the fake APNs has the request (it would wait
    10 s in vain if the send waited for the claim), then the claim and the outcome land as usual."""
    insert = store.deliveries_insert
    seen_first: list[bool] = []

    def claim_after_the_send(deliveries, *, durable=True):
        if not durable:  # the claim
            deadline = time.monotonic() + 10
            while not apns_trusting_fake.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            seen_first.append(bool(apns_trusting_fake.requests))
        return insert(deliveries, durable=durable)

    monkeypatch.setattr("kazoo.pushlane.deliveries_insert", claim_after_the_send)
    apns_trusting_fake.set_default(Answer.ok(delay=0.5))  # unanswered long enough to be claimed
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, push_req(**{"Msg-ID": "fast-1"}))
        consumer.wait_handled(1, timeout=30)
    assert seen_first == [True]
    (delivery,) = Delivery.objects.filter(msg_id="fast-1")
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 1
    assert len(apns_trusting_fake.requests) == 1


@pytest.mark.rabbitmq
def test_a_msg_id_another_consumer_holds_is_sent_and_acked_as_a_duplicate(apple_app, apns_trusting_fake):
    """The same Msg-ID published to two consumers: both send it (a second VoIP push for one call is
    harmless; a missing one is a missed call); this one's claim finds the row taken, leaves it to its
    sender and acks its message as a duplicate."""
    from django.utils import timezone

    now = timezone.now()
    held = Delivery.objects.create(
        msg_id="held-1", source="amqp", status=DeliveryStatus.QUEUED, token=TOKEN, app_id=PUSH["body"]["Token-App"],
        created_at=now, claimed_at=now, deadline_at=now + timezone.timedelta(seconds=20),
    )
    with consumer_running() as consumer, broker_channel() as channel:
        handled = _settled(consumer)
        publish_push(channel, push_req(**{"Msg-ID": "held-1"}))
        consumer.wait_handled(1, timeout=30)
        assert queue_depth(channel, consumer.config.queue) == 0
    assert len(apns_trusting_fake.requests) == 1
    (outcome,) = handled
    assert outcome.outcome == DeliveryStatus.DUPLICATE
    assert outcome.reason == "Msg-ID also taken by another consumer, sent by both"
    assert list(Delivery.objects.values_list("pk", "status")) == [(held.pk, DeliveryStatus.QUEUED)]  # its sender's


@pytest.mark.rabbitmq
def test_a_push_answered_quickly_is_written_once_with_its_outcome(apple_app, apns_trusting_fake, monkeypatch):
    """Answered within CLAIM_AFTER_S: no claim, one durable INSERT carrying the outcome."""
    insert, writes = store.deliveries_insert, []

    def counting(deliveries, *, durable=True):
        writes.append((len(deliveries), durable))
        return insert(deliveries, durable=durable)

    monkeypatch.setattr("kazoo.pushlane.deliveries_insert", counting)
    monkeypatch.setattr("kazoo.pushlane.CLAIM_AFTER_S", 5.0)  # however slow the machine
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, push_req(**{"Msg-ID": "quick-1"}))
        consumer.wait_handled(1, timeout=30)
    assert writes == [(1, True)]
    (delivery,) = Delivery.objects.filter(msg_id="quick-1")
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 1 and delivery.http_status == 200


@pytest.mark.rabbitmq
def test_a_push_answered_before_its_claim_time_leaves_no_timer_to_wake_for(apple_app, apns_trusting_fake, monkeypatch):
    """Each wake-up of the loop costs CPU: the claim timer of a push already answered is cancelled,
    not left to fire and find nothing to do."""
    from kazoo.pushlane import PushLane

    fired = []
    original = PushLane._claim

    def counting(self, push):
        fired.append(push.job.msg_id)
        return original(self, push)

    monkeypatch.setattr(PushLane, "_claim", counting)
    monkeypatch.setattr("kazoo.pushlane.CLAIM_AFTER_S", 0.3)
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, push_req(**{"Msg-ID": "answered-1"}))
        consumer.wait_handled(1, timeout=30)
        time.sleep(0.6)  # past the claim time
    assert len(apns_trusting_fake.requests) == 1
    assert fired == []
