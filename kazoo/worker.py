"""The AMQP consumer: a faithful, sturdier member of a Kazoo cluster.

One pika BlockingConnection owned by the main thread; messages are handled on worker threads
and acknowledged on the connection thread (pika is not thread-safe) only after their work is
committed. reg_success messages for one device go to the same single-thread lane so they stay
in order; a lane takes every message waiting for it and handles them as one batch (one digest
query, bulk writes, one hand-back to the connection thread). push_req messages go to the push
lane (kazoo/pushlane.py), which keeps them all in flight at once because each waits on a provider.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import pika
import pika.exceptions
from django.db import connection as db_connection
from django.utils import timezone

from core import bus, metrics
from core.dbwait import WaitStopped, connections_check, database_wait
from core.errors import InvalidInput
from core.events import event_publish
from core.signals import stop_on_signals
from kazoo import topology
from kazoo.wire import (
    Action,
    Handled,
    RawMessage,
    dead_letter,
    handled_bad,
    message_process,
    message_process_batch,
)

log = logging.getLogger("pusher.consumer")

T = TypeVar("T")
# Where a delivery is acked: (channel generation, channel, delivery tag).
Ticket = tuple[int, Any, int]
# A registration lane takes every message waiting for it, up to this many, as one batch.
LANE_BATCH_MAX = 100
# A settled delivery above one still in hand waits up to this long for the ones below it, so that
# one `multiple` ack covers them all (pika writes each ack frame with a send(2) of its own).
ACK_HOLD_S = 0.05
# Exit status for what no reconnect fixes: RabbitMQ refuses the login, or the shared queue exists
# declared otherwise. EX_CONFIG (sysexits.h), for systemd's RestartPreventExitStatus.
EXIT_LOGIN_REFUSED = EXIT_QUEUE_MISMATCH = 78


@dataclass(frozen=True)
class WorkerConfig:
    amqp_url: str
    queue: str
    dead_letter_exchange: str
    dead_letter_queue: str
    prefetch: int
    push_workers: int
    # Two: a lane waiting for its batch's commit leaves the other working. bench.registration
    # --devices 20000 (2026-12-02): changed new/rotated 1,866-1,994 / 1,545-1,643 per s with two,
    # 1,417-1,838 / 1,202-1,460 with one; unchanged 4,039-4,411 with two, 4,230-5,032 with one.
    registration_lanes: int = 2
    queue_declaration: topology.QueueDeclaration = topology.KAZOO_QUEUE


class _Lane:
    """One thread handling the batches of its devices' reg_success messages in arrival order."""

    def __init__(self, name: str, handle: Callable[[list[tuple[Ticket, RawMessage]]], None]) -> None:
        self._queue: queue.SimpleQueue[list[tuple[Ticket, RawMessage]] | None] = queue.SimpleQueue()
        self._handle = handle
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def put(self, deliveries: list[tuple[Ticket, RawMessage]]) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        self._queue.put(deliveries)

    def close(self) -> None:
        """Handle what was put, then stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        held: list[tuple[Ticket, RawMessage]] = []
        taking = True
        while taking or held:
            if not held:
                first = self._queue.get()
                if first is None:
                    break
                held.extend(first)
            while taking and len(held) < LANE_BATCH_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    taking = False
                else:
                    held.extend(more)
            batch, held = held[:LANE_BATCH_MAX], held[LANE_BATCH_MAX:]
            try:
                self._handle(batch)
            except Exception:  # the lane must live on; these messages come back after a reconnect
                log.exception("registration lane failed on a batch of %d; left unacked", len(batch))
        db_connection.close()  # this thread's


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        handler: Callable[[RawMessage], Handled] = message_process,
        batch_handler: Callable[[Sequence[RawMessage]], list[Handled]] | None = None,
    ) -> None:
        """`handler` handles one message (a push_req the push lane hands back, and a batch's
        messages one at a time when the batch fails); `batch_handler` a registration lane's
        batch. A custom `handler` without a `batch_handler` (tests, benchmarks) handles the lanes'
        messages one at a time too."""
        self.config = config
        self.handler = handler
        if batch_handler is None and handler is message_process:
            batch_handler = message_process_batch
        self.batch_handler = batch_handler
        self.stopping = _StopEvent(self._wake_connection)
        self.connected = threading.Event()
        self._generation = 0
        # Delivery tags of the current channel not yet acked or nacked (connection thread only).
        self._unsettled: set[int] = set()
        # Settled ones waiting to be acked with those below them (ACK_HOLD_S; connection thread only).
        self._held: set[int] = set()
        self._held_timer: Any = None
        self._lanes = [_Lane(f"reg-lane-{i}", self._lane_handle) for i in range(config.registration_lanes)]
        # Deliveries for each lane, handed over once pika has dispatched all it read (one wake-up
        # per lane per read instead of one per message).
        self._lane_pending: list[list[tuple[Ticket, RawMessage]]] = [[] for _ in self._lanes]
        self._pushes = ThreadPoolExecutor(max_workers=config.push_workers, thread_name_prefix="push")
        from kazoo.pushlane import PushLane  # the push app's models: imported once Django is set up

        self._push_lane = PushLane(
            complete=self._complete, fallback=self._handle, fallback_executor=self._pushes,
            stopping=self.stopping.is_set,
        )
        self.messages_total = 0
        self.dead_lettered = 0
        self.last_message_at: float | None = None
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None

    # --- lifecycle ----------------------------------------------------------------
    def _wake_connection(self) -> None:
        """From any thread: the connection thread returns from waiting for the broker."""
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(Exception):  # closed or closing: it is not waiting
                connection.add_callback_threadsafe(_nothing)

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stopping)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Consume until stopped; returns the process's exit status: 0, or EXIT_LOGIN_REFUSED when
        RabbitMQ refuses the login (a wrong user or password does not fix itself)."""
        backoff = 1.0
        announced_wait = False
        code = 0
        while not self.stopping.is_set():
            try:
                self._session()
                backoff = 1.0
            except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError):
                self._disconnected()
                params = pika.URLParameters(self.config.amqp_url)
                user = cast(pika.PlainCredentials, params.credentials).username  # what URLParameters always makes
                log.error("RabbitMQ refused the login for user %s at %s:%d: check AMQP_URL",
                          user, params.host, params.port)
                event_publish("consumer.disconnected", outcome="login refused")
                code = EXIT_LOGIN_REFUSED
                self.stopping.set()
            except topology.QueueMismatch as exc:
                log.error("%s", exc)
                self._disconnected()
                self.stopping.set()
                code = EXIT_QUEUE_MISMATCH
            except (pika.exceptions.AMQPError, OSError) as exc:
                was_connected = self.connected.is_set()
                self._disconnected()
                if was_connected:
                    log.warning("lost the broker (%s); reconnecting", _describe(exc))
                    event_publish("consumer.disconnected", outcome=_describe(exc))
                    announced_wait = False
                elif not announced_wait:
                    log.warning(
                        "RabbitMQ is not reachable at %s (%s); waiting for it (retrying with backoff)",
                        _safe_url(self.config.amqp_url), _describe(exc),
                    )
                    announced_wait = True
                else:
                    log.warning("RabbitMQ still not reachable (%s); next try in %.0fs", _describe(exc), backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        for lane in self._lanes:
            lane.close()
        self._pushes.shutdown(wait=True)
        self._push_lane.close()
        log.info("consumer stopped cleanly" if code == 0 else "consumer stopped")
        return code

    def _disconnected(self) -> None:
        self.connected.clear()
        metrics.CONSUMER_CONNECTED.set(0)
        bus.publisher_set(None)
        self._generation += 1  # acks for deliveries of the old channel are void: they will be redelivered
        self._unsettled, self._held, self._held_timer = set(), set(), None
        self._lane_pending = [[] for _ in self._lanes]
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
        with _pika_quiet():
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
            # Without a time limit: pika adds and removes no timer per call (a quarter of this
            # thread's CPU at 100 push_req/s); `stopping.set()` wakes it (_StopEvent).
            connection.process_data_events(time_limit=None)
            self._lanes_feed()
        # Graceful stop: no new deliveries, finish and ack what is in hand, then close.
        channel.basic_cancel(consumer_tag)
        self._lanes_feed()
        deadline = time.monotonic() + 30
        while self._unsettled and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
            self._lanes_feed()
        self._held_flush(channel)
        bus.publisher_set(None)
        connection.close()
        self.connected.clear()
        metrics.CONSUMER_CONNECTED.set(0)
        event_publish("consumer.disconnected", outcome="stopped")

    def _declare(self, channel: Any) -> None:
        topology.dead_letters_declare(channel, self.config.dead_letter_exchange, self.config.dead_letter_queue)
        topology.queue_declare(channel, self.config.queue, self.config.queue_declaration)

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
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            reply_to=properties.reply_to,
            timestamp=properties.timestamp,
            app_id=properties.app_id,
        )
        self._unsettled.add(method.delivery_tag)
        ticket = (generation, channel, method.delivery_tag)
        if method.exchange == "pushes":
            self._push_lane.submit(ticket, message)
        else:
            self._lane_pending[zlib.crc32(method.routing_key.encode()) % len(self._lanes)].append((ticket, message))

    def _lanes_feed(self) -> None:
        """On the connection thread, after pika dispatched what it read: each lane gets its share."""
        for index, pending in enumerate(self._lane_pending):
            if pending:
                self._lanes[index].put(pending)
                self._lane_pending[index] = []

    def _lane_handle(self, deliveries: list[tuple[Ticket, RawMessage]]) -> None:
        messages = [message for _, message in deliveries]
        handled = self._handle_batch(messages)
        self._complete([(ticket, message, h) for (ticket, message), h in zip(deliveries, handled, strict=True)])

    def _handle_batch(self, messages: list[RawMessage]) -> list[Handled]:
        """A lane's batch, through `batch_handler`. If the batch fails for anything but a database
        outage, its messages are handled one at a time, so that one poison message is dead-lettered
        alone instead of sinking the others (nothing of the failed batch was written)."""
        if self.batch_handler is None:
            return [self._handle(message) for message in messages]
        batch_handler = self.batch_handler
        try:
            return self._database_patient(
                lambda: batch_handler(messages),
                lambda: [_requeue_stopping() for _ in messages],
            )
        except Exception:
            log.exception("a batch of %d messages failed; handling them one at a time", len(messages))
            return [self._handle(message) for message in messages]

    def _handle(self, message: RawMessage) -> Handled:
        try:
            return self._database_patient(lambda: self.handler(message), _requeue_stopping)
        except InvalidInput as exc:
            return handled_bad(message, exc)
        except Exception as exc:
            verdict = dead_letter(message, f"internal error: {type(exc).__name__}")
            log.exception("unexpected error handling msg_id=%s event=%s", verdict.msg_id, verdict.event)
            return verdict

    def _database_patient(self, work: Callable[[], T], stopped: Callable[[], T]) -> T:
        """`work()`, waiting out a database outage with its messages unacked; `stopped()` instead
        when the consumer is asked to stop during the outage."""
        def checked_work() -> T:
            connections_check()
            return work()

        try:
            return database_wait(checked_work, what="handling messages", stopping=self.stopping.is_set)
        except WaitStopped:
            return stopped()

    def _complete(self, items: list[tuple[Ticket, RawMessage, Handled]]) -> None:
        """From any thread (registration lanes, the push pool, the push lane): messages done
        with, as (ticket, message, handled), acked (or dead-lettered, requeued) on the connection
        thread in one wake-up for all of them."""
        connection = self._connection
        if connection is None:
            return  # connection gone: the broker redelivers them to whoever consumes next
        try:
            connection.add_callback_threadsafe(partial(self._finish_many, items))
        except pika.exceptions.AMQPError:
            pass

    def _finish_many(self, items: list[tuple[Ticket, RawMessage, Handled]]) -> None:
        """On the connection thread: settle each message, then ack them all at once."""
        acks: list[int] = []
        channel: Any = None
        for (generation, item_channel, tag), message, handled in items:
            if generation != self._generation or not item_channel.is_open:
                continue  # the channel this delivery came on is gone; the broker redelivers it
            if self._settle(item_channel, tag, message, handled):
                acks.append(tag)
                channel = item_channel
        if acks:
            self._ack(channel, acks)

    def _settle(self, channel: Any, tag: int, message: RawMessage, handled: Handled) -> bool:
        """Count, dead-letter or requeue one message; True if it is to be acked."""
        self._unsettled.discard(tag)
        self.messages_total += 1
        self.last_message_at = time.time()
        if handled.action is Action.REQUEUE:
            channel.basic_nack(tag, requeue=True)
            return False
        if handled.action is Action.DEAD_LETTER:
            self.dead_lettered += 1
            metrics.DEAD_LETTERS.labels(event=handled.event or "unknown", reason=_reason_label(handled.reason)).inc()
            log.warning(
                "dead-lettered msg_id=%s event=%s exchange=%s routing_key=%s: %s",
                handled.msg_id or "-", handled.event or "unknown", message.exchange, message.routing_key[:200],
                handled.reason,
            )
            self._dead_letter_publish(channel, message, handled)
        return True

    def _dead_letter_publish(self, channel: Any, message: RawMessage, handled: Handled) -> None:
        """The message as it came, to the dead-letter exchange: its body, the publisher's headers and
        properties, and pusher's x- headers (which win over same-named ones) saying why."""
        ours = {
            "x-pusher-reason": handled.reason[:1000],
            "x-pusher-event": handled.event,
            "x-pusher-msg-id": handled.msg_id,
            "x-original-exchange": message.exchange,
            "x-original-routing-key": message.routing_key[:255],
            "x-dead-lettered-at": timezone.now().isoformat(),
        }

        def publish(headers: dict[str, Any]) -> None:
            channel.basic_publish(
                self.config.dead_letter_exchange,
                message.routing_key[:255] or "unrouted",
                message.body,
                pika.BasicProperties(
                    content_type=message.content_type,
                    content_encoding=message.content_encoding,
                    delivery_mode=2,
                    headers=headers,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    reply_to=message.reply_to,
                    timestamp=message.timestamp,
                    app_id=message.app_id,
                ),
            )

        try:
            publish({**message.headers, **ours})
        except (pika.exceptions.UnsupportedAMQPFieldException, TypeError, ValueError) as exc:
            # pika encodes every frame before writing any, so nothing was sent: without the
            # publisher's headers rather than not at all.
            log.warning("dead letter msg_id=%s sent without its original headers (%s)", handled.msg_id or "-",
                        _describe(exc))
            publish(ours)

    def _ack(self, channel: Any, tags: list[int]) -> None:
        """Every tag below the lowest still unsettled one is settled (tags grow with each delivery),
        so one `multiple` ack covers those. The ones above it are held for ACK_HOLD_S: the
        deliveries below them usually settle by then (the other registration lane's batch, a push
        still out) and one `multiple` ack covers them too; the rest are then acked one by one."""
        self._held.update(tags)
        self._held_send(channel, all_of_them=False)
        if self._held and self._held_timer is None and self._connection is not None:
            self._held_timer = self._connection.call_later(
                ACK_HOLD_S, partial(self._held_due, channel, self._generation)
            )

    def _held_due(self, channel: Any, generation: int) -> None:
        self._held_timer = None
        if generation == self._generation:  # else the channel is gone, and what it held with it
            self._held_flush(channel)

    def _held_flush(self, channel: Any) -> None:
        """Ack everything held now (the hold ran out, or the consumer stops)."""
        if self._held_timer is not None and self._connection is not None:
            self._connection.remove_timeout(self._held_timer)
        self._held_timer = None
        if self._held and channel.is_open:
            self._held_send(channel, all_of_them=True)

    def _held_send(self, channel: Any, *, all_of_them: bool) -> None:
        """Ack the held tags below the lowest delivery still in hand with one `multiple` ack, and
        with `all_of_them` the others one by one, in one socket write: BlockingChannel.basic_ack
        polls until the socket has taken its frame, so all but the last frame go through the
        channel underneath it (the same basic_ack, unflushed) and the last one's flush sends them."""
        lowest_open = min(self._unsettled, default=None)
        covered = [tag for tag in self._held if lowest_open is None or tag < lowest_open]
        self._held.difference_update(covered)
        frames = [(max(covered), True)] if covered else []
        if all_of_them:
            frames += sorted((tag, False) for tag in self._held)
            self._held.clear()
        if not frames:
            return
        for tag, multiple in frames[:-1]:
            channel._impl.basic_ack(delivery_tag=tag, multiple=multiple)
        tag, multiple = frames[-1]
        channel.basic_ack(tag, multiple=multiple)

    def _publish_threadsafe(self, connection: Any, channel: Any, exchange: str, routing_key: str, body: bytes) -> None:
        properties = pika.BasicProperties(content_type="application/json")

        def publish() -> None:
            if channel.is_open:
                channel.basic_publish(exchange, routing_key, body, properties)

        connection.add_callback_threadsafe(publish)


