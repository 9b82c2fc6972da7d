"""The minimal consumer `python -m bench.floor` measures (bench/floor.py says what the floor is).

`python -m bench.floor_runner --queue Q --host H --port P --ca-file F [--prefetch 1000] [--amqp-url URL]
[--record DSN] [--pika-thread]`, with the client certificate and its key (PEM) on stdin. One process,
one thread, one asyncio loop: pika's AsyncioConnection consumes Q (manual acks) on the loop that
drives push/providers/h2transport.py's H2Transport to the fake APNs at H:P. Per delivery: json.loads,
one HTTP/2 POST, await the answer, basic_ack. Nothing else: no Django, no database, no logging, no retry, no idle timer.

`--pika-thread` moves pika to a thread of its own (a BlockingConnection, as pusher's consumer ran it until
2026-12-03):
deliveries are handed to the loop with `call_soon_threadsafe`, acks back with `add_callback_threadsafe`.
What that costs over the one-thread floor is what pusher's second thread costs it.

`--record DSN` adds what pusher does per push beyond the protocol, done the floor's way, on the same
loop and thread: one log line per push (a StreamHandler on stderr), and the outcome written durably
to PostgreSQL (psycopg's AsyncConnection; outcomes gathered 100 ms, as pusher's lane gathers them,
then one pipelined INSERT in a transaction) before the message is acked. The table is the run's
own (`bench_floor_<queue>`), dropped on exit.

Prints "consuming" once the consumer is registered (the TLS + HTTP/2 connection is open by then).
On SIGTERM (or SIGINT) it cancels the consumer, lets the pushes in flight finish (bounded), closes both
connections, prints one JSON line ({"pushes": n, "statuses": {...}, "unfinished": n, "recorded": n or
null}) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import signal
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pika
import psycopg
from pika.adapters.asyncio_connection import AsyncioConnection

from push.providers.h2transport import H2Transport

# What the real client sends for a VoIP push, less user-agent (push/providers/apns.py, `_headers`).
FIELDS = [(b"apns-topic", b"com.acme.phone.voip"), (b"apns-push-type", b"voip"), (b"apns-priority", b"10"),
          (b"apns-expiration", b"0")]
# As the real client: fields that change per push stay out of the HPACK dynamic table.
UNINDEXED = frozenset({":path", "apns-id", "apns-expiration", "apns-collapse-id"})
AMQP_STEP_TIMEOUT_S = 30.0
RECORD_GATHER_S = 0.1  # as kazoo/pushlane.py's
log = logging.getLogger("floor")
STOP_GRACE_S = 5.0


def ssl_context(ca_file: str, cert_pem: str) -> ssl.SSLContext:
    """As push/providers/apns.py's `_certificate_ssl_context`: ssl loads a client certificate only
    from a file, so it goes through a 0600 temporary file, removed as soon as it is loaded."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=ca_file)
    fd, path = tempfile.mkstemp(prefix="floor-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(cert_pem.strip() + "\n")
        context.load_cert_chain(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return context


class Consumer:
    """The per-delivery work: one task per delivery (the answer takes --delay-ms; deliveries overlap)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: H2Transport, origin: httpx.Request) -> None:
        self.loop = loop
        self.transport = transport
        self.origin = origin
        self.channel: Any = None
        # How acks reach the channel: directly on the loop, or handed to pika's thread (--pika-thread).
        self.ack: Callable[[list[int]], None] = self.ack_here
        # asyncio holds tasks weakly: the set keeps the ones in flight alive.
        self.inflight: set[asyncio.Task[None]] = set()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.database: psycopg.AsyncConnection[Any] | None = None  # --record
        self.table = ""
        self.pending: list[tuple[int, tuple[str, str, int, float]]] = []
        self.flushing = False

    def ack_here(self, tags: list[int]) -> None:
        for tag in tags:
            self.channel.basic_ack(tag)

    def on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.spawn(method.delivery_tag, body)

    def spawn(self, delivery_tag: int, body: bytes) -> None:
        task = self.loop.create_task(self.push(delivery_tag, body))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def push(self, delivery_tag: int, body: bytes) -> None:
        message = json.loads(body)
        payload = message["Payload"]
        # Small, but with the fields the bench reads back from the fake's records.
        apns = json.dumps({"aps": {}, "call-id": payload["call-id"], "bench_run": payload["bench_run"],
                           "bench_sent_ns": payload["bench_sent_ns"]}, separators=(",", ":")).encode()
        path = b"/3/device/" + message["Token-ID"].encode("ascii")
        started = time.monotonic()
        status = 0
        try:
            response = await self.transport.send(self.origin, path, FIELDS, apns)
            status = response.status_code
            self.statuses[str(status)] += 1
        except httpx.HTTPError as exc:  # counted, and acked all the same: a floor, not a delivery guarantee
            self.statuses[type(exc).__name__] += 1
        if self.database is None:
            self.ack([delivery_tag])
            return
        latency_ms = (time.monotonic() - started) * 1000
        log.info("push_req msg_id=%s call_id=%s status=%s latency_ms=%.1f", message.get("Msg-ID", "-"),
                 payload["call-id"], status, latency_ms)
        self.pending.append((delivery_tag, (message.get("Msg-ID") or payload["call-id"], payload["call-id"],
                                            status, latency_ms)))
        if not self.flushing:
            self.flushing = True
            task = self.loop.create_task(self.record())
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    async def record(self) -> None:
        """The outcomes gathered RECORD_GATHER_S, written in one transaction, then their acks."""
        assert self.database is not None
        try:
            await asyncio.sleep(RECORD_GATHER_S)
            while self.pending:
                batch, self.pending = self.pending, []
                async with self.database.transaction(), self.database.cursor() as cursor:
                    await cursor.executemany(
                        f"INSERT INTO {self.table} (msg_id, call_id, status, latency_ms) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (msg_id) DO NOTHING", [row for _, row in batch])
                self.ack([tag for tag, _ in batch])
        finally:
            self.flushing = False


async def amqp_step(start: Callable[[Callable[..., None]], object]) -> Any:
    """A pika call that reports completion through a callback, awaited: what the callback got first."""
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def finished(*result: Any) -> None:
        if not done.done():
            done.set_result(result[0] if result else None)

    start(finished)
    return await asyncio.wait_for(done, AMQP_STEP_TIMEOUT_S)


async def amqp_connect(url: str, closed: asyncio.Future[BaseException]) -> AsyncioConnection:
    """An AsyncioConnection on the running loop; `closed` gets the reason once it closes."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[None] = loop.create_future()

    def on_open(connection: Any) -> None:
        opened.set_result(None)

    def on_open_error(connection: Any, exc: BaseException) -> None:
        opened.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))

    def on_close(connection: Any, exc: BaseException) -> None:
        if not closed.done():
            closed.set_result(exc)

    connection = AsyncioConnection(pika.URLParameters(url), on_open_callback=on_open,
                                   on_open_error_callback=on_open_error, on_close_callback=on_close,
                                   custom_ioloop=loop)
    await asyncio.wait_for(opened, AMQP_STEP_TIMEOUT_S)
    return connection


