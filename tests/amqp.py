"""Helpers for tests that talk to the real RabbitMQ: a consumer running in a thread on its own
queue names, and publishing exactly as Kamailio does (exchange, routing key, content type).

They work in tests marked `rabbitmq` only, which get the session's private vhost (tests/conftest.py
`amqp_vhost` sets AMQP_URL); elsewhere they refuse, so the mark says which tests use the broker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pika
from django.db import connection

from kazoo.sync import sync_loop
from kazoo.topology import PUSHER_OWN_QUEUE, QueueDeclaration
from kazoo.warmup import warm_thread_start
from kazoo.wire import Handled, RawMessage, message_process, message_process_batch
from kazoo.worker import Worker, WorkerConfig
from tests.fixtures import sample  # noqa: F401 - re-exported: the broker tests take it from here

# The session's private vhost, set by tests/conftest.py `amqp_vhost`; empty outside tests marked `rabbitmq`.
AMQP_URL = ""


def amqp_url() -> str:
    if not AMQP_URL:
        raise RuntimeError("this test talks to RabbitMQ but is not marked `rabbitmq`: mark it "
                           "(@pytest.mark.rabbitmq) and it gets the session's private vhost")
    return AMQP_URL


def _closing_handler(message: RawMessage) -> Handled:
    # Worker threads each hold a database connection; close it after every message so the
    # test database can be flushed and dropped (pytest-django) without lingering sessions.
    try:
        return message_process(message)
    finally:
        connection.close()


def _closing_batch_handler(messages: Sequence[RawMessage]) -> list[Handled]:
    try:
        return message_process_batch(messages)
    finally:
        connection.close()


class RunningConsumer:
    def __init__(self, worker: Worker, thread: threading.Thread) -> None:
        self.worker = worker
        self.thread = thread
        self.config = worker.config

    def wait_handled(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.worker.messages_total < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"consumer handled {self.worker.messages_total} of {count} messages in {timeout}s")
            time.sleep(0.02)

    def wait_connected(self, timeout: float = 15.0) -> None:
        if not self.worker.connected.wait(timeout):
            raise AssertionError("consumer did not connect to RabbitMQ")


@contextmanager
def consumer_running(
    *,
    push_workers: int = 8,
    handler: Callable[[RawMessage], Handled] = _closing_handler,
    batch_handler: Callable[[Sequence[RawMessage]], list[Handled]] | None = _closing_batch_handler,
    registration_lanes: int = 4,
    queue: str | None = None,
    queue_declaration: QueueDeclaration = PUSHER_OWN_QUEUE,
    warm: bool = False,
) -> Iterator[RunningConsumer]:
    """A consumer on fresh queue names (or on `queue`, e.g. one Kazoo declared first). The
    registration lanes take batches through `batch_handler` (None: one message at a time through
    `handler`, as a custom handler does). `warm`: the provider warm-up runs beside it, started as
    runconsumer starts it (kazoo.warmup.warm_thread_start: not when PUSHER_PROVIDER_WARMUP is off).

    The queue is declared as `queue_declaration` says: by default pusher's own (not auto-delete,
    no length limit or TTL), so that a test can look into it after the consumer stopped or lost its
    connection; `kazoo.topology.KAZOO_QUEUE` for runconsumer's default, Kazoo's."""
    suffix = uuid.uuid4().hex[:10]
    config = WorkerConfig(
        amqp_url=amqp_url(),
        queue=queue or f"pusher_test_{suffix}",
        queue_declaration=queue_declaration,
        dead_letter_exchange=f"pusher_test_dlx_{suffix}",
        dead_letter_queue=f"pusher_test_dlq_{suffix}",
        prefetch=50,
        push_workers=push_workers,
        registration_lanes=registration_lanes,
    )
    worker = Worker(config, handler=handler, batch_handler=batch_handler)
    thread = threading.Thread(target=worker.run, name="test-consumer", daemon=True)
    thread.start()
    sync_thread = threading.Thread(target=sync_loop, args=(worker.stopping,), name="test-sync", daemon=True)
    sync_thread.start()
    warm_thread = warm_thread_start(worker.connected, worker.stopping) if warm else None
    running = RunningConsumer(worker, thread)
    try:
        running.wait_connected()
        yield running
    finally:
        worker.stop()
        thread.join(timeout=30)
        sync_thread.join(timeout=10)
        if warm_thread is not None:
            warm_thread.join(timeout=20)
        assert not thread.is_alive(), "consumer did not stop within 30 s"
        with broker_channel() as channel:
            channel.queue_delete(config.queue)
            channel.queue_delete(config.dead_letter_queue)
            channel.exchange_delete(config.dead_letter_exchange)


def wait_for(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    """Poll `predicate` until it holds or `timeout` passes: the consumer's writes and Kazoo syncs land
    in its own threads, after `wait_handled` has returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@contextmanager
def broker_channel() -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url()))
    try:
        yield conn.channel()
    finally:
        conn.close()


def publish(
    channel: Any,
    exchange: str,
    routing_key: str,
    body: dict[str, Any] | bytes,
    *,
    content_type: str = "application/json",
    content_encoding: str | None = None,
) -> None:
    """As Kamailio's kazoo module publishes: only content_type set, transient, no headers."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    channel.basic_publish(
        exchange,
        routing_key,
        payload,
        pika.BasicProperties(content_type=content_type, content_encoding=content_encoding),
    )


def dead_letter_get(channel: Any, queue: str, timeout: float = 5.0) -> tuple[Any, Any, Any]:
    """The next dead letter, waited for: the consumer counts a message handled as it publishes its
    dead letter, and the broker routes it a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        got = channel.basic_get(queue, auto_ack=True)
        if got[0] is not None or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def dead_letters(channel: Any, queue: str, count: int, timeout: float = 5.0) -> list[tuple[dict[str, Any], bytes]]:
    """Every dead letter in `queue`, once at least `count` are there (or `timeout` passed): the
    consumer counts a message handled as it publishes its dead letter, which leaves the socket in
    the loop's next pass, and the broker routes it a moment later."""
    deadline = time.monotonic() + timeout
    while channel.queue_declare(queue, passive=True).method.message_count < count and time.monotonic() < deadline:
        time.sleep(0.02)
    out = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((dict(properties.headers or {}), body))