class _StopEvent(threading.Event):
    """The worker's stop flag: setting it also wakes the connection thread, which waits for the
    broker without a time limit."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake()


def _nothing() -> None:
    pass


_pika_log = logging.getLogger("pika")
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved_level = logging.NOTSET


@contextmanager
def _pika_quiet() -> Iterator[None]:
    """pika logs one failed connection attempt as a dozen ERROR lines and a traceback (each layer
    of its connection workflow reports it) before raising it; the consumer reports it itself, in
    one line. Nested and concurrent uses (tests run several consumers) restore the level once."""
    global _quiet_depth, _quiet_saved_level
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved_level = _pika_log.level
            _pika_log.setLevel(logging.CRITICAL)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                _pika_log.setLevel(_quiet_saved_level)


def _requeue_stopping() -> Handled:
    return Handled(Action.REQUEUE, "", "requeue", "stopping while the database is down")


def _reason_label(reason: str) -> str:
    """A bounded label for metrics: the reason's first words, not its variable details."""
    return " ".join(reason.split(":")[0].split()[:6])[:60] or "unknown"


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text[:200]}"


def _safe_url(url: str) -> str:
    """The AMQP URL without its password."""
    params = pika.URLParameters(url)
    credentials = cast(pika.PlainCredentials, params.credentials)  # what URLParameters always makes
    return f"amqp://{credentials.username}@{params.host}:{params.port}{'/' + params.virtual_host}"
