"""How the consumer acks: deliveries below the lowest one still in hand with one `multiple` ack;
those above it held (kazoo.worker.ACK_HOLD_S) until the ones below settle, so one `multiple` ack
covers them too, or else acked one by one in one socket write; the one in hand stays unacked."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pika
import pytest

from kazoo.worker import ACK_HOLD_S, Worker, WorkerConfig
from tests.amqp import amqp_url, broker_channel


@dataclass
class Deliveries:
    worker: Worker
    connection: Any
    channel: Any
    tags: list[int]
    flushed: list[tuple[int, bool]] = field(default_factory=list)  # BlockingChannel.basic_ack calls
    left: list[bytes] = field(default_factory=list)  # back in the queue once the channel closed

    def settle(self, *indexes: int) -> None:
        tags = [self.tags[i] for i in indexes]
        self.worker._unsettled.difference_update(tags)  # as Worker._settle does
        self.worker._ack(self.channel, tags)


@contextmanager
def six_deliveries(monkeypatch: pytest.MonkeyPatch) -> Iterator[Deliveries]:
    """A worker (not running) with six unacked deliveries m0..m5 in hand on a channel of its own;
    every BlockingChannel.basic_ack (each flushes the socket) is counted and carried out."""
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
        deliveries = Deliveries(worker, connection, consumer, tags)
        basic_ack = consumer.basic_ack

        def counting(delivery_tag: int = 0, multiple: bool = False) -> None:
            deliveries.flushed.append((delivery_tag, multiple))
            basic_ack(delivery_tag, multiple=multiple)

        monkeypatch.setattr(consumer, "basic_ack", counting)
        worker._unsettled = set(deliveries.tags)
        yield deliveries
        consumer.close()  # whatever was not acked goes back to the queue
    finally:
        connection.close()
    with broker_channel() as channel:
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            deliveries.left.append(got[2])
        channel.queue_delete(queue)


@pytest.mark.rabbitmq
def test_acks_held_above_an_open_delivery_are_covered_by_one_multiple_ack_once_it_settles(monkeypatch) -> None:
    with six_deliveries(monkeypatch) as d:
        d.settle(0, 1, 3, 4, 5)
        assert d.flushed == [(d.tags[1], True)]  # m0, m1; m3..m5 held behind m2
        d.settle(2)
        assert d.flushed == [(d.tags[1], True), (d.tags[5], True)]
    assert d.left == []


@pytest.mark.rabbitmq
def test_acks_still_held_go_out_one_by_one_in_one_write_and_the_open_delivery_stays(monkeypatch) -> None:
    with six_deliveries(monkeypatch) as d:
        d.settle(3, 4, 5, 0, 1)
        d.worker._held_flush(d.channel)  # the hold ran out (or the consumer stops) with m2 still in hand
        assert d.flushed == [(d.tags[1], True), (d.tags[5], False)]  # m3, m4 went out with m5's flush
    assert d.left == [b"m2"]


@pytest.mark.rabbitmq
def test_acks_held_past_the_hold_go_out_by_themselves(monkeypatch) -> None:
    with six_deliveries(monkeypatch) as d:
        d.worker._connection = d.connection  # whose timer ends the hold, as in a running consumer
        d.settle(0, 1, 3)
        assert d.flushed == [(d.tags[1], True)]
        d.connection.process_data_events(time_limit=ACK_HOLD_S * 4)
        assert d.flushed == [(d.tags[1], True), (d.tags[3], False)]
    assert d.left == [b"m2", b"m4", b"m5"]
