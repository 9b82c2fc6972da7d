"""Kazoo's exchanges and pusher's queues on them: declared by the consumer, and by the soak, the
benchmarks and the tests through the same functions, so that all of them see one topology."""

from __future__ import annotations

from typing import Any

# Kazoo declares these non-durable and not auto-delete; a mismatch makes RabbitMQ close the channel.
KAZOO_EXCHANGES = (("registrar", "topic"), ("pushes", "topic"), ("targeted", "direct"))
BINDINGS = (
    ("registrar", "registration.success.*.*"),
    # `#`, not Kazoo's `*.*`: Kamailio publishes the raw Token-ID, and a token with a dot
    # would silently miss a `*.*` binding.
    ("pushes", "notification.push.#"),
)


def exchanges_declare(channel: Any) -> None:
    """Kazoo's exchanges, exactly as Kazoo declares them."""
    for name, kind in KAZOO_EXCHANGES:
        channel.exchange_declare(name, exchange_type=kind, durable=False, auto_delete=False)


def queue_declare(channel: Any, queue: str, *, durable: bool = False) -> None:
    """pusher's shared queue (competing consumers) on Kazoo's exchanges: reg_success, push_req,
    and what is addressed to the queue by name on `targeted`."""
    exchanges_declare(channel)
    # Not auto-delete (Kazoo's was): messages published while no consumer runs must wait.
    channel.queue_declare(queue, durable=durable, auto_delete=False)
    for exchange, key in BINDINGS:
        channel.queue_bind(queue, exchange, routing_key=key)
    channel.queue_bind(queue, "targeted", routing_key=queue)


def dead_letters_declare(channel: Any, exchange: str, queue: str) -> None:
    """pusher's own dead-letter exchange and queue (durable: they hold what needs a human)."""
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, routing_key="#")
