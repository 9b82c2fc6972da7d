"""Acks leave in one socket write: the deliveries below the lowest one still in hand with one
`multiple` ack, those above it one by one but flushed together, and the one in hand stays unacked."""

from __future__ import annotations

import uuid

import pika
import pytest

from kazoo.worker import Worker, WorkerConfig
from tests.amqp import amqp_url, broker_channel


@pytest.mark.rabbitmq
def test_settled_deliveries_around_an_open_one_are_acked_with_one_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = f"pusher_test_acks_{uuid.uuid4().hex[:10]}"
    with broker_channel() as channel:
        channel.queue_declare(queue, auto_delete=False)
        for n in range(6):
            channel.basic_publish("", queue, f"m{n}".encode())
    worker = Worker(WorkerConfig(amqp_url=amqp_url(), queue=queue, dead_letter_exchange="unused",
                                 dead_letter_queue="unused", prefetch=10, push_workers=1))
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url()))
    try:
        consumer = connection.channel()
        tags = [consumer.basic_get(queue)[0].delivery_tag for _ in range(6)]
        worker._unsettled = {tags[2]}  # m2 is still being handled
        flushed: list[tuple[int, bool]] = []
        basic_ack = consumer.basic_ack

        def counting(delivery_tag: int = 0, multiple: bool = False) -> None:
            flushed.append((delivery_tag, multiple))
            basic_ack(delivery_tag, multiple=multiple)

        monkeypatch.setattr(consumer, "basic_ack", counting)
        worker._ack(consumer, [tags[0], tags[1], tags[3], tags[4], tags[5]])
        assert flushed == [(tags[5], False)]  # one flushing call; the other frames went out with it
        consumer.close()  # whatever was not acked goes back to the queue
    finally:
        connection.close()
    with broker_channel() as channel:
        left = []
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            left.append(got[2])
        channel.queue_delete(queue)
    assert left == [b"m2"]