async def run(args: argparse.Namespace, cert_pem: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop)

    transport = H2Transport(ssl_context=ssl_context(args.ca_file, cert_pem), connect_timeout=10.0,
                            unindexed_headers=UNINDEXED)
    origin = httpx.Request("POST", f"https://{args.host}:{args.port}/3/device/x")
    await transport.connect(args.host, args.port)  # TLS and HTTP/2 before the first delivery
    consumer = Consumer(loop, transport, origin)
    if args.record:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        consumer.table = "bench_floor_" + "".join(c if c.isalnum() else "_" for c in args.queue)
        consumer.database = await psycopg.AsyncConnection.connect(args.record, autocommit=True)
        await consumer.database.execute(
            f"CREATE TABLE IF NOT EXISTS {consumer.table} (id bigserial PRIMARY KEY, msg_id text UNIQUE NOT NULL, "
            "call_id text NOT NULL, status smallint NOT NULL, latency_ms double precision NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())")

    if args.pika_thread:
        await loop.shutdown_default_executor()
        return await run_pika_thread(args, consumer, stop)
    closed: asyncio.Future[BaseException] = loop.create_future()
    connection = await amqp_connect(args.amqp_url, closed)
    # pika resolved the broker's address with loop.getaddrinfo, in a thread of the default executor
    # that would idle on; shut down, the process is back to one thread (the bench checks /proc).
    await loop.shutdown_default_executor()
    consumer.channel = await amqp_step(lambda cb: connection.channel(on_open_callback=cb))
    await amqp_step(lambda cb: consumer.channel.basic_qos(prefetch_count=args.prefetch, callback=cb))
    consume_ok = await amqp_step(lambda cb: consumer.channel.basic_consume(
        args.queue, consumer.on_message, auto_ack=False, callback=cb))
    print("consuming", flush=True)

    either: list[asyncio.Future[Any]] = [stop, closed]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if closed.done():
        raise SystemExit(f"the AMQP connection closed: {closed.result()!r}")
    await amqp_step(lambda cb: consumer.channel.basic_cancel(consume_ok.method.consumer_tag, callback=cb))
    if consumer.inflight:
        await asyncio.wait(consumer.inflight, timeout=STOP_GRACE_S)
    connection.close()
    await asyncio.wait([closed], timeout=STOP_GRACE_S)
    await transport.aclose()
    return await finish(consumer)


