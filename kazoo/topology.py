"""Kazoo's exchanges and pusher's queues on them: declared by the consumer, and by the soak, the
benchmarks and the tests through the same functions, so that all of them see one topology."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import pika.exceptions

# Kazoo declares these non-durable and not auto-delete; a mismatch makes RabbitMQ close the channel.
KAZOO_EXCHANGES = (("registrar", "topic"), ("pushes", "topic"), ("targeted", "direct"))
BINDINGS = (
    ("registrar", "registration.success.*.*"),
    # `#`, not Kazoo's `*.*`: Kamailio publishes the raw Token-ID, and a token with a dot
    # would silently miss a `*.*` binding.
    ("pushes", "notification.push.#"),
)


@dataclass(frozen=True)
class QueueDeclaration:
    """How the shared queue is declared: flags and the arguments RabbitMQ compares on redeclaring.

    The defaults are Kazoo's, so that pusher and Kazoo's own pusher app can declare the same queue
    during a migration (RabbitMQ refuses a redeclaration whose flags or arguments differ: 406
    PRECONDITION_FAILED). Kazoo's listener (applications/pusher/src/pusher_listener.erl) passes only
    `{exclusive, false}` to `kz_amqp_util:new_queue/2`, whose defaults are durable false, exclusive
    false, auto_delete true, and the arguments x-max-length 100 (AMQP short) and x-message-ttl 60000
    ms (signed int). pika encodes both as signed 32-bit integers; RabbitMQ compares integer
    arguments by value across integer types, so the declarations match.

    What that means: the queue disappears with its last consumer (and the messages in it), holds at
    most `max_length` messages ready (the oldest are dropped, not dead-lettered; messages in a
    consumer's hand do not count) and drops a message after `message_ttl_ms` in it. A stopped
    pusher therefore leaves no stale push_req to ring phones later. None leaves the argument out."""

    durable: bool = False
    auto_delete: bool = True
    max_length: int | None = 100
    message_ttl_ms: int | None = 60_000

    def arguments(self) -> dict[str, int]:
        arguments = {}
        if self.max_length is not None:
            arguments["x-max-length"] = self.max_length
        if self.message_ttl_ms is not None:
            arguments["x-message-ttl"] = self.message_ttl_ms
        return arguments


KAZOO_QUEUE = QueueDeclaration()
# pusher's declaration before it matched Kazoo's (PUSHER_QUEUE_AUTO_DELETE=0, PUSHER_QUEUE_MAX_LENGTH
# and PUSHER_QUEUE_MESSAGE_TTL_MS=none): the queue outlives its consumers and keeps every message
# until one comes back. The soak and the benchmarks use it: they publish thousands of messages
# while no consumer runs, or kill the only one.
PUSHER_OWN_QUEUE = QueueDeclaration(auto_delete=False, max_length=None, message_ttl_ms=None)


class QueueMismatch(Exception):
    """The queue exists with other flags or arguments than ours (406 on queue.declare): a
    configuration problem that reconnecting cannot solve. Its text is the one line to log."""


def exchanges_declare(channel: Any) -> None:
    """Kazoo's exchanges, exactly as Kazoo declares them."""
    for name, kind in KAZOO_EXCHANGES:
        channel.exchange_declare(name, exchange_type=kind, durable=False, auto_delete=False)


def queue_declare(channel: Any, queue: str, declaration: QueueDeclaration = KAZOO_QUEUE) -> None:
    """pusher's shared queue (competing consumers) on Kazoo's exchanges: reg_success, push_req,
    and what is addressed to the queue by name on `targeted`. Raises QueueMismatch when the
    queue exists declared otherwise (the channel is closed by then)."""
    exchanges_declare(channel)
    pika_channel_log = logging.getLogger("pika.channel")
    pika_channel_log.addFilter(_quiet_refusal)  # the refusal is told once, by QueueMismatch's line
    try:
        channel.queue_declare(
            queue, durable=declaration.durable, exclusive=False, auto_delete=declaration.auto_delete,
            arguments=declaration.arguments(),
        )
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406:
            raise
        raise QueueMismatch(queue_mismatch_text(queue, exc.reply_text)) from None
    finally:
        pika_channel_log.removeFilter(_quiet_refusal)
    for exchange, key in BINDINGS:
        channel.queue_bind(queue, exchange, routing_key=key)
    channel.queue_bind(queue, "targeted", routing_key=queue)


def _quiet_refusal(record: logging.LogRecord) -> bool:
    """pika's own warning about the channel RabbitMQ closes on a refused queue.declare."""
    return "PRECONDITION_FAILED - inequivalent arg" not in record.getMessage()


def queue_mismatch_text(queue: str, broker_said: str) -> str:
    """One line for a 406 on declaring the shared queue, from RabbitMQ's reply text
    ("PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received
    none but current is the value '60000' of type 'signedint'")."""
    said = re.search(r"inequivalent arg '([^']*)' for queue '.*' in vhost '.*?': (.*)", broker_said)
    detail = f"{said[1]}: {said[2]}" if said else broker_said.removeprefix("PRECONDITION_FAILED - ")
    return (
        f"queue {queue} exists with other arguments ({detail}): declared by Kazoo's pusher or an older "
        "pusher; set PUSHER_QUEUE_* (PUSHER_QUEUE_DURABLE, PUSHER_QUEUE_AUTO_DELETE, PUSHER_QUEUE_MAX_LENGTH, "
        "PUSHER_QUEUE_MESSAGE_TTL_MS) to match or delete the queue"
    )


def dead_letters_declare(channel: Any, exchange: str, queue: str) -> None:
    """pusher's own dead-letter exchange and queue (durable: they hold what needs a human)."""
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, routing_key="#")
