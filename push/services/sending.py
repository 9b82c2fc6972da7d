"""Sending a push_req: the attempt loop every sender shares, and what an answer means afterwards."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from core.text import mask_token, text_storable_check
from push.models import (
    Delivery,
    DeliveryStatus,
    PushApp,
)
from push.providers import apns
from push.services.apps import _app_bad_device_token
from push.services.clients import provider_send_async
from push.services.deliveries import _claim, _finish, delivery_touch
from push.services.policy import (
    ATTEMPT_MIN_S,
    Finish,
    PushJob,
    SendResult,
    expired_text,
    finish_of_result,
    push_app_for,
    push_job_prepare,
    retry_pause,
)

log = logging.getLogger(__name__)

# FCM's client (pyfcm) blocks: the synchronous callers' FCM sends wait on these threads, off the
# APNs client's loop.
_fcm_threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="push-fcm-sync")


@dataclass(frozen=True)
class PushRequest:
    """One push_req for `push_requests_handle`: the arguments of `push_request_handle`."""

    fields: Mapping[str, Any]
    source: str
    received_at: float | None = None
    push_type: str | None = None


@dataclass
class _Sending:
    """A claimed push_req whose attempts are to be made."""

    job: PushJob
    delivery: Delivery
    app: PushApp
    attempts_before: int


def push_request_handle(
    *, fields: Mapping[str, Any], source: str, received_at: float | None = None, push_type: str | None = None
) -> Delivery:
    """Handle one push_req (AMQP, API, admin or command): send it within its deadline, record the
    outcome, deactivate dead tokens. Raises InvalidInput for a push_req that cannot be handled.

    `push_type` overrides the app's push type for this one push: "alert" sends a visible
    notification (APNs apns-push-type alert on the bundle topic, FCM with a `notification`), e.g.
    a missed call to the device's remote token; None (the default) sends as the app is configured.

    The consumer sends many push_req concurrently through `kazoo.pushlane`, which claims and records
    them in batches with the same pieces; a redelivered one comes back here."""
    return push_requests_handle(
        requests=[PushRequest(fields=fields, source=source, received_at=received_at, push_type=push_type)]
    )[0]


def push_requests_handle(*, requests: Sequence[PushRequest]) -> list[Delivery]:
    """`push_request_handle` for several push_req at once (every phone of an AOR): each is claimed
    on this thread, then all their attempts run at the same time on the APNs client's event loop
    (one phone does not wait for another's answer), then each outcome is recorded on this thread
    (its database connection and transaction: the ORM stays off the loop). The deliveries come
    back in the order of `requests`. An invalid push_req raises InvalidInput before any is sent.
    A Msg-ID given twice is handled in a later round than its first push_req (found a duplicate
    then), never beside it: its claim would wait for the lease this very thread holds."""
    jobs = []
    for request in requests:
        job = push_job_prepare(fields=request.fields, source=request.source, received_at=request.received_at,
                               push_type=request.push_type)
        text_storable_check(dict(request.fields))  # the API, admin and commands; a bus message was checked when decoded
        jobs.append(job)
    deliveries: list[Delivery | None] = [None] * len(jobs)
    waiting = list(range(len(jobs)))
    while waiting:
        seen: set[str] = set()
        now: list[int] = []
        later: list[int] = []
        for index in waiting:
            msg_id = jobs[index].msg_id
            (later if msg_id and msg_id in seen else now).append(index)
            if msg_id:
                seen.add(msg_id)
        for index, delivery in zip(now, _requests_round([jobs[i] for i in now]), strict=True):
            deliveries[index] = delivery
        waiting = later
    return [d for d in deliveries if d is not None]


def _requests_round(jobs: list[PushJob]) -> list[Delivery]:
    """Claim, send all at once, record: push_req of distinct Msg-IDs."""
    started: list[Delivery | _Sending] = [_handle_start(job) for job in jobs]
    sending = [s for s in started if isinstance(s, _Sending)]
    finishes = iter(_attempts_blocking(sending) if sending else [])
    deliveries: list[Delivery] = []
    failure: BaseException | None = None
    for item in started:
        if isinstance(item, Delivery):
            deliveries.append(item)
            continue
        finish = next(finishes)
        if isinstance(finish, BaseException):
            failure = failure or finish
            deliveries.append(item.delivery)
            continue
        delivery = _finish(item.delivery, finish, started=item.job.started)
        if finish.result is not None:
            push_followup(delivery=delivery, app=item.app, result=finish.result)
        deliveries.append(delivery)
    if failure is not None:
        raise failure
    return deliveries


def _handle_start(job: PushJob) -> Delivery | _Sending:
    """Claim a push_req; a Delivery when it is done already (a duplicate, expired, no usable app)."""
    delivery, claim = _claim(job)
    if claim == "duplicate":
        delivery.status = DeliveryStatus.DUPLICATE
        delivery.reason = f"Msg-ID already handled by delivery #{delivery.pk}"
        return delivery
    attempts_before = 0
    if claim == "orphaned":
        # Taken over from a sender that died before recording the answer (see _claim_takeover).
        # Sent again if its deadline allows: a second VoIP push for the same Call-ID is harmless
        # (CallKit keys calls by their id), a missing one is a missed call.
        job, attempts_before = _job_taken_over(job, delivery)
        if time.time() + ATTEMPT_MIN_S >= job.deadline:
            return _finish(delivery, Finish(
                DeliveryStatus.EXPIRED, "deadline",
                f"its sender died after {attempts_before} attempt(s) and its {job.window:g}s window has passed; "
                "not resent", attempts_before,
            ), started=job.started)
        log.info("msg_id=%s: its sender died after %d attempt(s); sending again within the %.1fs left",
                 job.msg_id, attempts_before, job.deadline - time.time())

    app, reason, problem = push_app_for(job, delivery)
    if problem:
        return _finish(delivery, Finish(DeliveryStatus.FAILED, reason, problem, attempts_before), started=job.started)
    assert app is not None
    return _Sending(job, delivery, app, attempts_before)


async def push_attempts(
    job: PushJob, app: PushApp, *, touch: Callable[[int], Awaitable[None]], fcm_executor: Executor | None = None,
    attempts_before: int = 0,
) -> Finish:
    """The attempt loop of every sender (the consumer's push lane, and through `push_request_handle`
    the API, admin and commands): send, and on a retryable answer (429, 5xx, timeout) pause (the
    provider's Retry-After when given, else jittered backoff) and send again, never starting an
    attempt that could not end before the push_req's deadline. `touch(attempts_done)` renews the
    sender's lease before each further attempt, so that a redelivery of the same push_req waits
    for this sender instead of taking it over. `attempts_before` are the attempts of a dead sender
    this one took over from: the count goes on from there."""
    attempts = attempts_before
    result: SendResult | None = None
    while True:
        if time.time() + ATTEMPT_MIN_S >= job.deadline:
            return Finish(DeliveryStatus.EXPIRED, "deadline", expired_text(job, attempts, result), attempts, result)
        attempts += 1
        if attempts > attempts_before + 1:  # the claim (or the takeover) has just set the lease
            await touch(attempts - 1)
        result = await provider_send_async(
            app=app, fields=job.fields, token=job.token, deadline=job.deadline, push_type=job.push_type,
            fcm_executor=fcm_executor,
        )
        if result.outcome != "retry":
            return finish_of_result(result, attempts)
        pause = retry_pause(attempts, result.retry_after_s)
        if time.time() + pause + ATTEMPT_MIN_S >= job.deadline:  # the attempt could not be made in time
            return Finish(DeliveryStatus.EXPIRED, "deadline", expired_text(job, attempts, result, retrying=True),
                          attempts, result)
        await asyncio.sleep(pause)


def _job_taken_over(job: PushJob, delivery: Delivery) -> tuple[PushJob, int]:
    """The redelivered push_req's job as its first delivery fixed it (received then, due by the
    same deadline: a redelivery does not buy a push more time), and the attempts its dead sender
    made: those it recorded with its last lease renewal, plus the one it had under way (a sender
    claims as it sends)."""
    started = delivery.created_at.timestamp()
    deadline = delivery.deadline_at.timestamp() if delivery.deadline_at is not None else job.deadline
    return replace(job, started=started, deadline=min(deadline, job.deadline), window=deadline - started), (
        delivery.attempts + 1
    )


def _attempts_blocking(sending: list[_Sending]) -> list[Finish | BaseException]:
    """`push_attempts` of each push for a synchronous caller, all at once: the loops run on the
    APNs client's event loop (where its connections live), and the lease renewals come back to
    this thread, which holds the caller's database connection and transaction (the ORM is not for
    event loops). Per push, its Finish, or what its attempts raised."""
    renewals: queue.SimpleQueue[tuple[int, int, concurrent.futures.Future[None]] | None] = queue.SimpleQueue()

    def toucher(index: int) -> Callable[[int], Awaitable[None]]:
        async def touch(attempts_done: int) -> None:
            renewed: concurrent.futures.Future[None] = concurrent.futures.Future()
            renewals.put((index, attempts_done, renewed))
            await asyncio.wrap_future(renewed)
        return touch

    async def all_attempts() -> list[Finish | BaseException]:
        return await asyncio.gather(*(
            push_attempts(s.job, s.app, touch=toucher(i), fcm_executor=_fcm_threads, attempts_before=s.attempts_before)
            for i, s in enumerate(sending)
        ), return_exceptions=True)

    future = asyncio.run_coroutine_threadsafe(all_attempts(), apns.get_client().loop())
    future.add_done_callback(lambda _: renewals.put(None))
    while (renewal := renewals.get()) is not None:
        index, attempts_done, renewed = renewal
        try:
            delivery_touch(delivery=sending[index].delivery, attempts=attempts_done)
            renewed.set_result(None)
        except Exception as exc:  # noqa: BLE001 - handed to the loop, which decides
            renewed.set_exception(exc)
    return future.result()


def push_followup(*, delivery: Delivery, app: PushApp, result: SendResult) -> None:
    """What a provider's answer means beyond this push: a dead token, a misconfigured app."""
    if result.outcome == "token_invalid":
        token_dead(token=delivery.token, reason=f"{delivery.provider} answered {result.status} {result.reason}",
                   provider_timestamp_ms=result.timestamp_ms)
    elif result.outcome == "bad_device_token":
        _app_bad_device_token(app)


def token_dead(*, token: str, reason: str, provider_timestamp_ms: int | None = None) -> int:
    """Deactivate a token the provider says is dead, and clear the push objects built on it so
    Kazoo stops building push endpoints. APNs' 410 timestamp is honoured: a token registered
    again after Apple declared it dead is kept. Returns how many tokens were deactivated."""
    from registry.models import PushToken
    from registry.services import push_token_deactivate

    now = timezone.now()
    tokens = PushToken.objects.filter(token=token, active=True)
    if provider_timestamp_ms is not None:
        dead_since = datetime.fromtimestamp(provider_timestamp_ms / 1000, tz=UTC)
        tokens = tokens.filter(last_seen_at__lt=dead_since)
    count = 0
    for push_token in tokens:
        # The operator's deactivate (admin, API) is the same operation.
        push_token_deactivate(token=push_token, reason=reason, now=now)
        count += 1
    if count:
        log.info("deactivated %d token(s) %s: %s", count, mask_token(token), reason)
    return count
