"""The soak's scenarios. Each publishes its traffic, injects its faults mid-stream, waits for the
dust to settle and returns its figures with the expectations it checked (Figures.problems)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from soak import broker
from soak.consumer import ConsumerProcess
from soak.counting import Figures, count, settled, statuses
from soak.env import say
from soak.fakes import Fakes
from soak.privatepg import PrivatePostgres
from soak.traffic import Sent, Traffic
from tests.fakes.apns import Answer

STREAM = 5000  # mixed reg_success + push_req in the broker, kill and two-consumer scenarios
RATE = 400.0  # messages/s: the stream lasts long enough to be cut several times
SETTLE_TIMEOUT_S = 90.0


@dataclass
class Context:
    """One scenario's broker names, fakes and consumers; `cleanup` removes them all."""

    name: str
    vhost: str
    amqp_url: str
    fakes: Fakes
    private_pg: PrivatePostgres | None = None
    queue: str = field(default_factory=lambda: broker.unique_name("pusher_soak"))
    consumers: list[ConsumerProcess] = field(default_factory=list)

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}_dead_letters"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.queue}.dead_letter"

    def consumer(self, name: str, *, workers: int = 32) -> ConsumerProcess:
        env = {
            **os.environ, **self.fakes.consumer_env(),
            "AMQP_URL": self.amqp_url,
            **broker.QUEUE_ENV,
            "PUSHER_DEAD_LETTER_EXCHANGE": self.dead_letter_exchange,
            "PUSHER_DEAD_LETTER_QUEUE": self.dead_letter_queue,
        }
        process = ConsumerProcess(name=name, queue=self.queue, env=env, workers=workers)
        self.consumers.append(process)
        return process

    def prepare(self) -> None:
        broker.queue_declare(self.amqp_url, self.queue)

    def queue_empty(self) -> bool:
        return broker.queue_depth(self.amqp_url, self.queue) == 0

    def dead_lettered(self) -> int:
        return broker.queue_depth(self.amqp_url, self.dead_letter_queue)

    def settle_and_count(self, sent: list[Sent], started: float) -> Figures:
        settled(sent, queue_empty=self.queue_empty, timeout=SETTLE_TIMEOUT_S)
        figures = count(self.name, sent, self.fakes, dead_lettered=self.dead_lettered(),
                        seconds=time.monotonic() - started)
        # What the consumers' logs say about the usual suspects, to tell the causes of a failure apart.
        timeouts = sum(c.log_count("timed out after") for c in self.consumers)
        duplicates = sum(c.log_count("status=duplicate") for c in self.consumers)
        if timeouts:
            figures.notes.append(f"{timeouts} registration(s) ignored: the User-Agent rule timed out (logged)")
        if duplicates:
            figures.notes.append(f"{duplicates} push_req acked as 'duplicate' (Msg-ID already claimed)")
        return figures

    def cleanup(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
        broker.queues_delete(self.amqp_url, [self.queue, self.dead_letter_queue], [self.dead_letter_exchange])


def expect_clean(figures: Figures, *, duplicates_checked: bool = False) -> None:
    """What every stream scenario promises: every message handled, nothing lost, sent twice,
    dead-lettered or left half-written. `duplicates_checked`: the scenario allows some duplicates
    and has checked them itself."""
    figures.expect(figures.handled == figures.sent, f"{figures.sent - figures.handled} message(s) not handled")
    figures.expect(figures.lost == 0, f"{figures.lost} message(s) lost ({figures.lost_registrations} reg_success, "
                                      f"{figures.lost - figures.lost_registrations} push_req)")
    if not duplicates_checked:
        figures.expect(figures.duplicates == 0, f"{figures.duplicates} push(es) sent twice")
    figures.expect(figures.dead_lettered == 0, f"{figures.dead_lettered} message(s) dead-lettered")
    figures.expect(figures.stuck == 0, f"{figures.stuck} delivery(ies) left queued")


def tag() -> str:
    return uuid.uuid4().hex[:8]


# --- 1. the broker connection is lost -------------------------------------------------------------


def close_when_connected(ctx: Context, consumer: ConsumerProcess, timeout: float = 20.0) -> int:
    """Force-close the consumer's connection once it has one (it may still be reconnecting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer.wait_ready(timeout=max(0.1, deadline - time.monotonic()))
        closed = broker.connections_close(consumer.pid, ctx.vhost)
        if closed:
            return closed
        time.sleep(0.2)
    return 0


def broker_connection_lost(ctx: Context) -> Figures:
    traffic = Traffic(tag())
    messages = traffic.mixed(STREAM)
    consumer = ctx.consumer("c1").start()
    started = time.monotonic()
    publisher = broker.Publisher(ctx.amqp_url)
    # Slower than the other streams: finding and closing a connection takes rabbitmqctl a second or two.
    thread = publisher.run_in_thread(messages, rate=RATE / 2)
    closed = 0
    for fraction in (0.1, 0.35, 0.6):
        publisher.wait_published(int(len(messages) * fraction))
        began = time.monotonic()
        closed += close_when_connected(ctx, consumer)
        say(f"  {publisher.published} published: closed the consumer's connection ({closed} so far, "
            f"{time.monotonic() - began:.1f} s to find and close it)")
    thread.join()
    figures = ctx.settle_and_count(traffic.sent, started)
    reconnects = consumer.log_count("lost the broker")
    figures.notes.append(f"{closed} connections force-closed, {reconnects} reconnects")
    figures.expect(closed >= 3 and reconnects >= 3, "the consumer's connection was not cut 3 times")
    expect_clean(figures)
    return figures


# --- 2. the consumer is killed (SIGKILL) and restarted --------------------------------------------------


def consumer_killed(ctx: Context) -> Figures:
    traffic = Traffic(tag())
    messages = traffic.mixed(STREAM)
    consumer = ctx.consumer("c1").start()
    started = time.monotonic()
    publisher = broker.Publisher(ctx.amqp_url)
    thread = publisher.run_in_thread(messages, rate=RATE)
    restarts = []
    successors: list[float] = []  # when each killed consumer was dead and its successor started
    for fraction in (0.3, 0.65):
        publisher.wait_published(int(len(messages) * fraction))
        consumer.kill()
        down = time.monotonic()
        successors.append(time.time())
        consumer.start()
        restarts.append(time.monotonic() - down)
        say(f"  {publisher.published} published: SIGKILL, restarted in {restarts[-1]:.1f} s")
    thread.join()
    figures = ctx.settle_and_count(traffic.sent, started)
    figures.notes.append(f"SIGKILL x{len(restarts)}, back in {', '.join(f'{s:.1f}' for s in restarts)} s")
    # What a killed consumer had in hand comes back to the restarted one. A push_req it had sent
    # may be sent again: its claim is taken over once the dead sender's lease has run out and sent
    # again within its deadline (a missing VoIP push is a missed call, a second one is harmless),
    # or its claim was not written yet (claims are written beside the send) and it is sent as new.
    # So a push may reach the fake twice, but only once from the killed consumer and once from its
    # successor: a receipt before the successor started can only be the killed one's (the fake may
    # read what it sent a few ms after the SIGKILL: measured once, 2.2 ms), one after it the
    # successor's (a restart takes over a second).
    resent = consumer.log_count("its sender died")
    accepted = {call_id: [r.received_at for r in receipts if r.accepted]
                for call_id, receipts in ctx.fakes.receipts().items()}
    twice = {call_id: times for call_id, times in accepted.items() if len(times) > 1}
    unexplained = [call_id for call_id, times in twice.items()
                   if len(times) != 2 or not any(times[0] < started < times[1] for started in successors)]
    figures.notes.append(f"{resent} push(es) taken over from the killed consumer (lease run out) and sent again; "
                         f"{len(twice)} push(es) reached the fake twice, {len(twice) - len(unexplained)} of them "
                         "once from a killed consumer and once from its successor")
    figures.expect(not unexplained, f"{len(unexplained)} push(es) reached the fake twice other than once from a "
                                    "killed consumer and once from its successor")
    figures.expect(figures.unsent == 0, f"{figures.unsent} push(es) neither sent nor expired (missed calls)")
    expect_clean(figures, duplicates_checked=True)
    return figures


# --- 3. PostgreSQL restarts (a private instance) ---------------------------------------------------------


def postgres_restart(ctx: Context) -> Figures:
    assert ctx.private_pg is not None, "runs on the private PostgreSQL instance"
    traffic = Traffic(tag())
    messages = traffic.mixed(3000)
    consumer = ctx.consumer("c1").start()
    started = time.monotonic()
    publisher = broker.Publisher(ctx.amqp_url)
    thread = publisher.run_in_thread(messages, rate=300.0)
    downtimes = []
    for fraction in (0.3, 0.65):
        publisher.wait_published(int(len(messages) * fraction))
        downtimes.append(ctx.private_pg.restart())
        say(f"  {publisher.published} published: PostgreSQL restarted ({downtimes[-1]:.1f} s)")
    thread.join()
    figures = ctx.settle_and_count(traffic.sent, started)
    waits = consumer.log_count("database unavailable")
    figures.notes.append(f"PostgreSQL restarted x{len(downtimes)}, {waits} database waits/retries logged")
    figures.expect(waits > 0, "the consumer never saw the database go away")
    figures.expect(consumer.process is not None and consumer.process.poll() is None, "the consumer died")
    expect_clean(figures)
    return figures


# --- 4. the fake APNs misbehaves ---------------------------------------------------------------------------

TRANSIENT = (Answer.reset(), Answer.goaway(), Answer.error(500, "InternalServerError"),
             Answer.error(503, "ServiceUnavailable"), Answer.error(429, "TooManyRequests"), Answer.stall())
HOPELESS = (Answer.error(503, "ServiceUnavailable"), Answer.error(429, "TooManyRequests"), Answer.stall(),
            Answer.reset())


def apns_faults(ctx: Context) -> Figures:
    """A: 300 pushes (10 s window) while every 5th answer is a reset, GOAWAY, 500, 503, 429 or a
    stall: each is retried on a fresh connection and sent. B: 80 pushes (3 s window) to tokens
    that always get 503/429/stall/reset: each expires, with nothing sent after its deadline."""
    traffic = Traffic(tag())
    retried = [traffic.push_req(i, expires=10) for i in range(300)]
    faults = [TRANSIENT[i // 5 % len(TRANSIENT)] if i % 5 == 0 else Answer.ok() for i in range(len(retried))]
    ctx.fakes.apns.enqueue(*faults)
    hopeless = [traffic.push_req(1000 + i, expires=3) for i in range(80)]
    for i, (_, _, body) in enumerate(hopeless):
        ctx.fakes.apns.set_token_answer(body["Token-ID"], HOPELESS[i % len(HOPELESS)])
    ctx.consumer("c1").start()
    started = time.monotonic()
    publisher = broker.Publisher(ctx.amqp_url)
    publisher.run(retried, rate=100.0)
    publisher.run(hopeless, rate=40.0)
    figures = ctx.settle_and_count(traffic.sent, started)
    by_status = statuses(traffic.sent[:len(retried)]), statuses(traffic.sent[len(retried):])
    from push.models import Delivery

    unclear = Delivery.objects.filter(msg_id__in=[s.msg_id for s in traffic.sent], status="expired").exclude(
        reason="deadline", error__contains="window").count()
    figures.notes.append(f"A (transient faults): {by_status[0]}; B (never succeeds): {by_status[1]}; "
                         f"fake answers: {ctx.fakes.apns.stats}")
    figures.expect(by_status[0].get("sent", 0) >= len(retried) * 0.95, "transient faults were not retried to success")
    figures.expect(by_status[1].get("expired", 0) == len(hopeless), "hopeless pushes did not all expire")
    figures.expect(unclear == 0, f"{unclear} expired without the deadline reason")
    figures.expect(figures.late == 0, f"{figures.late} request(s) reached APNs after their deadline")
    figures.expect(figures.lost == 0 and figures.stuck == 0, "pushes lost or left queued")
    unexplained = figures.duplicates - figures.duplicates_after_reset
    figures.notes.append(f"{figures.duplicates} push(es) accepted twice by the fake, {figures.duplicates_after_reset} "
                         "of them after an acceptance on a connection the fake then killed (reset/GOAWAY: the "
                         "answer may never have arrived, a retry is right)")
    figures.expect(unexplained == 0, f"{unexplained} push(es) accepted twice with no killed connection to explain it")
    return figures


# --- 5. the FCM token endpoint is down ----------------------------------------------------------------------


def fcm_token_endpoint_down(ctx: Context) -> Figures:
    traffic = Traffic(tag())
    during = [traffic.push_req(i, provider="firebase", expires=2) for i in range(40)]
    after = [traffic.push_req(100 + i, provider="firebase") for i in range(40)]
    ctx.fakes.fcm.token_endpoint_down(True)
    consumer = ctx.consumer("c1").start()
    pid = consumer.pid
    started = time.monotonic()
    publisher = broker.Publisher(ctx.amqp_url)
    publisher.run(during, rate=40.0)
    settled(traffic.sent, queue_empty=ctx.queue_empty, timeout=30, quiet=4)
    ctx.fakes.fcm.token_endpoint_down(False)
    back = time.time()
    publisher.run(after, rate=40.0)
    figures = ctx.settle_and_count(traffic.sent, started)
    from push.models import Delivery

    down = Delivery.objects.filter(msg_id__in=[s.msg_id for s in traffic.sent[:len(during)]])
    clear = down.filter(status="expired", error__icontains="token endpoint").count()
    first_sent = Delivery.objects.filter(msg_id__in=[s.msg_id for s in traffic.sent[len(during):]],
                                         status="sent").order_by("finished_at").first()
    recovery = first_sent.finished_at.timestamp() - back if first_sent else float("nan")
    figures.notes.append(f"down: {statuses(traffic.sent[:len(during)])} ({clear} say 'token endpoint'); "
                         f"back up: {statuses(traffic.sent[len(during):])}, first push sent {recovery:.1f} s "
                         f"after the endpoint returned, same consumer pid: {consumer.pid == pid}")
    figures.expect(clear == len(during), "pushes during the outage did not all expire with a clear reason")
    figures.expect(statuses(traffic.sent[len(during):]).get("sent", 0) == len(after), "no full recovery")
    figures.expect(consumer.pid == pid and consumer.starts == 1, "the consumer was restarted")
    figures.expect(figures.lost == 0 and figures.stuck == 0 and figures.duplicates == 0, "lost/stuck/duplicates")
    return figures


# --- 6. two consumers share the queue -----------------------------------------------------------------------


def two_consumers(ctx: Context) -> Figures:
    """Two processes compete for one queue; every 10th push_req is also published a second time
    with the same Msg-ID (a republish), so both processes may hold copies of it at once. A fresh
    push_req goes to the provider before anything is written (kazoo.pushlane), so both copies of a
    republish may be pushed (the second row written finds the Msg-ID taken and is acked as a
    duplicate): at most one extra push per republished message, never a lost one. (Kamailio does
    not republish a Msg-ID; redeliveries, which it can't avoid, are checked before they are sent.)"""
    traffic = Traffic(tag())
    messages = []
    for message, sent in zip(traffic.mixed(STREAM), list(traffic.sent), strict=True):
        messages.append(message)
        if sent.kind == "push" and int(sent.msg_id.rsplit("-", 1)[1]) % 20 == 1:
            messages.append(message)
            traffic.sent.append(sent)
    first, second = ctx.consumer("c1").start(), ctx.consumer("c2").start()
    started = time.monotonic()
    broker.Publisher(ctx.amqp_url).run(messages, rate=RATE * 1.5)
    figures = ctx.settle_and_count(traffic.sent, started)
    totals = [(consumer.status() or {}).get("messages_total", 0) for consumer in (first, second)]
    republished = len(messages) - STREAM
    figures.notes.append(f"{republished} republished push_req; messages per consumer: {totals}; "
                         f"{figures.duplicates} pushed by both consumers")
    figures.expect(all(isinstance(t, int) and t > 0 for t in totals), "one consumer did nothing")
    figures.expect(figures.duplicates <= republished, f"{figures.duplicates} push(es) sent twice, more than the "
                                                      f"{republished} republished")
    expect_clean(figures, duplicates_checked=True)
    return figures


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Context], Figures]
    private_pg: bool = False
    timeout_s: float = 120.0


# Each takes 10-45 s on a quiet machine; the timeouts (and the soak's overall budget) bound a bad day.
SCENARIOS = (
    Scenario("broker-lost", "broker connection force-closed x3 mid-stream", broker_connection_lost),
    Scenario("consumer-killed", "consumer SIGKILLed x2 and restarted mid-stream", consumer_killed),
    Scenario("postgres-restart", "PostgreSQL (private instance) restarted x2 mid-stream", postgres_restart,
             private_pg=True),
    Scenario("apns-faults", "APNs resets, GOAWAY, 500/503/429, stalls", apns_faults, timeout_s=90.0),
    Scenario("fcm-token-down", "FCM OAuth2 token endpoint down, then back", fcm_token_endpoint_down, timeout_s=90.0),
    Scenario("two-consumers", "two consumer processes share the queue", two_consumers),
)
