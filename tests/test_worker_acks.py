"""How the consumer acks: deliveries below the lowest one still in hand with one `multiple` ack;
those above it held (kazoo.worker.ACK_HOLD_S) until the ones below settle, so one `multiple` ack
covers them too, or else acked one by one; the one in hand stays unacked. The worker's ack methods
run on an event loop of the test's own, over a pika AsyncioConnection, as in a running consumer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pika
import pytest
from pika.adapters.asyncio_connection import AsyncioConnection

from kazoo.worker import ACK_HOLD_S, Worker, WorkerConfig
from tests.amqp import amqp_url, broker_channel

T = TypeVar("T")


def on_loop(loop: asyncio.AbstractEventLoop, work: Callable[[], T]) -> T:
    """`work()` run on `loop`; its result here."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(work())
        except BaseException as exc:  # re-raised in the caller's thread
            done.set_exception(exc)

    loop.call_soon_threadsafe(run)
    return done.result(timeout=10)


@dataclass
class Deliveries:
    worker: Worker
    loop: asyncio.AbstractEventLoop
    channel: Any
    tags: list[int]
    frames: list[tuple[int, bool]] = field(default_factory=list)  # the basic.ack frames sent
    left: list[bytes] = field(default_factory=list)  # back in the queue once the channel closed

    def settle(self, *steps: tuple[int, ...] | str) -> list[list[tuple[int, bool]]]:
        """Each step (the indexes of deliveries settled together, or "flush": the hold runs out)
        in one pass of the loop, so that the hold's timer cannot run between them; the frames
        sent so far after each step."""
        def settle() -> list[list[tuple[int, bool]]]:
            seen = []
            for step in steps:
                if step == "flush":
                    self.worker._held_flush(self.channel)
                else:
                    tags = [self.tags[i] for i in step]
                    self.worker._unsettled.difference_update(tags)  # as Worker._settle does
                    self.worker._ack(self.channel, tags)
                seen.append(list(self.frames))
            return seen

        return on_loop(self.loop, settle)


@contextmanager
def six_deliveries() -> Iterator[Deliveries]:
    """A worker (not running) with six unacked deliveries m0..m5 in hand on a channel of an
    AsyncioConnection on a loop of the test's own; every basic.ack is recorded and sent."""
    queue = f"pusher_test_acks_{uuid.uuid4().hex[:10]}"
    with broker_channel() as channel:
        channel.queue_declare(queue, auto_delete=False)
        for n in range(6):
            channel.basic_publish("", queue, f"m{n}".encode())
    worker = Worker(WorkerConfig(amqp_url=amqp_url(), queue=queue, dead_letter_exchange="unused",
                                 dead_letter_queue="unused", prefetch=10, push_workers=1))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    opened: concurrent.futures.Future[Any] = concurrent.futures.Future()
    tags: list[int] = []

    def open_connection() -> Any:
        def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
            tags.append(method.delivery_tag)
            if len(tags) == 6:
                opened.set_result(channel)

        def on_channel(channel: Any) -> None:
            channel.basic_qos(prefetch_count=10, callback=lambda _: channel.basic_consume(queue, on_message))

        return AsyncioConnection(pika.URLParameters(amqp_url()), custom_ioloop=loop,
                                 on_open_callback=lambda c: c.channel(on_open_callback=on_channel))

    connection = on_loop(loop, open_connection)
    try:
        consumer = opened.result(timeout=10)
        worker._loop, worker._loop_thread = loop, thread.ident
        deliveries = Deliveries(worker, loop, consumer, tags)
        basic_ack = consumer.basic_ack

        def recording(delivery_tag: int = 0, multiple: bool = False) -> None:
            deliveries.frames.append((delivery_tag, multiple))
            basic_ack(delivery_tag, multiple=multiple)

        consumer.basic_ack = recording
        on_loop(loop, lambda: worker._unsettled.update(tags))
        yield deliveries
    finally:
        on_loop(loop, connection.close)  # after the acks buffered before it; whatever was not acked goes back
        deadline = time.monotonic() + 10
        while not connection.is_closed and time.monotonic() < deadline:
            time.sleep(0.02)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    with broker_channel() as channel:
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            deliveries.left.append(got[2])
        channel.queue_delete(queue)


@pytest.mark.rabbitmq
def test_acks_held_above_an_open_delivery_are_covered_by_one_multiple_ack_once_it_settles() -> None:
    with six_deliveries() as d:
        first, then = d.settle((0, 1, 3, 4, 5), (2,))
        assert first == [(d.tags[1], True)]  # m0, m1; m3..m5 held behind m2
        assert then == [(d.tags[1], True), (d.tags[5], True)]
    assert d.left == []


@pytest.mark.rabbitmq
def test_acks_still_held_go_out_one_by_one_and_the_open_delivery_stays() -> None:
    with six_deliveries() as d:
        # the hold runs out (or the consumer stops) with m2 still in hand
        _, flushed = d.settle((3, 4, 5, 0, 1), "flush")
        assert flushed == [(d.tags[1], True), (d.tags[3], False), (d.tags[4], False), (d.tags[5], False)]
    assert d.left == [b"m2"]


@pytest.mark.rabbitmq
def test_acks_held_past_the_hold_go_out_by_themselves() -> None:
    with six_deliveries() as d:
        [first] = d.settle((0, 1, 3))
        assert first == [(d.tags[1], True)]
        time.sleep(ACK_HOLD_S * 4)  # the loop's timer ends the hold
        assert d.frames == [(d.tags[1], True), (d.tags[3], False)]
    assert d.left == [b"m2", b"m4", b"m5"]
