"""RabbitMQ for the soak: a private vhost, the queue declared the way the consumer declares it,
a publisher that publishes as Kamailio does (with confirms, so "sent" is exact), and the one
fault it injects: closing the connections of one consumer process, found by its connection name.

Why a private vhost: the consumer binds to Kazoo's shared `registrar` and `pushes` exchanges, so
on the default vhost the soak's 5,000 messages would also land in every other pusher queue on the
machine (other people's test consumers), and theirs in ours. The vhost is made and removed as the
test suite makes its own (tests/vhost.py).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions

from tests.vhost import rabbitmqctl, vhost_create, vhost_delete, vhost_url  # noqa: F401 - soak.main uses broker.vhost_*


@contextmanager
def channel_open(url: str) -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


# The soak's consumers declare pusher's own queue (not auto-delete, no length limit or TTL), not
# Kazoo's default: the soak kills its only consumer and publishes 5,000 messages meanwhile, which
# Kazoo's declaration would drop with the queue (auto-delete) or beyond 100 ready messages. What
# the soak measures is what pusher loses, not what the queue's policy discards.
QUEUE_ENV = {"PUSHER_QUEUE_AUTO_DELETE": "0", "PUSHER_QUEUE_MAX_LENGTH": "none", "PUSHER_QUEUE_MESSAGE_TTL_MS": "none"}


def queue_declare(url: str, queue: str) -> None:
    """Declare and bind the queue before anything is published, exactly as the consumer will
    (kazoo.topology, with QUEUE_ENV), so messages published while no consumer runs wait in it."""
    from kazoo import topology

    with channel_open(url) as channel:
        topology.queue_declare(channel, queue, topology.PUSHER_OWN_QUEUE)


def queue_depth(url: str, queue: str) -> int:
    """Messages ready in the queue (0 when it does not exist)."""
    try:
        with channel_open(url) as channel:
            return channel.queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0


def queues_delete(url: str, queues: Sequence[str], exchanges: Sequence[str] = ()) -> None:
    with channel_open(url) as channel:
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)


# --- the consumer's connections -------------------------------------------------------------------


def connections_of(pid: int, vhost: str) -> list[str]:
    """RabbitMQ connection pids (`<rabbit@host.N.N.N>`) of the consumer process `pid` in `vhost`:
    the worker names its connection `pusher <host>:<pid>` (client property connection_name)."""
    wanted = re.compile(r'\{"connection_name","pusher [^"]*:' + str(pid) + r'"\}')
    found = []
    for line in rabbitmqctl("list_connections", "pid", "vhost", "client_properties").splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1] == vhost and wanted.search(fields[2]):
            found.append(fields[0])
    return found


def connections_close(pid: int, vhost: str, reason: str = "soak") -> int:
    """Force-close only this consumer's connections (never close_all_connections: the broker is shared)."""
    closed = 0
    for connection in connections_of(pid, vhost):
        rabbitmqctl("close_connection", connection, reason)
        closed += 1
    return closed


# --- publishing -------------------------------------------------------------------------------------


class Publisher:
    """Publishes as Kamailio's kazoo module does (content type only, transient), with publisher
    confirms, optionally at a fixed rate; `on_progress(n)` is called after each message."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.published = 0

    def run(self, messages: Sequence[tuple[str, str, dict[str, Any]]], *, rate: float = 0.0,
            on_progress: Callable[[int], None] | None = None) -> float:
        properties = pika.BasicProperties(content_type="application/json")
        started = time.monotonic()
        with channel_open(self.url) as channel:
            channel.confirm_delivery()
            for index, (exchange, routing_key, body) in enumerate(messages):
                if rate > 0:
                    pause = started + index / rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                channel.basic_publish(exchange, routing_key, json.dumps(body).encode(), properties, mandatory=True)
                self.published += 1
                if on_progress is not None:
                    on_progress(self.published)
        return time.monotonic() - started

    def run_in_thread(self, messages: Sequence[tuple[str, str, dict[str, Any]]], *, rate: float) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(messages,), kwargs={"rate": rate}, name="publisher",
                                  daemon=True)
        thread.start()
        return thread

    def wait_published(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.published < count and time.monotonic() < deadline:
            time.sleep(0.01)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
