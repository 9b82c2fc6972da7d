"""One HTTP/2 client connection: h2 driven from asyncio protocol callbacks (h2transport.H2Transport
holds one at a time behind httpx's transport API).

The design notes of the pair:

A lean HTTP/2 client transport: h2 over one asyncio TLS connection, behind httpx's transport API.

Why not httpx's own HTTP/2 pool: it cost 1.3-2 ms of CPU per request (httpx's client layer,
httpcore's pool scanning its queue, anyio locks and cancel scopes around every read and write),
three to five times the budget of a process pushing 1,000 notifications a second. This transport keeps
httpx's types at the boundary (`httpx.Request` in, `httpx.Response` out, httpx exceptions) and
drives h2 from asyncio protocol callbacks: no task, lock or cancel scope per request, one future
per stream, and one socket write per loop iteration however many frames were queued in it.

One transport holds one connection at a time, opened on the first request and replaced on demand
when it is closed, went idle, or the server sent GOAWAY (a connection that got GOAWAY drains its
remaining streams meanwhile). Every request on it is a stream; requests beyond the server's
SETTINGS_MAX_CONCURRENT_STREAMS wait, first come first served, for a stream to finish.

Failures are httpx exceptions that keep the original error as `__cause__`. A GOAWAY or an
RST_STREAM carries the h2 event as its second argument (`exc.args[1]`), so a caller can read the
server's error code and debug data.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import httpx

from push.providers.rounds import RoundSelector

log = logging.getLogger(__name__)

# RFC 9113 8.2.2: connection-specific header fields are not allowed in HTTP/2 (the host header
# becomes :authority).
_DROPPED_HEADERS = frozenset(
    {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
_HIGHEST_STREAM_ID = 2**31 - 1
# How long aclose() waits for the TLS close_notify exchange before it aborts the socket.
_CLOSE_GRACE_S = 0.25
# How many fresh connections a request may try when each one stops taking streams (GOAWAY, close)
# before the request was sent on it.
_MAX_REROUTES = 3


class GoAwayError(httpx.RemoteProtocolError):
    """The server sent GOAWAY and this stream will not be answered; args[1] is the h2 event."""

    def __init__(self, event: h2.events.ConnectionTerminated, *, request: httpx.Request | None = None) -> None:
        message = (
            f"server sent GOAWAY (error code {event.error_code}, last stream {event.last_stream_id}, "
            f"debug data {event.additional_data!r})"
        )
        super().__init__(message, request=request)
        self.args = (message, event)
        self.event = event

    def __str__(self) -> str:
        return str(self.args[0])


class StreamResetError(httpx.RemoteProtocolError):
    """The server reset the stream (RST_STREAM); args[1] is the h2 event."""

    def __init__(self, event: h2.events.StreamReset, *, request: httpx.Request | None = None) -> None:
        message = f"server reset stream {event.stream_id} (error code {event.error_code})"
        super().__init__(message, request=request)
        self.args = (message, event)
        self.event = event

    def __str__(self) -> str:
        return str(self.args[0])


class _Unavailable(Exception):
    """The connection stopped taking streams before this request was sent: safe to send elsewhere."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class _ClientH2Connection(h2.connection.H2Connection):
    """h2's client state machine, except that a GOAWAY does not end the streams it lets finish.

    h2 (up to 4.x at least) moves the whole connection to CLOSED on any GOAWAY and then rejects
    every later frame as a protocol error, although RFC 9113 6.8 lets the server still answer the
    streams up to last_stream_id. Those answers are pushes APNs has accepted; losing them would
    report sent pushes as failed. The connection opens no stream after a GOAWAY (see `accepting`),
    so putting the state machine back to open only lets the remaining answers in.
    """

    _next_purge = 64

    @property
    def open_outbound_streams(self) -> int:
        # h2 reads this before every new stream, and computing it walks every stream h2 holds (and
        # drops the closed ones): O(streams in flight) per request, growing exactly when APNs slows
        # down and streams pile up. _H2Connection counts its streams against the server's limit
        # itself, so the walk only runs when closed streams have piled up, to drop them; between
        # walks h2's own check is given 0 and always passes.
        if len(self.streams) < self._next_purge:
            return 0
        count = self._open_streams(1)  # client-initiated streams have odd ids
        self._next_purge = 2 * len(self.streams) + 64
        return count

    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[h2.events.Event]]:
        state = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        if state is h2.connection.ConnectionState.CLIENT_OPEN:
            self.state_machine.state = state
        return frames, events