async def run_pika_thread(args: argparse.Namespace, consumer: Consumer, stop: asyncio.Future[None]) -> dict[str, Any]:
    """--pika-thread: pika's BlockingConnection on a thread of its own, as pusher's consumer had it;
    a delivery is handed to the loop (`call_soon_threadsafe`), acks back to pika's thread
    (`add_callback_threadsafe`, one per batch)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    state: dict[str, Any] = {"stop": False}

    def pika_main() -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
            channel = connection.channel()
            channel.basic_qos(prefetch_count=args.prefetch)
            state.update(connection=connection, channel=channel, tag=channel.basic_consume(
                args.queue, lambda ch, method, props, body: loop.call_soon_threadsafe(
                    consumer.spawn, method.delivery_tag, body)))
            consumer.channel = channel
            consumer.ack = lambda tags: connection.add_callback_threadsafe(functools.partial(consumer.ack_here, tags))
            loop.call_soon_threadsafe(ready.set_result, None)
            while not state["stop"]:
                connection.process_data_events(time_limit=None)
            connection.close()
        except Exception as exc:  # reported by the loop
            failure = RuntimeError(f"pika's thread: {exc!r}")
            loop.call_soon_threadsafe(lambda: ready.done() or ready.set_exception(failure))

    thread = threading.Thread(target=pika_main, name="pika", daemon=True)
    thread.start()
    await asyncio.wait_for(ready, AMQP_STEP_TIMEOUT_S)
    print("consuming", flush=True)
    await stop
    connection = state["connection"]
    connection.add_callback_threadsafe(lambda: state["channel"].basic_cancel(state["tag"]))
    if consumer.inflight:
        await asyncio.wait(consumer.inflight, timeout=STOP_GRACE_S)

    def end() -> None:
        state["stop"] = True

    connection.add_callback_threadsafe(end)
    deadline = time.monotonic() + STOP_GRACE_S
    while thread.is_alive() and time.monotonic() < deadline:  # no executor thread to join it from: polled
        await asyncio.sleep(0.05)
    await consumer.transport.aclose()
    return await finish(consumer)


async def finish(consumer: Consumer) -> dict[str, Any]:
    recorded = None
    if consumer.database is not None:
        cursor = await consumer.database.execute(f"SELECT count(*) FROM {consumer.table}")
        recorded = (await cursor.fetchone() or [None])[0]
        await consumer.database.execute(f"DROP TABLE IF EXISTS {consumer.table}")
        await consumer.database.close()
    return {"pushes": sum(consumer.statuses.values()), "statuses": dict(consumer.statuses),
            "unfinished": len(consumer.inflight), "recorded": recorded}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--host", required=True, help="the fake APNs")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-file", required=True, help="CA the fake's server certificate chains to")
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--record", metavar="DSN", help="also log each push and write its outcome to this "
                        "PostgreSQL database before the ack (see the module docstring)")
    parser.add_argument("--pika-thread", action="store_true", help="pika's BlockingConnection on a thread of "
                        "its own, handing deliveries to the loop, as pusher's consumer does")
    parser.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
    args = parser.parse_args(argv)
    cert_pem = sys.stdin.read()
    if "PRIVATE KEY" not in cert_pem:
        parser.error("expected the client certificate and its key (PEM) on stdin")
    print(json.dumps(asyncio.run(run(args, cert_pem))), flush=True)


if __name__ == "__main__":
    main()
