"""The AMQP consumer: a faithful, sturdier member of a Kazoo cluster.

One pika BlockingConnection owned by the main thread; messages are handled on worker threads
and acknowledged on the connection thread (pika is not thread-safe) only after their work is
committed. reg_success messages for one device go to the same single-thread lane so they stay
in order; push_req messages go to a wider pool because each waits on a provider.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import pika
import pika.exceptions
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, reset_queries
from django.utils import timezone

from pusher_site import bus, metrics
from pusher_site.errors import BadMessage
from pusher_site.events import event_publish
from pusher_site.messages import Action, Handled, RawMessage, message_peek, message_process

log = logging.getLogger("pusher.consumer")

# Kazoo declares these non-durable and not auto-delete; a mismatch makes RabbitMQ close the channel.
KAZOO_EXCHANGES = (("registrar", "topic"), ("pushes", "topic"), ("targeted", "direct"))
BINDINGS = (
    ("registrar", "registration.success.*.*"),
    # `#`, not Kazoo's `*.*`: Kamailio publishes the raw Token-ID, and a token with a dot
    # would silently miss a `*.*` binding.
    ("pushes", "notification.push.#"),
)


@dataclass(frozen=True)
class WorkerConfig:
    amqp_url: str
    queue: str
    queue_durable: bool
    dead_letter_exchange: str
    dead_letter_queue: str
    prefetch: int
    push_workers: int
    registration_lanes: int = 8


class Worker:
    def __init__(self, config: WorkerConfig, handler: Callable[[RawMessage], Handled] = message_process) -> None:
        self.config = config
        self.handler = handler
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self._generation = 0
        self._inflight = 0
        self._lanes = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"reg-lane-{i}")
            for i in range(config.registration_lanes)
        ]
        self._pushes = ThreadPoolExecutor(max_workers=config.push_workers, thread_name_prefix="push")
        self.messages_total = 0
        self.dead_lettered = 0
        self.last_message_at: float | None = None
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None

    # --- lifecycle ----------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: Any) -> None:  # handlers only set a flag
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        backoff = 1.0
        announced_wait = False
        while not self.stopping.is_set():
            try:
                self._session()
                backoff = 1.0
            except (pika.exceptions.AMQPError, OSError) as exc:
                was_connected = self.connected.is_set()
                self._disconnected()
                if was_connected:
                    log.warning("lost the broker (%s); reconnecting", _describe(exc))
                    event_publish("consumer.disconnected", outcome=_describe(exc))
                elif not announced_wait:
                    log.warning(
                        "RabbitMQ is not reachable at %s (%s); waiting for it (retrying with backoff)",
                        _safe_url(self.config.amqp_url), _describe(exc),
                    )
                    announced_wait = True
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        for executor in (*self._lanes, self._pushes):
            executor.shutdown(wait=True)
        log.info("consumer stopped cleanly")
        return 0

    def _disconnected(self) -> None:
        self.connected.clear()
        metrics.CONSUMER_CONNECTED.set(0)
        bus.publisher_set(None)
        self._generation += 1  # acks for deliveries of the old channel are void: they will be redelivered
        self._inflight = 0
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001, S110 - closing an already-broken connection
                pass

    def _session(self) -> None:
        params = pika.URLParameters(self.config.amqp_url)
        params.heartbeat = 30
        params.blocked_connection_timeout = 60
        params.client_properties = {"connection_name": f"pusher {socket.gethostname()}:{os.getpid()}"}
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        self._connection, self._channel = connection, channel
        self._declare(channel)
        channel.basic_qos(prefetch_count=self.config.prefetch)
        generation = self._generation
        consumer_tag = channel.basic_consume(
            self.config.queue, partial(self._on_message, generation), auto_ack=False
        )
        bus.publisher_set(partial(self._publish_threadsafe, connection, channel))
        self.connected.set()
        metrics.CONSUMER_CONNECTED.set(1)
        log.info("consuming from %s on %s", self.config.queue, _safe_url(self.config.amqp_url))
        event_publish("consumer.connected", outcome=self.config.queue)
        while not self.stopping.is_set():
            connection.process_data_events(time_limit=0.2)
        # Graceful stop: no new deliveries, finish and ack what is in hand, then close.
        channel.basic_cancel(consumer_tag)
        deadline = time.monotonic() + 30
        while self._inflight > 0 and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
        bus.publisher_set(None)
        connection.close()
        self.connected.clear()
        metrics.CONSUMER_CONNECTED.set(0)
        event_publish("consumer.disconnected", outcome="stopped")

    def _declare(self, channel: Any) -> None:
        for name, kind in KAZOO_EXCHANGES:
            channel.exchange_declare(name, exchange_type=kind, durable=False, auto_delete=False)
        channel.exchange_declare(self.config.dead_letter_exchange, exchange_type="topic", durable=True)
        channel.queue_declare(self.config.dead_letter_queue, durable=True)
        channel.queue_bind(self.config.dead_letter_queue, self.config.dead_letter_exchange, routing_key="#")
        # Not auto-delete (Kazoo's was): messages published while no consumer runs must wait.
        channel.queue_declare(self.config.queue, durable=self.config.queue_durable, auto_delete=False)
        for exchange, key in BINDINGS:
            channel.queue_bind(self.config.queue, exchange, routing_key=key)
        channel.queue_bind(self.config.queue, "targeted", routing_key=self.config.queue)

    # --- messages -------------------------------------------------------------------
    def _on_message(self, generation: int, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        message = RawMessage(
            body=body,
            content_type=properties.content_type,
            content_encoding=properties.content_encoding,
            exchange=method.exchange,
            routing_key=method.routing_key,
            redelivered=bool(method.redelivered),
            received_at=time.time(),
            headers=dict(properties.headers or {}),
        )
        if method.exchange == "pushes":
            executor = self._pushes
        else:
            executor = self._lanes[zlib.crc32(method.routing_key.encode()) % len(self._lanes)]
        self._inflight += 1
        future = executor.submit(self._handle, message)
        connection = self._connection

        def done(f: Future) -> None:
            try:
                connection.add_callback_threadsafe(
                    partial(self._finish, generation, channel, method.delivery_tag, message, f)
                )
            except pika.exceptions.AMQPError:
                pass  # connection gone: the broker redelivers the message to whoever consumes next

        future.add_done_callback(done)

    def _handle(self, message: RawMessage) -> Handled:
        backoff = 0.5
        while True:
            try:
                _connections_check()
                return self.handler(message)
            except BadMessage as exc:
                event, msg_id = message_peek(message.body)
                return Handled(Action.DEAD_LETTER, event, "dead_letter", exc.message, msg_id)
            except (OperationalError, InterfaceError) as exc:
                # The database went away: wait and retry; the message stays unacked meanwhile.
                if self.stopping.is_set():
                    return Handled(Action.REQUEUE, "", "requeue", "stopping while the database is down")
                log.warning("database unavailable (%s); retrying in %.1fs", str(exc).strip()[:200], backoff)
                try:
                    close_old_connections()  # drops the broken connection; the retry opens a new one
                except Exception:  # noqa: BLE001, S110 - the connection is already broken
                    pass
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:
                event, msg_id = message_peek(message.body)
                log.exception("unexpected error handling msg_id=%s event=%s", msg_id, event)
                reason = f"internal error: {type(exc).__name__}"
                return Handled(Action.DEAD_LETTER, event, "dead_letter", reason, msg_id)

    def _finish(self, generation: int, channel: Any, tag: int, message: RawMessage, future: Future) -> None:
        if generation != self._generation or not channel.is_open:
            return  # the channel this delivery came on is gone; the broker redelivers it
        self._inflight -= 1
        self.messages_total += 1
        self.last_message_at = time.time()
        handled: Handled = future.result()
        if handled.action is Action.DEAD_LETTER:
            self.dead_lettered += 1
            metrics.DEAD_LETTERS.labels(event=handled.event or "unknown", reason=_reason_label(handled.reason)).inc()
            log.warning(
                "dead-lettered msg_id=%s event=%s exchange=%s routing_key=%s: %s",
                handled.msg_id or "-", handled.event or "unknown", message.exchange, message.routing_key[:200],
                handled.reason,
            )
            channel.basic_publish(
                self.config.dead_letter_exchange,
                message.routing_key[:255] or "unrouted",
                message.body,
                pika.BasicProperties(
                    content_type=message.content_type,
                    content_encoding=message.content_encoding,
                    delivery_mode=2,
                    headers={
                        "x-pusher-reason": handled.reason[:1000],
                        "x-pusher-event": handled.event,
                        "x-pusher-msg-id": handled.msg_id,
                        "x-original-exchange": message.exchange,
                        "x-original-routing-key": message.routing_key[:255],
                        "x-dead-lettered-at": timezone.now().isoformat(),
                    },
                ),
            )
            channel.basic_ack(tag)
        elif handled.action is Action.REQUEUE:
            channel.basic_nack(tag, requeue=True)
        else:
            channel.basic_ack(tag)

    def _publish_threadsafe(self, connection: Any, channel: Any, exchange: str, routing_key: str, body: bytes) -> None:
        properties = pika.BasicProperties(content_type="application/json")

        def publish() -> None:
            if channel.is_open:
                channel.basic_publish(exchange, routing_key, body, properties)

        connection.add_callback_threadsafe(publish)


_thread_state = threading.local()
CONNECTION_CHECK_INTERVAL_S = 5.0


def _connections_check() -> None:
    """Django's per-request connection housekeeping, at most every few seconds per thread: with
    CONN_HEALTH_CHECKS each call costs a `SELECT 1`, too much for every message. A connection that
    broke in between fails its next query, and the retry path in `_handle` replaces it."""
    now = time.monotonic()
    if now - getattr(_thread_state, "checked_at", 0.0) >= CONNECTION_CHECK_INTERVAL_S:
        close_old_connections()
        _thread_state.checked_at = now
    if settings.DEBUG:
        reset_queries()  # DEBUG keeps every query per connection: unbounded in a long-lived worker


def _reason_label(reason: str) -> str:
    """A bounded label for metrics: the reason's first words, not its variable details."""
    return " ".join(reason.split(":")[0].split()[:6])[:60] or "unknown"


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text[:200]}"


def _safe_url(url: str) -> str:
    """The AMQP URL without its password."""
    params = pika.URLParameters(url)
    return f"amqp://{params.credentials.username}@{params.host}:{params.port}{'/' + params.virtual_host}"
