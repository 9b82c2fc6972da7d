"""A lean HTTP/2 client transport behind httpx's transport API: one h2connection._H2Connection at a
time, replaced on demand (closed, idle, GOAWAY). Design notes: push/providers/h2connection.py."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import httpx

from push.providers.h2connection import (  # noqa: F401 - the errors are part of this transport's API
    _CLOSE_GRACE_S,
    _DROPPED_HEADERS,
    _MAX_REROUTES,
    GoAwayError,
    StreamResetError,
    _H2Connection,
    _Unavailable,
)
from push.providers.rounds import RoundSelector

log = logging.getLogger(__name__)


class H2Transport(httpx.AsyncBaseTransport):
    """HTTP/2-only client transport for one https origin, on an SSLContext the caller provides.

    `handle_async_request` returns once the whole response has arrived; its body is in memory
    (`response.read()` hands it over without I/O, as httpx.AsyncClient does). The context's ALPN
    list is set to ["h2"]: a server that does not negotiate HTTP/2 is refused (ConnectError).

    HPACK: fields named in `unindexed_headers` are sent as never-indexed literals; every other field,
    authorization included, may enter the dynamic table. h2 would send authorization as a
    never-indexed literal, Huffman-coded again on every request; an APNs provider token is the same
    for up to an hour, and compression-oracle attacks on HPACK need to guess a whole field value,
    which a JWT's ECDSA signature rules out.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        connect_timeout: float,
        idle_timeout: float | None = None,
        unindexed_headers: frozenset[str] = frozenset({":path"}),
        rounds: RoundSelector | None = None,
    ) -> None:
        ssl_context.set_alpn_protocols(["h2"])
        # Fields whose value changes with nearly every request are sent as literals: added to the
        # HPACK dynamic table they would only evict the fields that repeat (topic, push type,
        # authorization), which then have to be Huffman-coded again.
        self._unindexed = frozenset(name.encode("ascii") for name in unindexed_headers)
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        # The loop's selector, when its connections read their answers in rounds (rounds.py).
        self._rounds = rounds
        self._origin: tuple[str, int] | None = None
        self._current: _H2Connection | None = None
        self._connecting: asyncio.Task[_H2Connection] | None = None
        self._connect_waiters = 0  # requests waiting for `_connecting`: they go before later ones
        # Every connection not yet lost, including replaced ones still draining their streams.
        self._connections: set[_H2Connection] = set()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._origin_check(request)
        url = request.url
        headers = self._header_block(request.method, url.netloc, url.raw_path, request.headers.raw, request)
        if isinstance(request.stream, httpx.ByteStream):
            body = b"".join(request.stream)  # in memory already: no need to go through aread()
        else:
            body = await request.aread()
        return await self._send(request, headers, body)

    async def send(
        self, origin: httpx.Request, path: bytes, fields: Iterable[tuple[bytes, bytes]], body: bytes
    ) -> httpx.Response:
        """A request to `origin`'s method, scheme and host with a path and header fields of its own,
        as `handle_async_request` sends it. A client that sends everything to one origin builds that
        request once instead of an httpx.Request and URL per request (~15 µs, a tenth of a push's CPU
        on the APNs loop); errors and the response refer to `origin`."""
        self._origin_check(origin)
        headers = self._header_block(origin.method, origin.url.netloc, path, fields, origin)
        return await self._send(origin, headers, body)

    def _origin_check(self, request: httpx.Request) -> None:
        url = request.url
        if url.scheme != "https":
            raise httpx.UnsupportedProtocol(f"H2Transport only speaks https, not {url.scheme!r}", request=request)
        origin = (url.host, url.port or 443)
        if self._origin is None:
            self._origin = origin
        elif origin != self._origin:
            raise ValueError(f"H2Transport serves {self._origin}, not {origin}")

    async def _send(self, request: httpx.Request, headers: list[tuple[bytes, bytes]], body: bytes) -> httpx.Response:
        reroutes = 0
        while True:
            conn = self._current
            if conn is None or not conn.accepting:
                conn = await self._connection()
            else:
                while self._connect_waiters and conn.accepting:
                    # Requests that waited for this connection to open take their streams (or
                    # their places in its queue) first: first come, first served.
                    await asyncio.sleep(0)
            try:
                return await conn.request(request, headers, body)
            except _Unavailable as unavailable:
                # Not sent on that connection (GOAWAY or close while it waited for a stream).
                reroutes += 1
                if reroutes >= _MAX_REROUTES:
                    unavailable.error.request = request
                    raise unavailable.error from None

    def stream_limit(self) -> int | None:
        """The server's current MAX_CONCURRENT_STREAMS on the connection new requests go to; None
        until that connection has said it (or when there is none)."""
        conn = self._current
        if conn is None or not conn.accepting or not conn.ready.done():
            return None
        return conn.max_streams

    async def connect(self, host: str, port: int) -> None:
        """Open the connection to https://host:port now (TCP, TLS, HTTP/2 SETTINGS exchanged), ahead
        of the first request: a warm-up. Nothing to do when one is open and takes requests. Raises
        httpx.ConnectError / ConnectTimeout as a request would."""
        origin = (host, port)
        if self._origin is None:
            self._origin = origin
        elif origin != self._origin:
            raise ValueError(f"H2Transport serves {self._origin}, not {origin}")
        conn = self._current
        if conn is None or not conn.accepting:
            await self._connection()

    def _header_block(
        self, method: str, authority: bytes, path: bytes, fields: Iterable[tuple[bytes, bytes]], request: httpx.Request
    ) -> list[tuple[bytes, bytes]]:
        block: list[tuple[bytes, bytes]] = []
        for name, value in fields:
            name = name.lower()
            if name == b"host":
                authority = value
                continue
            if name in _DROPPED_HEADERS:
                continue
            if b"\r" in value or b"\n" in value or b"\0" in value:
                raise httpx.LocalProtocolError(f"header {name!r} contains CR, LF or NUL", request=request)
            block.append(hpack.NeverIndexedHeaderTuple(name, value) if name in self._unindexed else (name, value))
        if b":path" in self._unindexed:
            path_field: tuple[bytes, bytes] = hpack.NeverIndexedHeaderTuple(b":path", path)
        else:
            path_field = (b":path", path)
        pseudo = [(b":method", method.encode("ascii")), (b":scheme", b"https"), (b":authority", authority)]
        return [*pseudo, path_field, *block]

    async def _connection(self) -> _H2Connection:
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        if self._connecting is None:
            task = asyncio.get_running_loop().create_task(self._connect())
            # Every caller may have given up by the time it fails; the failure is theirs, not the loop's.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._connecting = task
        # Shielded: one caller's cancellation must not abort the handshake the others wait for.
        self._connect_waiters += 1
        try:
            return await asyncio.shield(self._connecting)
        finally:
            self._connect_waiters -= 1

    async def _connect(self) -> _H2Connection:
        assert self._origin is not None
        host, port = self._origin
        loop = asyncio.get_running_loop()
        conn: _H2Connection | None = None
        try:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    _, conn = await loop.create_connection(
                        lambda: _H2Connection(loop, (host, port), self._idle_timeout, self._rounds),
                        host,
                        port,
                        ssl=self._ssl_context,
                        server_hostname=host,
                    )
                    assert conn.transport is not None
                    ssl_object = conn.transport.get_extra_info("ssl_object")
                    if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                        raise ConnectionRefusedError(f"{host}:{port} did not negotiate HTTP/2 (ALPN h2)")
                    # With TLS 1.3 a server refuses a client certificate only after our side of the
                    # handshake is done; waiting for its SETTINGS surfaces that refusal here.
                    await conn.ready
            except TimeoutError as exc:
                raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
            except (OSError, h2.exceptions.H2Error) as exc:
                raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        finally:
            self._connecting = None
        if self._closed:
            conn.close()
            raise httpx.ConnectError("the transport was closed while connecting")
        self._connections.add(conn)
        conn.closed.add_done_callback(lambda _: self._connections.discard(conn))
        conn.arm_idle_timer()
        self._current = conn
        return conn

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        pending = [conn.closed for conn in connections if not conn.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=_CLOSE_GRACE_S)
        for conn in connections:
            conn.abort()
