"""The AMQP consumer: a faithful, sturdier member of a Kazoo cluster.

The connection that consumes is a pika AsyncioConnection on the APNs client's event loop, the
loop the push lane (kazoo/pushlane.py) runs on: a push_req goes from the socket it was read from
to the HTTP/2 connection it is sent on without leaving that thread (a hand-over between threads
costs a wake-up, and on a small VM a wake-up costs more CPU than the push itself). The loop is
the only thread that touches pika (it is not thread-safe): messages handled elsewhere are acked
there, only after their work is committed. reg_success messages for one device go to the same
single-thread lane so they stay in order; a lane takes every message waiting for it and handles
them as one batch (one digest query, bulk writes, one hand-back to the loop).

The thread that calls `run` declares the topology (a short BlockingConnection: its errors, a
refused login or a queue declared otherwise, are the ones to tell apart), starts the consuming
connection on the loop and waits for it to end, reconnecting with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import pika
import pika.exceptions
from django.utils import timezone
from pika.adapters.asyncio_connection import AsyncioConnection

from core import bus, metrics
from core.dbwait import WaitStopped, connections_check, database_wait
from core.errors import InvalidInput
from core.events import event_publish
from core.signals import stop_on_signals
from kazoo import topology
from kazoo.connection import consumer_loop, describe, pika_quiet, safe_url, socket_abandon
from kazoo.reglanes import RegistrationLane, Ticket
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
# A settled delivery above one still in hand waits up to this long for the ones below it, so that
# one `multiple` ack covers them all: one frame for RabbitMQ to process instead of one per delivery.
ACK_HOLD_S = 0.05
# Exit status for what no reconnect fixes: RabbitMQ refuses the login, or the shared queue exists
# declared otherwise. EX_CONFIG (sysexits.h), for systemd's RestartPreventExitStatus.
EXIT_LOGIN_REFUSED = EXIT_QUEUE_MISMATCH = 78
LOOP_STOPPED = "the consumer's event loop stopped"


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
        # Loop-only state from here to _push_refusal (the loop of the current session).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._connection: Any = None
        self._channel: Any = None
        self._consumer_tag: str | None = None
        self._stop_started = False
        self._close_reason: BaseException | None = None  # why the connection is being closed, if not a stop
        # Delivery tags of the current channel not yet acked or nacked.
        self._unsettled: set[int] = set()
        # Settled ones waiting to be acked with those below them (ACK_HOLD_S).
        self._held: set[int] = set()
        self._held_timer: asyncio.TimerHandle | None = None
        self._lanes = [RegistrationLane(f"reg-lane-{i}", self._lane_handle) for i in range(config.registration_lanes)]
        # Deliveries for each lane, handed over once pika has dispatched all it read (one wake-up
        # per lane per read instead of one per message).
        self._lane_pending: list[list[tuple[Ticket, RawMessage]]] = [[] for _ in self._lanes]
        self._lanes_feed_due = False
        # Why push_req cannot be sent this session (the APNs client could not be built): each is
        # dead-lettered with it rather than left unacked.
        self._push_refusal: str | None = None
        # What the session on the loop tells the thread in `run`: "consuming", then how it ended
        # (None: stopped; else the exception that closed it).
        self._states: queue.SimpleQueue[str | BaseException | None] = queue.SimpleQueue()
        self._pushes = ThreadPoolExecutor(max_workers=config.push_workers, thread_name_prefix="push")
        from kazoo.pushlane import PushLane  # the push app's models: imported once Django is set up

        self._push_lane = PushLane(
            complete=self._complete, fallback=self._handle, fallback_executor=self._pushes,
            stopping=self.stopping.is_set,
        )
        self.messages_total = 0
        self.dead_lettered = 0
        self.last_message_at: float | None = None

    # --- lifecycle ----------------------------------------------------------------
    def _wake_connection(self) -> None:
        """From any thread (`stopping.set()`): the session on the loop begins its graceful stop."""
        self._on_loop(self._stop_begin)

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """`callback(*args)` on the session's loop: at once when called there, else in its next pass
        (one wake-up). Nothing when no loop is left to run it: its connection is gone with it, and
        the broker redelivers what it held."""
        if threading.get_ident() == self._loop_thread:
            callback(*args)
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(callback, *args)

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
                    log.warning("lost the broker (%s); reconnecting", describe(exc))
                    event_publish("consumer.disconnected", outcome=describe(exc))
                    announced_wait = False
                elif not announced_wait:
                    log.warning(
                        "RabbitMQ is not reachable at %s (%s); waiting for it (retrying with backoff)",
                        safe_url(self.config.amqp_url), describe(exc),
                    )
                    announced_wait = True
                else:
                    log.warning("RabbitMQ still not reachable (%s); next try in %.0fs", describe(exc), backoff)
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

    def _params(self) -> pika.URLParameters:
        params = pika.URLParameters(self.config.amqp_url)
        params.heartbeat = 30
        params.blocked_connection_timeout = 60
        params.client_properties = {"connection_name": f"pusher {socket.gethostname()}:{os.getpid()}"}
        return params

    def _session(self) -> None:
        """One connection's life: declare, consume on the loop until it ends; raises what ended it
        unless it was a stop."""
        params = self._params()
        with pika_quiet():
            declaring = pika.BlockingConnection(params)
        try:
            self._declare(declaring.channel())
        finally:
            with contextlib.suppress(Exception):  # the refusal closed it already
                declaring.close()
        loop, self._push_refusal = consumer_loop()
        self._states = queue.SimpleQueue()
        self._loop = loop
        try:
            loop.call_soon_threadsafe(self._open, params)
        except RuntimeError:  # closed since: the APNs client was reconfigured this very moment
            raise pika.exceptions.AMQPConnectionError(LOOP_STOPPED) from None
        state = self._state_wait(loop)
        if state == "consuming":
            bus.publisher_set(self._publish_threadsafe)
            self.connected.set()
            metrics.CONSUMER_CONNECTED.set(1)
            log.info("consuming from %s on %s", self.config.queue, safe_url(self.config.amqp_url))
            event_publish("consumer.connected", outcome=self.config.queue)
            state = self._state_wait(loop)
        if isinstance(state, BaseException):
            raise state
        was_connected = self.connected.is_set()
        self._disconnected()
        if was_connected:
            event_publish("consumer.disconnected", outcome="stopped")

    def _state_wait(self, loop: asyncio.AbstractEventLoop) -> str | BaseException | None:
        """The session's next state; an error if its loop stops under it (the APNs client was
        reconfigured, which closes the old client's loop)."""
        while True:
            try:
                return self._states.get(timeout=1.0)
            except queue.Empty:
                if loop.is_closed() or not loop.is_running():
                    socket_abandon(self._connection)
                    return pika.exceptions.AMQPConnectionError(LOOP_STOPPED)

    def _declare(self, channel: Any) -> None:
        topology.dead_letters_declare(channel, self.config.dead_letter_exchange, self.config.dead_letter_queue)
        topology.queue_declare(channel, self.config.queue, self.config.queue_declaration)

    # --- the session, on the loop -------------------------------------------------------
    def _open(self, params: pika.URLParameters) -> None:
        self._loop_thread = threading.get_ident()
        self._stop_started = False
        self._close_reason = None
        self._consumer_tag = None
        if self.stopping.is_set():
            self._end(None)
            return
        try:
            self._connection = AsyncioConnection(
                params, on_open_callback=self._on_open, on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed, custom_ioloop=asyncio.get_running_loop(),
            )
        except Exception as exc:  # noqa: BLE001 - told to `run`, which reconnects
            self._end(exc)

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, connection: Any, error: BaseException) -> None:
        self._end(None if self._stop_started else error)

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.basic_qos(prefetch_count=self.config.prefetch, callback=self._on_qos)

    def _on_qos(self, _frame: Any) -> None:
        if self._stop_started:
            if self._connection is not None and self._connection.is_open:
                self._connection.close()
            return
        self._consumer_tag = self._channel.basic_consume(
            self.config.queue, partial(self._on_message, self._generation), auto_ack=False,
            callback=self._on_consuming,
        )

    def _on_consuming(self, _frame: Any) -> None:
        self._states.put("consuming")

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        """The broker closed the channel (a queue deleted, an ack it refused): the connection
        goes too, and `run` reconnects."""
        if self._connection is not None and self._connection.is_open:
            if not self._stop_started:
                self._close_reason = reason
            self._connection.close()

    def _on_closed(self, connection: Any, reason: BaseException) -> None:
        """What `run` is told: why the broker closed the channel, else nothing after a stop, else why
        the connection closed."""
        self._end(self._close_reason or (None if self._stop_started else reason))

    def _end(self, result: BaseException | None) -> None:
        """The session is over: what its channel held is void (the broker redelivers it)."""
        self._generation += 1
        self._unsettled, self._held = set(), set()
        if self._held_timer is not None:
            self._held_timer.cancel()
        self._held_timer = None
        self._lane_pending = [[] for _ in self._lanes]
        self._lanes_feed_due = False  # a feed still scheduled finds nothing; one on a dead loop never runs
        self._connection = self._channel = None
        self._states.put(result)

    def _stop_begin(self) -> None:
        """Graceful stop: no new deliveries, finish and ack what is in hand (30 s at most), close."""
        if self._stop_started or self._connection is None:
            return
        self._stop_started = True
        if self._channel is None or not self._channel.is_open or self._consumer_tag is None:
            if not (self._connection.is_closed or self._connection.is_closing):
                self._connection.close()  # still opening: on_open_error tells `run`
            return
        self._channel.basic_cancel(self._consumer_tag)
        self._lanes_feed()
        self._stop_drain(time.monotonic() + 30)

    def _stop_drain(self, deadline: float) -> None:
        connection, channel = self._connection, self._channel
        if connection is None or not connection.is_open:
            return  # closed meanwhile: _on_closed told `run`
        if self._unsettled and time.monotonic() < deadline:
            asyncio.get_running_loop().call_later(0.1, self._stop_drain, deadline)
            return
        if channel is not None and channel.is_open:
            self._held_flush(channel)
        connection.close()

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
            if self._push_refusal is not None:
                self._finish_many([(ticket, message, dead_letter(message, self._push_refusal))])
                return
            try:  # a bug costs this message, never the connection pika calls us from
                self._push_lane.take(ticket, message)
            except Exception as exc:  # noqa: BLE001 - logged with its traceback by _internal_error
                self._finish_many([(ticket, message, _internal_error(message, exc, "taking"))])
            return
        self._lane_pending[zlib.crc32(method.routing_key.encode()) % len(self._lanes)].append((ticket, message))
        if not self._lanes_feed_due:
            self._lanes_feed_due = True
            asyncio.get_running_loop().call_soon(self._lanes_feed)

    def _lanes_feed(self) -> None:
        """On the loop, after pika dispatched what it read: each lane gets its share."""
        self._lanes_feed_due = False
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
        except Exception as exc:  # noqa: BLE001 - logged with its traceback by _internal_error
            return _internal_error(message, exc, "handling")

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
        with, as (ticket, message, handled), acked (or dead-lettered, requeued) on the loop in one
        wake-up for all of them (none when the push lane, on the loop already, calls)."""
        self._on_loop(self._finish_many, items)

    def _finish_many(self, items: list[tuple[Ticket, RawMessage, Handled]]) -> None:
        """On the loop: settle each message, then ack them all at once."""
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
                        describe(exc))
            publish(ours)

    def _ack(self, channel: Any, tags: list[int]) -> None:
        """Every tag below the lowest still unsettled one is settled (tags grow with each delivery),
        so one `multiple` ack covers those. The ones above it are held for ACK_HOLD_S: the
        deliveries below them usually settle by then (the other registration lane's batch, a push
        still out) and one `multiple` ack covers them too; the rest are then acked one by one."""
        self._held.update(tags)
        self._held_send(channel, all_of_them=False)
        if self._held and self._held_timer is None:
            self._held_timer = asyncio.get_running_loop().call_later(
                ACK_HOLD_S, self._held_due, channel, self._generation
            )

    def _held_due(self, channel: Any, generation: int) -> None:
        self._held_timer = None
        if generation == self._generation:  # else the channel is gone, and what it held with it
            self._held_flush(channel)

    def _held_flush(self, channel: Any) -> None:
        """Ack everything held now (the hold ran out, or the consumer stops)."""
        if self._held_timer is not None:
            self._held_timer.cancel()
        self._held_timer = None
        if self._held and channel.is_open:
            self._held_send(channel, all_of_them=True)

    def _held_send(self, channel: Any, *, all_of_them: bool) -> None:
        """Ack the held tags below the lowest delivery still in hand with one `multiple` ack, and
        with `all_of_them` the others one by one. pika buffers the frames until the loop finds the
        socket writable, so they leave in one write."""
        lowest_open = min(self._unsettled, default=None)
        covered = [tag for tag in self._held if lowest_open is None or tag < lowest_open]
        self._held.difference_update(covered)
        frames = [(max(covered), True)] if covered else []
        if all_of_them:
            frames += sorted((tag, False) for tag in self._held)
            self._held.clear()
        for tag, multiple in frames:
            channel.basic_ack(tag, multiple=multiple)

    def _publish_threadsafe(self, exchange: str, routing_key: str, body: bytes) -> None:
        """The bus's publisher (events, push_resp) from any thread: published on the loop."""
        properties = pika.BasicProperties(content_type="application/json")

        def publish() -> None:
            channel = self._channel
            if channel is not None and channel.is_open:
                channel.basic_publish(exchange, routing_key, body, properties)

        self._on_loop(publish)


class _StopEvent(threading.Event):
    """The worker's stop flag: setting it also starts the graceful stop of the session on the loop."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake()


def _internal_error(message: RawMessage, exc: Exception, doing: str) -> Handled:
    """A bug met while `doing` the message: dead-lettered with the exception's type, logged with
    its traceback (call from the `except` block)."""
    verdict = dead_letter(message, f"internal error: {type(exc).__name__}")
    log.exception("unexpected error %s msg_id=%s event=%s", doing, verdict.msg_id, verdict.event)
    return verdict


def _requeue_stopping() -> Handled:
    return Handled(Action.REQUEUE, "", "requeue", "stopping while the database is down")


def _reason_label(reason: str) -> str:
    """A bounded label for metrics: the reason's first words, not its variable details."""
    return " ".join(reason.split(":")[0].split()[:6])[:60] or "unknown"