class _RawLiteralEncoder(hpack.Encoder):
    """HPACK without Huffman coding of literals.

    The fields that repeat are indexed after their first request; what remains literal is mostly
    the path with its hex device token, which Huffman coding shrinks by about 20 bytes at the cost
    of a pure-Python bit loop (some 20 us a request, 5% of the whole push). Bytes are cheaper.
    """

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=huffman)


class _Stream:
    __slots__ = ("body", "future", "headers", "pending", "status")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        # Request body bytes still waiting for flow-control window.
        self.pending = b""


class _H2Connection(asyncio.Protocol):
    """One TLS connection carrying HTTP/2 (client side). Loop-thread only; no locks needed."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: tuple[str, int],
        idle_timeout: float | None,
        rounds: RoundSelector | None = None,
    ) -> None:
        self.loop = loop
        self.origin = origin
        self.idle_timeout = idle_timeout
        # Header validation is off both ways. Outbound, H2Transport builds the header block itself
        # (lower-case names, pseudo-headers first, no connection-specific fields, no CR/LF/NUL);
        # inbound, only :status is read, and checked. h2 runs every field through a chain of
        # generators and regexes for it, a third of its cost per request.
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        self.h2 = _ClientH2Connection(config=config)
        self.h2.encoder = _RawLiteralEncoder()
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        self.transport: asyncio.Transport | None = None
        # Resolved with the server's first SETTINGS frame: until then its stream limit is unknown.
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        # False once the connection takes no new streams (GOAWAY, closing, lost, stream ids spent).
        self.accepting = True
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.lost = False
        self.closing = False
        self.streams: dict[int, _Stream] = {}
        # Streams whose body waits for WINDOW_UPDATE, in the order they were opened.
        self.blocked: dict[int, _Stream] = {}
        self.next_stream_id = 1
        self.active = 0
        self.max_streams = 1
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.flush_scheduled = False
        self.idle_since = loop.time()
        self.idle_timer: asyncio.TimerHandle | None = None
        # The loop's selector when answers may be read in rounds (rounds.py), this socket's number,
        # and whether it is deferred now: while streams are open and no request waits for a slot.
        self.rounds = rounds
        self.fd: int | None = None
        self.deferred = False

    # ---- asyncio protocol callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if self.rounds is not None and sock is not None:
            self.fd = sock.fileno()
        self.h2.initiate_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 queued a GOAWAY describing the violation; send it and give up on the connection.
            self.flush()
            message = f"HTTP/2 protocol error from the server: {exc}"
            self._fail_all(lambda: httpx.RemoteProtocolError(message), exc)
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                self._on_headers(event)
            elif isinstance(event, h2.events.DataReceived):
                self._on_data(event)
            elif isinstance(event, h2.events.StreamEnded):
                self._on_stream_ended(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._finish_stream(event.stream_id, StreamResetError(event), None)
            elif isinstance(event, h2.events.WindowUpdated):
                if self.blocked:
                    self._resume_bodies()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._on_settings(event)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._on_goaway(event)
            # Informational (1xx) answers, trailers, pings (h2 answers them), settings acks and
            # priority or unknown frames need nothing from us.
        self.schedule_flush()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.accepting = False
        self.reading_update()
        self.fd = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if not self.ready.done():
            error = exc or ConnectionResetError("the server closed the connection during setup")
            self.ready.set_exception(error)
            # Nobody may be awaiting it any more (connect timeout); don't log it as never retrieved.
            self.ready.exception()
        goaway = self.goaway
        if goaway is not None:
            # Streams up to last_stream_id were still allowed to finish; the server closed first.
            self._fail_all(lambda: GoAwayError(goaway), exc)
        else:
            if exc is not None:
                message = f"the connection was lost ({exc!r})"
            else:
                message = "the connection was closed" + (" by the client" if self.closing else " by the server")
            self._fail_all(lambda: httpx.ReadError(message), exc)
        if not self.closed.done():
            self.closed.set_result(None)

    # ---- requests ---------------------------------------------------------------------------

    async def request(
        self, request: httpx.Request, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> httpx.Response:
        if not self.accepting:
            raise _Unavailable(self._unavailable_error())
        if self.active < self.max_streams and not self.waiters:
            self.active += 1
        else:
            await self._wait_for_slot()
            if not self.accepting:
                # Granted a stream, then GOAWAY or a lost connection before this task ran again.
                self._release_slot()
                raise _Unavailable(self._unavailable_error())
        if self.next_stream_id > _HIGHEST_STREAM_ID:
            self._release_slot()
            self._stop_accepting()
            raise _Unavailable(httpx.RemoteProtocolError("HTTP/2 stream ids exhausted on this connection"))
        stream_id = self.next_stream_id
        self.next_stream_id += 2
        stream = _Stream(self.loop.create_future())
        self.streams[stream_id] = stream
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
            if body:
                stream.pending = body
                self._send_body(stream_id, stream)
        except h2.exceptions.H2Error as exc:
            self._cancel_stream(stream_id)
            raise httpx.LocalProtocolError(f"cannot send the request: {exc}", request=request) from exc
        self.schedule_flush()
        self.reading_update()
        try:
            await stream.future
        except asyncio.CancelledError:
            self._cancel_stream(stream_id)
            raise
        except httpx.TransportError as exc:
            exc.request = request
            raise
        # stream= rather than content=: httpx's content path runs the body through its decoder
        # chain even when empty, a fifth of what the response costs. The body is complete and in
        # memory; read() hands it over without I/O.
        return httpx.Response(
            stream.status,
            headers=stream.headers,
            stream=httpx.ByteStream(b"".join(stream.body)),
            request=request,
            extensions={"http_version": b"HTTP/2", "stream_id": stream_id},
        )

    async def _wait_for_slot(self) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.waiters.append(waiter)
        if self.deferred:
            self.reading_update()  # answers free the slots: read them at once while anyone waits
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release_slot()  # granted just before the cancellation: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise

    def _release_slot(self) -> None:
        # The slot goes straight to the oldest waiter, so a newcomer cannot overtake the queue.
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1
        if self.active == 0:
            self._became_idle()
            if self.deferred:
                self.reading_update()

    def _grant_slots(self) -> None:
        while self.waiters and self.active < self.max_streams:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        """Send as much of the pending body as the flow-control windows allow."""
        data = stream.pending
        while data:
            size = min(len(data), self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if size <= 0:
                stream.pending = data
                self.blocked[stream_id] = stream
                return
            self.h2.send_data(stream_id, data[:size], end_stream=size == len(data))
            data = data[size:]
        stream.pending = b""
        self.blocked.pop(stream_id, None)

    def _resume_bodies(self) -> None:
        for stream_id, stream in list(self.blocked.items()):
            try:
                self._send_body(stream_id, stream)
            except h2.exceptions.H2Error as exc:
                self._finish_stream(stream_id, httpx.WriteError(f"cannot send the request body: {exc}"), exc)
            if stream.pending and self.h2.outbound_flow_control_window <= 0:
                return  # the connection window is spent; the streams after this one wait their turn

    def _cancel_stream(self, stream_id: int) -> None:
        """The caller gave up (timeout, cancellation): reset the stream and free its slot."""
        if self.streams.pop(stream_id, None) is None:
            return
        self.blocked.pop(stream_id, None)
        if not self.lost:
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self.schedule_flush()
        self._release_slot()
        self._maybe_close_drained()

    # ---- events -----------------------------------------------------------------------------

    def _on_headers(self, event: h2.events.ResponseReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        # Bytes, as header_encoding=None makes h2 hand them over.
        for name, value in event.headers:
            if name == b":status":
                stream.status = int(value) if value.isdigit() and len(value) == 3 else 0
            elif not name.startswith(b":"):
                stream.headers.append((bytes(name), bytes(value)))

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        # Hand the window back at once so that neither the stream nor the connection stalls.
        if event.flow_controlled_length:
            self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)
        stream = self.streams.get(stream_id)
        if stream is not None and event.data:
            stream.body.append(event.data)

    def _on_stream_ended(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if self.blocked.pop(stream_id, None) is not None:
            # Answered before the whole body was sent (e.g. 413): close our half (RFC 9113 8.1).
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        self._release_slot()
        if not stream.future.done():
            if stream.status:
                stream.future.set_result(None)
            else:
                error = httpx.RemoteProtocolError(f"stream {stream_id} ended without a valid :status")
                stream.future.set_exception(error)
        self._maybe_close_drained()

    def _finish_stream(self, stream_id: int | None, error: httpx.TransportError, cause: BaseException | None) -> None:
        if stream_id is None:  # (h2 types an event's stream id as optional: no stream of ours)
            return
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        self.blocked.pop(stream_id, None)
        self._release_slot()
        if not stream.future.done():
            error.__cause__ = cause
            stream.future.set_exception(error)
        self._maybe_close_drained()

    def _on_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        self.max_streams = self.h2.remote_settings.max_concurrent_streams
        self._grant_slots()
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings and self.blocked:
            self._resume_bodies()
        if not self.ready.done():
            self.ready.set_result(None)

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        log.debug("h2: GOAWAY from %s:%s: %s", *self.origin, event)
        self.goaway = event
        self._stop_accepting()
        last = event.last_stream_id or 0
        for stream_id in [sid for sid in self.streams if sid > last]:
            # Never processed by the server (RFC 9113 6.8): safe to retry elsewhere.
            self._finish_stream(stream_id, GoAwayError(event), None)
        self._maybe_close_drained()

    # ---- connection state -------------------------------------------------------------------

    def _unavailable_error(self) -> httpx.TransportError:
        if self.goaway is not None:
            return GoAwayError(self.goaway)
        return httpx.ReadError("the connection is closed")

    def _stop_accepting(self) -> None:
        if not self.accepting:
            return
        self.accepting = False
        self.reading_update()
        # Requests still waiting for a slot were never sent: they go to another connection.
        error = _Unavailable(self._unavailable_error())
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def _maybe_close_drained(self) -> None:
        # A connection that takes no new streams (GOAWAY, stream ids spent) closes with its last one.
        if not self.accepting and not self.streams and not self.lost:
            self.close()

    def reading_update(self) -> None:
        """Read this connection's answers in rounds while it has streams open (up to half the
        server's limit), nothing waits for a slot and it takes new streams; at once otherwise, so
        that answers free stream slots before anyone waits for one (rounds.py says why)."""
        if self.rounds is None or self.fd is None:
            return
        defer = (
            0 < self.active and self.active * 2 <= self.max_streams
            and not self.waiters and self.accepting and not self.lost
        )
        if defer != self.deferred:
            self.deferred = defer
            if defer:
                self.rounds.defer(self.fd)
            else:
                self.rounds.undefer(self.fd)

    def _became_idle(self) -> None:
        self.idle_since = self.loop.time()
        self.arm_idle_timer()

    def arm_idle_timer(self) -> None:
        if self.idle_timeout is not None and self.idle_timer is None and self.accepting:
            self.idle_timer = self.loop.call_later(self.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        # One timer per idle period rather than one per request: it re-arms itself while busy.
        self.idle_timer = None
        if self.idle_timeout is None or not self.accepting:
            return
        if self.active:
            return  # _became_idle arms it again when the last stream finishes
        remaining = self.idle_since + self.idle_timeout - self.loop.time()
        if remaining > 0:
            self.idle_timer = self.loop.call_later(remaining, self._idle_check)
            return
        log.debug("h2: closing the idle connection to %s:%s", *self.origin)
        self.close()

    def _fail_all(self, make_error: Callable[[], httpx.TransportError], cause: BaseException | None) -> None:
        self._stop_accepting()
        streams, self.streams = self.streams, {}
        self.blocked.clear()
        self.active -= len(streams)
        for stream in streams.values():
            if not stream.future.done():
                # One exception per stream: a shared one would pile up every waiter's traceback.
                error = make_error()
                error.__cause__ = cause
                stream.future.set_exception(error)

    def schedule_flush(self) -> None:
        # Frames queued by every request and event of this loop iteration leave in one write.
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.lost and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Say GOAWAY and close: streams in flight fail (connection_lost follows)."""
        self.closing = True
        self._stop_accepting()
        if self.transport is None or self.lost:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection()
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()
