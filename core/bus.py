"""AMQP publishes from services, after commit, through whichever publisher the running
process registered (the consumer registers its own connection's threadsafe publish)."""

import json
import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)

Publisher = Callable[[str, str, bytes], None]
_publisher: Publisher | None = None


def publisher_set(publisher: Publisher | None) -> None:
    global _publisher
    _publisher = publisher


def bus_publish(*, exchange: str, routing_key: str, body: dict[str, Any]) -> None:
    """Publish after the current transaction commits; dropped with a warning if no broker is attached
    (e.g. a push sent from the admin while no consumer runs in this process)."""
    payload = json.dumps(body, separators=(",", ":")).encode()

    def send() -> None:
        if _publisher is None:
            log.warning("no AMQP publisher in this process: %s to %s/%s not sent",
                        body.get("Event-Name"), exchange, routing_key)
            return
        _publisher(exchange, routing_key, payload)

    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(send)
    else:
        send()
