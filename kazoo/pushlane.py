"""The consumer's push lane: nothing slow between a push_req and the provider.

A push spends ~30 ms waiting for Apple or Google and well under a millisecond of CPU, so the lane
keeps hundreds in flight as coroutines on one event loop (the APNs client's own, so a push reaches
its HTTP/2 connection without a thread hop). On that path:

* a fresh push_req (not redelivered) goes to the provider at once, through `push_attempts`, the
  attempt loop every sender shares. Nothing is written in front of it: a push still unanswered
  CLAIM_AFTER_S after it was sent gets its claim row meanwhile (every claim waiting is one
  pipelined `INSERT ... ON CONFLICT (msg_id) DO NOTHING` on the claim thread, committed without
  waiting for the WAL flush), so a redelivery of the push_req finds its sender and waits for it;
* its outcome is written durably in batches on the store thread, one pipelined statement for every
  push that finished together (an UPDATE of the claimed ones; the others, most pushes, get their
  row here, INSERTed with their outcome), and only then is the message acked: nothing is lost. A
  claim not yet written (or lost in a database crash) when the consumer dies only lets a
  redelivery send again: a second VoIP push for one Call-ID is harmless to the phone (CallKit keys
  calls by it), a missing one is a missed call;
* the app a push goes through comes from the app cache; an entry that is missing (the first push
  of an app) or stale is read on a reader thread of its own, never behind a write;
* duplicates are checked where they can arise: a redelivered push_req (its consumer died, or its
  channel closed) goes to `push_request_handle`, whose claim waits for a live sender or takes over
  a dead one's row; a Msg-ID published twice to this consumer is caught by the lane's memory; one
  published twice to two consumers is sent by both (the second row written finds the Msg-ID taken
  and its message is acked as a duplicate).

The domain decisions are `push.services`'; this module only turns them into acks and dead letters.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.db import connections

from core.dbwait import WaitStopped, connections_check, database_wait
from core.errors import InvalidInput
from kazoo.wire import (
    Action,
    Handled,
    RawMessage,
    event_of,
    handled_bad,
    message_decode,
    push_req_logged,
    push_reqs_logged,
)
from push.models import Delivery, DeliverySource, DeliveryStatus, PushApp
from push.providers.rounds import ANSWER_ROUND_S
from push.services.appcache import push_app_cached, push_app_get
from push.services.deliveries import (
    claim_connection_close,
    deliveries_devices_fill,
    deliveries_insert,
    deliveries_save_finished,
    delivery_finish_apply,
    delivery_finished,
    delivery_new,
    delivery_touch,
)
from push.services.policy import PROVIDER_OF_TOKEN_TYPE, Finish, PushJob, push_app_for, push_job_prepare
from push.services.sending import push_attempts, push_followup

log = logging.getLogger("pusher.messages")

# Rows per INSERT or UPDATE: big enough to amortise a round trip, small enough to keep one
# statement short.
BATCH_MAX = 200
FCM_THREADS = 32
# A push still unanswered this long after it was sent gets its claim row; one answered sooner is
# written once, with its outcome. Apple and Google answer most pushes in 20-100 ms, so most pushes
# cost one INSERT instead of an INSERT and an UPDATE. The claim is what a redelivery of the push_req
# (its channel closed) finds to wait for this sender instead of sending again; without it, a second
# push for the same call, which the phone ignores. An APNs answer is read up to ANSWER_ROUND_S after
# it came in (push.providers.rounds), so the delay is that plus 50 ms.
CLAIM_AFTER_S = ANSWER_ROUND_S + 0.05
# How long a finished push waits for others to share its outcome write. Its push has gone out: this
# only delays the write, the ack and the live-feed event, and at low rates it shares one write (and
# one wake-up of the store thread) among several pushes. bench.push --steady, 100/s, consumer CPU per
# push on one machine and hour: 3.7-3.9 ms at 0.25 s, 4.0-4.6 at 0.1 s, 4.9-5.4 at 0.02 s.
RECORD_GATHER_S = 0.1
# Msg-IDs this lane remembers: a push_req published twice reaches a consumer moments apart.
RECENT_MSG_IDS = 20_000

# What the lane reports per message: (the caller's ticket, the message, what was done).
Completed = tuple[Any, RawMessage, Handled]


@dataclass(eq=False)
class _Push:
    ticket: Any
    message: RawMessage
    job: PushJob
    delivery: Delivery
    app: PushApp | None = None
    finish: Finish | None = None
    claimed: asyncio.Future[bool] | None = None  # True once the claim is committed (pk set unless taken);
    # None: not claimed (answered within CLAIM_AFTER_S, no app to send through, or the claim
    # failed): the outcome is inserted
    claim_timer: asyncio.TimerHandle | None = None  # cancelled when answered sooner: no wake-up for nothing


class PushLane:
    """push_req handled concurrently. `take` on the APNs client's loop; `complete` is called (from
    the loop, or a fallback thread) with batches of settled messages, to be acked; `fallback` handles one
    message synchronously on `fallback_executor` (redeliveries, other events on the pushes
    exchange); `stopping()` tells the store thread to give up waiting out a database outage."""

    def __init__(
        self,
        *,
        complete: Callable[[list[Completed]], None],
        fallback: Callable[[RawMessage], Handled],
        fallback_executor: Executor,
        stopping: Callable[[], bool],
    ) -> None:
        self._complete = complete
        self._fallback = fallback
        self._fallback_executor = fallback_executor
        self._stopping = stopping
        self._claimer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-claim")
        self._store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-store")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-read")
        self._fcm = ThreadPoolExecutor(max_workers=FCM_THREADS, thread_name_prefix="push-fcm")
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        # Loop-only state, reset if the APNs client (and so the loop) is replaced.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._to_claim: list[_Push] = []
        self._to_record: list[_Push] = []
        self._claiming = False
        self._writing = False
        self._reading: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- on the loop the consumer's connection runs on (the APNs client's) ----------------

    def take(self, ticket: Any, message: RawMessage) -> None:
        """A delivery, from the consumer's connection on this loop: decoded, and its send started,
        at once (the send's first step runs in the loop's next pass)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or the APNs client was reconfigured (a new loop)
            self._loop, self._to_claim, self._to_record = loop, [], []
            self._claiming = self._writing = False
            self._reading = {}
        try:
            fields = message_decode(message)
            if event_of(fields) != ("notification", "push_req") or message.redelivered:
                self._hand_back(ticket, message)
                return
            job = push_job_prepare(fields=fields, source=DeliverySource.AMQP, received_at=message.received_at or None)
        except InvalidInput as exc:
            self._complete([(ticket, message, handled_bad(message, exc))])
            return
        if job.msg_id and self._seen(job.msg_id):
            # Acked unsent, but like every push_req it leaves its line and its count: a duplicate
            # costs the row it never gets, and nothing more on the loop than a log call.
            duplicate = delivery_new(job)
            _duplicate(duplicate, "Msg-ID already taken by this consumer")
            self._complete([(ticket, message, push_req_logged(job.msg_id[:200], duplicate))])
            return
        self._spawn(self._send(_Push(ticket, message, job, delivery_new(job))))

    def close(self) -> None:
        """After the consumer stopped taking messages and saw the last one completed: the
        threads end, and their database connections are closed."""
        for executor in (self._claimer, self._store, self._reader):
            executor.submit(connections.close_all)  # runs on that thread: closes that thread's connections
        self._claimer.submit(claim_connection_close)
        for executor in (self._claimer, self._store, self._reader, self._fcm):
            executor.shutdown(wait=True)

    # --- on the loop ------------------------------------------------------------------------

    def _seen(self, msg_id: str) -> bool:
        if msg_id in self._recent:
            return True
        self._recent[msg_id] = None
        if len(self._recent) > RECENT_MSG_IDS:
            self._recent.popitem(last=False)
        return False

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hand_back(self, ticket: Any, message: RawMessage) -> None:
        """One message for the synchronous path; completed when it returns."""
        future = self._fallback_executor.submit(self._fallback, message)
        future.add_done_callback(lambda f: self._complete([(ticket, message, f.result())]))

    async def _send(self, push: _Push) -> None:
        job, delivery = push.job, push.delivery
        try:
            await self._app_ready(job)
            app, reason, problem = push_app_for(job, delivery, app_get=_app_cached)
            if problem:
                push.finish = Finish(DeliveryStatus.FAILED, reason, problem)
            else:
                assert app is not None
                push.app = app
                self._claim_soon(push)  # if it is still being sent by then: written beside it
                push.finish = await push_attempts(
                    job, app, touch=lambda done: self._touch(push, done), fcm_executor=self._fcm
                )
        except Exception as exc:
            log.exception("sending push_req msg_id=%s failed unexpectedly", job.msg_id or "-")
            push.finish = Finish(DeliveryStatus.FAILED, "internal_error", f"internal error: {type(exc).__name__}")
        if push.claim_timer is not None:
            push.claim_timer.cancel()
        if push.claimed is not None and not await push.claimed:
            push.claimed = None  # not written (database down while stopping, or failed): the outcome is inserted
        self._record(push)

    async def _app_ready(self, job: PushJob) -> None:
        """Make sure the cache holds the push's app: the first pushes of an app wait for one read
        on the reader thread; a stale entry is used as it is and refreshed meanwhile."""
        provider = PROVIDER_OF_TOKEN_TYPE.get(job.token_type)
        if provider is None:
            return
        fresh, app = push_app_cached(app_id=job.app_id, provider=provider)
        if fresh:
            return
        key = (job.app_id, provider)
        reading = self._reading.get(key)
        if reading is None:  # one read per app however many pushes ask for it
            reading = asyncio.get_running_loop().run_in_executor(self._reader, self._app_read, key)
            self._reading[key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        if app is None:
            await asyncio.shield(reading)

    def _app_read(self, key: tuple[str, str]) -> None:
        database_wait(lambda: push_app_get(app_id=key[0], provider=key[1]), what="reading a push app",
                      stopping=self._stopping)

    async def _touch(self, push: _Push, attempts_done: int) -> None:
        """Renew the lease before another attempt; a hint for a redelivery, so it is not waited for."""
        if push.delivery.pk is not None:
            asyncio.get_running_loop().run_in_executor(self._store, self._lease_renew, push.delivery, attempts_done)

    @staticmethod
    def _lease_renew(delivery: Delivery, attempts_done: int) -> None:
        try:
            delivery_touch(delivery=delivery, attempts=attempts_done)
        except Exception as exc:  # noqa: BLE001 - the lease is a hint; the send goes on
            log.warning("could not renew the lease of delivery #%s (%s)", delivery.pk, str(exc).strip()[:200])

    def _claim_soon(self, push: _Push) -> None:
        """Claim the push CLAIM_AFTER_S from now unless it is answered by then: `_send` cancels the
        timer (its row is then written once, with its outcome)."""
        push.claim_timer = asyncio.get_running_loop().call_later(CLAIM_AFTER_S, self._claim, push)

    def _claim(self, push: _Push) -> None:
        """The push's claim, written while it is being sent: every claim waiting goes into one
        `INSERT ... ON CONFLICT (msg_id) DO NOTHING` on the claim thread, committed without waiting
        for the WAL flush (`deliveries_insert(durable=False)`), so other consumers see the Msg-ID
        taken at once and a redelivery of this push_req waits for this sender (or takes over if it
        dies). `push.claimed` says True once written (pk set, or None if another consumer held the
        Msg-ID first: both sent it, the outcome is acked as a duplicate), False if the consumer
        stops while the database is down or the write fails (the outcome is then inserted)."""
        push.claimed = asyncio.get_running_loop().create_future()
        self._to_claim.append(push)
        if not self._claiming:
            self._claiming = True
            self._spawn(self._claim_batches())

    async def _claim_batches(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._to_claim:
                batch, self._to_claim = self._to_claim, []
                try:
                    written = await loop.run_in_executor(self._claimer, self._claims_write, batch)
                except RuntimeError:  # the claim thread is shut down (the lane is closing)
                    written = False
                for push in batch:
                    assert push.claimed is not None
                    push.claimed.set_result(written)
        finally:
            self._claiming = False

    def _claims_write(self, batch: list[_Push]) -> bool:
        """On the claim thread. A database outage is waited out (the pushes wait unsent); False if
        the consumer stops meanwhile or the write fails for another reason."""
        try:
            connections_check()
            for chunk in _chunks([p.delivery for p in batch]):
                database_wait(functools.partial(deliveries_insert, chunk, durable=False),
                              what=f"claiming {len(chunk)} push_req", stopping=self._stopping)
        except WaitStopped:
            return False
        except Exception:
            log.exception("claiming %d push_req failed; their outcomes will be inserted instead", len(batch))
            return False
        return True

    def _record(self, push: _Push) -> None:
        assert push.finish is not None
        delivery_finish_apply(push.delivery, push.finish, started=push.job.started)
        self._to_record.append(push)
        if not self._writing:
            self._writing = True
            self._spawn(self._write_batches())

    async def _write_batches(self) -> None:
        """While there are finished pushes: their outcomes in one batch on the store thread, then
        their acks. Batches form by themselves: while one is written, the next pushes queue; and
        the first outcome waits RECORD_GATHER_S for others to join it (its push is out already)."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(RECORD_GATHER_S)
            while self._to_record:
                records, self._to_record = self._to_record, []
                completed = await loop.run_in_executor(self._store, self._write, records)
                if completed:
                    self._complete(completed)
        finally:
            self._writing = False

    # --- on the store thread ------------------------------------------------------------------

    def _write(self, records: list[_Push]) -> list[Completed]:
        """Write the outcomes (a push not claimed, answered quickly or with no app to send through,
        gets its row with its outcome), then say what to ack. The pushes went out already, so a
        database outage is waited out; if the consumer stops meanwhile, the messages go back to the
        queue, and a redelivery finds the row still queued and is handled by `push_request_handle`."""
        try:
            connections_check()
            # The ids a push_req did not carry come from its token's device: one read per batch,
            # here with the outcome rather than in front of the send.
            database_wait(functools.partial(deliveries_devices_fill, [p.delivery for p in records]),
                          what="reading the tokens' devices", stopping=self._stopping)
            for chunk in _chunks([p.delivery for p in records if p.claimed is None]):
                database_wait(functools.partial(deliveries_insert, chunk),
                              what=f"recording {len(chunk)} deliveries", stopping=self._stopping)
            claimed = [p.delivery for p in records if p.claimed is not None and p.delivery.pk is not None]
            for chunk in _chunks(claimed):
                database_wait(functools.partial(deliveries_save_finished, chunk),
                              what=f"recording {len(chunk)} deliveries", stopping=self._stopping)
        except WaitStopped:
            return [(p.ticket, p.message, _requeue()) for p in records]
        except Exception:
            log.exception("recording %d outcomes failed; their push_req go back to the queue", len(records))
            return [(p.ticket, p.message, _requeue()) for p in records]
        for push in records:
            if push.delivery.pk is None:  # its Msg-ID had a row already: another consumer holds it
                # Never saved: it only says, in its line and count, what became of this copy.
                _duplicate(push.delivery, "Msg-ID also taken by another consumer" + (
                    ", sent by both" if push.finish and push.finish.status == DeliveryStatus.SENT else ""))
                continue
            try:
                if push.app is not None and push.finish is not None and push.finish.result is not None:
                    push_followup(delivery=push.delivery, app=push.app, result=push.finish.result)
                delivery_finished(push.delivery)
            except Exception:  # the delivery is recorded: its message is acked whatever happens here
                log.exception("after delivery #%s: handling the provider's answer failed", push.delivery.pk)
        handled = push_reqs_logged([(p.job.msg_id[:200], p.delivery) for p in records])
        return [(p.ticket, p.message, h) for p, h in zip(records, handled, strict=True)]


def _chunks(deliveries: list[Delivery]) -> list[list[Delivery]]:
    return [deliveries[i:i + BATCH_MAX] for i in range(0, len(deliveries), BATCH_MAX)]


def _app_cached(*, app_id: str, provider: str) -> PushApp | None:
    """How the lane reads an app on the loop: from the cache alone (`_app_ready` filled it)."""
    return push_app_cached(app_id=app_id, provider=provider)[1]


def _duplicate(delivery: Delivery, reason: str) -> None:
    """Mark a delivery that is never saved as the duplicate it is, for its log line and count."""
    delivery.status = DeliveryStatus.DUPLICATE
    delivery.reason = reason


def _requeue() -> Handled:
    return Handled(Action.REQUEUE, "push_req", "requeue", "database unavailable")
