"""The shared queue declared as Kazoo's pusher declares it, so that both can run on one broker during
a migration: Kazoo first, then pusher consuming from the same queue; and a queue declared otherwise
stops the consumer with one line instead of a reconnect loop."""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.data
import pika.exceptions
import pytest

from kazoo import topology
from kazoo.worker import EXIT_QUEUE_MISMATCH, Worker, WorkerConfig
from push.models import Delivery, DeliveryStatus
from tests.amqp import amqp_url, broker_channel, consumer_running, wait_for
from tests.push.pushreq import PUSH, publish_push

KAZOO_QUEUE_NAME = "pusher_shared_listener"


class _Short(int):
    """An integer pika writes as an AMQP short ('s'), as Erlang's amqp_client writes Kazoo's
    `{<<"x-max-length">>, short, 100}`; pika itself writes every small int as a signed int ('I')."""


@pytest.fixture
def amqp_shorts(monkeypatch: pytest.MonkeyPatch) -> None:
    encode_value = pika.data.encode_value

    def encode(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, _Short):
            pieces.append(struct.pack(">ch", b"s", value))
            return 3
        return encode_value(pieces, value)

    monkeypatch.setattr(pika.data, "encode_value", encode)


@contextmanager
def kazoo_declared(queue: str) -> Iterator[Any]:
    """What Kazoo's pusher_listener does to the queue (gen_listener:start_amqp ->
    kz_amqp_util:new_queue/2 with ?QUEUE_OPTIONS [{exclusive, false}], then its bindings): declared
    non-durable, auto-delete, x-max-length 100 (short), x-message-ttl 60000 (signed int). Its
    connection stays open until the block ends; it takes no messages, so that every push_req of
    the test reaches pusher's consumer."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url()))
    try:
        channel = connection.channel()
        topology.exchanges_declare(channel)
        channel.queue_declare(queue, passive=False, durable=False, exclusive=False, auto_delete=True,
                              arguments={"x-max-length": _Short(100), "x-message-ttl": 60_000})
        channel.queue_bind(queue, "pushes", routing_key="notification.push.*.*")
        channel.queue_bind(queue, "registrar", routing_key="registration.success.*.*")
        channel.queue_bind(queue, "targeted", routing_key=queue)
        yield channel
    finally:
        if connection.is_open:
            connection.close()


def _queue_exists(queue: str) -> bool:
    with broker_channel() as channel:
        try:
            channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404
            return False
    return True


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_pusher_consumes_from_the_queue_kazoo_declared(amqp_shorts, apple_app, apns_trusting_fake):
    with kazoo_declared(KAZOO_QUEUE_NAME):
        with consumer_running(queue=KAZOO_QUEUE_NAME, queue_declaration=topology.KAZOO_QUEUE) as consumer, \
                broker_channel() as channel:
            assert channel.queue_declare(KAZOO_QUEUE_NAME, passive=True).method.consumer_count == 1
            publish_push(channel, PUSH["body"])
            consumer.wait_handled(1)
        # Auto-delete, as Kazoo declared it: gone with its last consumer (pusher's, stopped).
        assert wait_for(lambda: not _queue_exists(KAZOO_QUEUE_NAME), timeout=5)
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.SENT and delivery.msg_id == PUSH["body"]["Msg-ID"]
    assert len(apns_trusting_fake.requests) == 1


def test_the_default_declaration_is_kazoos():
    declaration = topology.KAZOO_QUEUE
    assert (declaration.durable, declaration.auto_delete) == (False, True)
    assert declaration.arguments() == {"x-max-length": 100, "x-message-ttl": 60_000}
    assert topology.PUSHER_OWN_QUEUE.arguments() == {} and not topology.PUSHER_OWN_QUEUE.auto_delete


def _run_worker(queue: str, declaration: topology.QueueDeclaration) -> tuple[int, Worker]:
    config = WorkerConfig(
        amqp_url=amqp_url(), queue=queue, queue_declaration=declaration,
        dead_letter_exchange=f"{queue}_dlx", dead_letter_queue=f"{queue}_dlq", prefetch=10, push_workers=1,
    )
    worker = Worker(config)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
    thread.start()
    thread.join(timeout=20)
    if thread.is_alive():  # reconnecting in a loop: the failure this test is about
        worker.stop()
        thread.join(timeout=30)
        raise AssertionError("the consumer kept reconnecting instead of stopping")
    return result[0], worker


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("existing", "ours", "named"), [
    # Kazoo's pusher declared it; this pusher is configured with PUSHER_QUEUE_MESSAGE_TTL_MS=none.
    ("kazoo", topology.QueueDeclaration(message_ttl_ms=None), "x-message-ttl: received none but current is the "
                                                              "value '60000' of type 'signedint'"),
    # An older pusher declared it (not auto-delete, no arguments); this one has the defaults.
    ("older pusher", topology.KAZOO_QUEUE, "auto_delete: received 'true' but current is 'false'"),
])
def test_a_queue_declared_otherwise_stops_the_consumer_with_one_line(
    amqp_shorts, caplog, existing, ours, named
):
    queue = f"pusher_test_mismatch_{'kazoo' if existing == 'kazoo' else 'older'}"
    with broker_channel() as channel:
        if existing == "kazoo":
            channel.queue_declare(queue, durable=False, auto_delete=True,
                                  arguments={"x-max-length": _Short(100), "x-message-ttl": 60_000})
        else:
            channel.queue_declare(queue, durable=False, auto_delete=False)
    try:
        with caplog.at_level(logging.INFO):
            code, worker = _run_worker(queue, ours)
        assert code == EXIT_QUEUE_MISMATCH != 0
        lines = [r for r in caplog.records if r.levelno >= logging.WARNING]  # pika's included
        assert [r.getMessage() for r in lines] == [
            f"queue {queue} exists with other arguments ({named}): declared by Kazoo's pusher or an older pusher; "
            "set PUSHER_QUEUE_* (PUSHER_QUEUE_DURABLE, PUSHER_QUEUE_AUTO_DELETE, PUSHER_QUEUE_MAX_LENGTH, "
            "PUSHER_QUEUE_MESSAGE_TTL_MS) to match or delete the queue"
        ]
        assert not lines[0].exc_info
        assert not worker.connected.is_set()
    finally:
        with broker_channel() as channel:
            channel.queue_delete(queue)
            channel.queue_delete(f"{queue}_dlq")
            channel.exchange_delete(f"{queue}_dlx")


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_an_idle_consumer_stops_without_waiting_for_a_message() -> None:
    """A stop reaches the session on the loop at once (call_soon_threadsafe), instead of at the
    next message or heartbeat (15 s)."""
    with consumer_running() as consumer:
        time.sleep(0.5)  # nothing arrives: the loop is waiting
        consumer.worker.stop()
        consumer.thread.join(timeout=10)
        assert not consumer.thread.is_alive()
