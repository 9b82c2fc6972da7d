"""How the consumer acks: deliveries below the lowest one still in hand with one `multiple` ack;
those above it held (kazoo.worker.ACK_HOLD_S) until the ones below settle, so one `multiple` ack
covers them too, or else acked one by one in one socket write; the one in hand stays unacked."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest

from kazoo.worker import Worker, WorkerConfig
from tests.amqp import amqp_url, broker_channel


@contextmanager
def six_deliveries(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Worker, Any, list[int], list[tuple[int, bool]]]]:
    """A worker (not running) and a channel holding six unacked deliveries m0..m5; yields them with
    the list of BlockingChannel.basic_ack calls (each one flushes the socket)."""
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
        flushed: list[tuple[int, bool]] = []
        basic_ack = consumer.basic_ack

        def counting(delivery_tag: int = 0, multiple: bool = False) -> None:
            flushed.append((delivery_tag, multiple))
            basic_ack(delivery_tag, multiple=multiple)

        monkeypatch.setattr(consumer, "basic_ack", counting)
        worker._unsettled = set(tags)
        yield worker, consumer, tags, flushed
        consumer.close()  # whatever was not acked goes back to the queue
    finally:
        connection.close()
    with broker_channel() as channel:
        left = []
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            left.append(got[2])
        channel.queue_delete(queue)
    worker.left = left  # type: ignore[attr-defined]


def settle(worker: Worker, channel: Any, tags: list[int]) -> None:
    worker._unsettled.difference_update(tags)  # as Worker._settle does
    worker._ack(channel, tags)


@pytest.mark.rabbitmq
def test_acks_held_above_an_open_delivery_are_covered_by_one_multiple_ack_once_it_settles(monkeypatch) -> None:
    with six_deliveries(monkeypatch) as (worker, channel, tags, flushed):
        settle(worker, channel, [tags[0], tags[1], tags[3], tags[4], tags[5]])
        assert flushed == [(tags[1], True)]  # m0, m1; m3..m5 held behind m2
        settle(worker, channel, [tags[2]])
        assert flushed == [(tags[1], True), (tags[5], True)]
    assert worker.left == []  # type: ignore[attr-defined]


@pytest.mark.rabbitmq
def test_acks_still_held_go_out_one_by_one_in_one_write_and_the_open_delivery_stays(monkeypatch) -> None:
    with six_deliveries(monkeypatch) as (worker, channel, tags, flushed):
        settle(worker, channel, [tags[3], tags[4], tags[5], tags[0], tags[1]])
        worker._held_ack(channel)  # the hold ran out (or the consumer stops) with m2 still in hand
        assert flushed == [(tags[1], True), (tags[5], False)]  # m3, m4 went out with m5's flush
    assert worker.left == [b"m2"]  # type: ignore[attr-defined]
