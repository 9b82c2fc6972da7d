"""The consumer's push path: many push_req in flight at once, claimed and recorded in batches.

A push spends ~30 ms waiting for Apple or Google and well under a millisecond of CPU, so the
consumer keeps hundreds in flight on one event loop (the APNs client's own, so a push reaches
its HTTP/2 connection without a thread hop) instead of a thread per push. The database work is
batched on two threads of its own: one INSERT claims every push_req that arrived together
(`deliveries_claim`), one pipelined UPDATE records every push that finished together
(`deliveries_save_finished`). Batches form by themselves: while one claim or record runs, the
next pushes queue behind it, so a quiet consumer handles each push at once and a busy one
handles them in bulk.

The decisions (deadline, retries, outcome, dead tokens) are `push.services`' own, shared with
`push_request_handle`, which still handles what the engine hands back: a push_req whose Msg-ID
already has a row (a redelivery: it waits for or takes over that row), and any message on the
pushes exchange that is not a push_req.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.db import InterfaceError, OperationalError, close_old_connections, connections

from push.models import Delivery, DeliverySource, DeliveryStatus, PushApp
from push.providers import apns
from push.services import (
    ATTEMPT_MIN_S,
    Finish,
    PushJob,
    SendResult,
    _db_retry,
    deliveries_claim,
    deliveries_save_finished,
    delivery_finish_apply,
    delivery_finished,
    delivery_touch,
    expired_text,
    finish_of_result,
    provider_send_async,
    push_app_for,
    push_followup,
    push_job_prepare,
    retry_pause,
)
from pusher_site.errors import BadMessage
from pusher_site.messages import Action, Handled, RawMessage, event_of, message_decode, message_peek, push_reqs_logged

log = logging.getLogger("pusher.messages")

# Rows per INSERT or UPDATE: big enough to amortise a round trip, small enough to keep one
# statement short.
BATCH_MAX = 200
FCM_THREADS = 32

# What the engine reports per message: (the caller's ticket, the message, what was done).
Completed = tuple[Any, RawMessage, Handled]


@dataclass
class _Item:
    ticket: Any
    message: RawMessage
    job: PushJob
    delivery: Delivery | None = None
    app: PushApp | None = None
    result: SendResult | None = None


class PushEngine:
    """push_req handled concurrently. `submit` from any thread; `complete` is called (from an
    engine thread) with batches of finished messages, to be acked; `fallback` handles one
    message synchronously (on `fallback_executor`) the way the rest of the consumer does;
    `patient(work, stopped)` runs `work` through database outages (`stopped()` if the consumer
    stops meanwhile); `db_check` is the consumer's connection housekeeping."""

    def __init__(
        self,
        *,
        complete: Callable[[list[Completed]], None],
        fallback: Callable[[RawMessage], Handled],
        fallback_executor: Executor,
        patient: Callable[[Callable[[], Any], Callable[[], Any]], Any],
        db_check: Callable[[], None],
    ) -> None:
        self._complete = complete
        self._fallback = fallback
        self._fallback_executor = fallback_executor
        self._patient = patient
        self._db_check = db_check
        self._incoming: collections.deque[tuple[Any, RawMessage]] = collections.deque()
        self._wake_lock = threading.Lock()
        self._wake_scheduled = False
        self._claim_db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-claim")
        self._record_db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-record")
        self._fcm = ThreadPoolExecutor(max_workers=FCM_THREADS, thread_name_prefix="push-fcm")
        # Loop-only state, reset if the APNs client (and so the loop) is replaced.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._to_claim: list[_Item] = []
        self._to_record: list[_Item] = []
        self._claiming = False
        self._recording = False
        self._tasks: set[asyncio.Task[None]] = set()

    # --- from the consumer's thread -------------------------------------------------------

    def submit(self, ticket: Any, message: RawMessage) -> None:
        self._incoming.append((ticket, message))
        with self._wake_lock:
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        apns.get_client().loop().call_soon_threadsafe(self._wake)

    def close(self) -> None:
        """After the consumer stopped taking messages and saw the last one completed: the
        threads end, and their database connections are closed."""
        for executor in (self._claim_db, self._record_db):
            executor.submit(connections.close_all)  # runs on that thread: closes that thread's connections
        for executor in (self._claim_db, self._record_db, self._fcm):
            executor.shutdown(wait=True)

    # --- on the loop ------------------------------------------------------------------------

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or the APNs client was reconfigured
            self._loop, self._to_claim, self._to_record = loop, [], []
            self._claiming = self._recording = False
        with self._wake_lock:
            self._wake_scheduled = False
        done: list[Completed] = []
        while self._incoming:
            ticket, message = self._incoming.popleft()
            try:
                fields = message_decode(message)
                if event_of(fields) != ("notification", "push_req"):
                    self._hand_back(ticket, message)
                    continue
                job = push_job_prepare(
                    fields=fields, source=DeliverySource.AMQP, received_at=message.received_at or None
                )
            except BadMessage as exc:
                event, msg_id = message_peek(message.body)
                handled = Handled(Action.DEAD_LETTER, event, "dead_letter", exc.message, msg_id)
                done.append((ticket, message, handled))
                continue
            self._to_claim.append(_Item(ticket, message, job))
        if done:
            self._complete(done)
        if self._to_claim and not self._claiming:
            self._claiming = True
            self._spawn(self._claim_batches())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hand_back(self, ticket: Any, message: RawMessage) -> None:
        """One message for the synchronous path; completed when it returns."""
        future = self._fallback_executor.submit(self._fallback, message)
        future.add_done_callback(lambda f: self._complete([(ticket, message, f.result())]))

    async def _claim_batches(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._to_claim:
                batch, self._to_claim = self._to_claim[:BATCH_MAX], self._to_claim[BATCH_MAX:]
                try:
                    claimed = await loop.run_in_executor(self._claim_db, self._claim, batch)
                except Exception:
                    log.exception("claiming %d push_req failed; handling them one by one", len(batch))
                    for item in batch:
                        self._hand_back(item.ticket, item.message)
                    continue
                if claimed is None:  # stopping while the database is down: back to the queue
                    self._complete([(i.ticket, i.message, _requeue()) for i in batch])
                    continue
                for item, (app, reason, problem) in zip(batch, claimed, strict=True):
                    if item.delivery is None:
                        self._hand_back(item.ticket, item.message)  # its Msg-ID has a row: a redelivery
                    elif problem:
                        self._record(item, Finish(DeliveryStatus.FAILED, reason, problem))
                    else:
                        item.app = app
                        self._spawn(self._send(item))
        finally:
            self._claiming = False

    def _claim(self, batch: list[_Item]) -> list[tuple[PushApp | None, str, str]] | None:
        """On the claim thread: the rows, and each push's app (or why it cannot be sent). The
        messages stay unacked while the database is down, as everywhere in the consumer; None if
        the consumer is stopping meanwhile."""

        def claim() -> list[tuple[PushApp | None, str, str]]:
            deliveries = deliveries_claim([item.job for item in batch])
            apps = []
            for item, delivery in zip(batch, deliveries, strict=True):
                item.delivery = delivery
                apps.append(push_app_for(item.job, delivery) if delivery is not None else (None, "", ""))
            return apps

        return self._patient(claim, lambda: None)

    async def _send(self, item: _Item) -> None:
        job, delivery, app = item.job, item.delivery, item.app
        assert delivery is not None and app is not None
        loop = asyncio.get_running_loop()
        attempts = 0
        result: SendResult | None = None
        try:
            while True:
                if time.time() + ATTEMPT_MIN_S >= job.deadline:
                    finish = Finish(DeliveryStatus.EXPIRED, "deadline", expired_text(job, attempts, result),
                                    attempts, result)
                    break
                attempts += 1
                if attempts > 1:  # renew the lease, so a redelivery waits for this sender
                    await loop.run_in_executor(self._claim_db, self._touch, delivery, attempts - 1)
                result = await provider_send_async(
                    app=app, fields=job.fields, token=job.token, deadline=job.deadline, push_type=job.push_type,
                    fcm_executor=self._fcm,
                )
                if result.outcome != "retry":
                    finish = finish_of_result(result, attempts)
                    break
                pause = retry_pause(attempts)
                if time.time() + pause >= job.deadline:
                    finish = Finish(DeliveryStatus.EXPIRED, "deadline",
                                    expired_text(job, attempts, result, retrying=True), attempts, result)
                    break
                await asyncio.sleep(pause)
        except Exception as exc:
            log.exception("sending push_req msg_id=%s failed unexpectedly", job.msg_id or "-")
            finish = Finish(DeliveryStatus.FAILED, "internal_error", f"internal error: {type(exc).__name__}",
                            attempts, None)
        item.result = finish.result
        self._record(item, finish)

    def _touch(self, delivery: Delivery, attempts: int) -> None:
        try:
            delivery_touch(delivery=delivery, attempts=attempts)
        except (OperationalError, InterfaceError) as exc:  # the lease is a hint; the send goes on
            log.warning("could not renew the lease of delivery #%s (%s)", delivery.pk, str(exc).strip()[:200])
            close_old_connections()

    def _record(self, item: _Item, finish: Finish) -> None:
        assert item.delivery is not None
        delivery_finish_apply(item.delivery, finish, started=item.job.started)
        self._to_record.append(item)
        if not self._recording:
            self._recording = True
            self._spawn(self._record_batches())

    async def _record_batches(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._to_record:
                batch, self._to_record = self._to_record[:BATCH_MAX], self._to_record[BATCH_MAX:]
                await loop.run_in_executor(self._record_db, self._save, batch)
        finally:
            self._recording = False

    def _save(self, batch: list[_Item]) -> None:
        """On the record thread: write the outcomes, then ack. The pushes went out already, so a
        database outage is waited out (`_db_retry`); if it lasts, the messages go back to the queue
        and the redelivery finds its row still queued: closed as sender_died, never resent."""
        deliveries = [item.delivery for item in batch if item.delivery is not None]  # every recorded item has one
        try:
            self._db_check()
            _db_retry(lambda: deliveries_save_finished(deliveries), what=f"recording {len(deliveries)} deliveries")
        except Exception:
            log.exception("recording %d deliveries failed; their push_req go back to the queue", len(deliveries))
            self._complete([(item.ticket, item.message, _requeue()) for item in batch])
            return
        for item, delivery in zip(batch, deliveries, strict=True):
            try:
                if item.app is not None and item.result is not None:
                    push_followup(delivery=delivery, app=item.app, result=item.result)
                delivery_finished(delivery)
            except Exception:  # the delivery is recorded: its message is acked whatever happens here
                log.exception("after delivery #%s: handling the provider's answer failed", delivery.pk)
        handled = push_reqs_logged(
            [(item.job.msg_id[:200], delivery) for item, delivery in zip(batch, deliveries, strict=True)]
        )
        self._complete([(item.ticket, item.message, h) for item, h in zip(batch, handled, strict=True)])


def _requeue() -> Handled:
    return Handled(Action.REQUEUE, "push_req", "requeue", "database unavailable")
