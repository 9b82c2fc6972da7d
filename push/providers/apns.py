"""Apple Push Notification service (APNs) transport: HTTP/2 + TLS, certificate or token (JWT) auth.

Transport only: it takes a credential dataclass and a request dataclass and returns a typed result.
It never touches the ORM or Django settings; the service decides what an outcome means for the
delivery (log it, retry it, deactivate the token).

Why one long-lived connection per credential and host: Apple asks providers to keep connections
open and multiplex many streams on them instead of opening one per push (opening many is treated as
a denial-of-service attempt), and a TLS handshake costs more than the push itself.

Why the client owns its own event loop in a background thread: the callers are a threaded AMQP
consumer, admin actions and management commands (sync) as well as async code. asyncio connections
are bound to the loop that created them, so every connection lives on the one private loop and both
`send` (from any loop) and `send_sync` (from any thread) hop onto it.

Why HTTP/2 is driven by our own transport (`h2transport.H2Transport`, h2 over an asyncio TLS
connection) rather than httpx's pool: httpx's client layer, httpcore's pool and anyio cost
1.3-2 ms of CPU per push, against a budget of 0.4 ms for 1,000 pushes a second from one process. The
transport is an `httpx.AsyncBaseTransport`, so requests, responses and errors stay httpx types.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from push.providers.apns_protocol import (  # noqa: F401 - the client's vocabulary, importable from here
    _CONNECTION_SCOPED_REASONS,
    REASONS,
    ApnsCredential,
    ApnsRequest,
    ApnsResult,
    Outcome,
    WarmError,
    _classify_exception,
    _CredentialProblem,
    _is_transport_error,
    _no_response,
    classify_response,
    result_from_response,
)
from push.providers.apns_tokens import ProviderTokens, TokenProblem, TokenStore
from push.providers.h2transport import H2Transport
from push.providers.rounds import ANSWER_ROUND_S, RoundSelector, event_loop

log = logging.getLogger(__name__)

# Apple rejects a provider token older than one hour (403 ExpiredProviderToken) and one renewed more
# often than every 20 minutes (429 TooManyProviderTokenUpdates); 50 minutes leaves a margin for skew.
JWT_MIN_AGE_S = 20 * 60
JWT_MAX_AGE_S = 60 * 60
DEFAULT_JWT_MAX_AGE_S = 50 * 60
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# An idle HTTP/2 connection is closed by us after this long. Middleboxes silently drop idle TCP
# flows, and a dropped flow would only be noticed by the next push timing out (a lost VoIP call);
# reconnecting after a quiet spell costs one handshake instead.
DEFAULT_IDLE_TIMEOUT_S = 600.0

USER_AGENT = "pusher-apns/1"
PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"
DEFAULT_PORT = 443

# More than one connection per (credential, host, port): a connection whose every stream is taken
# gets a sibling, up to this many, instead of queueing the pushes beyond its limit. Only at a real
# capacity limit (SPREAD_MIN_STREAMS or more): APNs drops a connection's limit to 1 after a rejected
# notification and restores it after the next success, a throttle that must not be sidestepped by
# opening connections around it.
MAX_CONNECTIONS_PER_ORIGIN = 4
SPREAD_MIN_STREAMS = 100


@dataclass(eq=False)  # identity semantics: kept in sets
class _Connection:
    """One HTTP/2 transport (one connection at a time) and the requests currently using it."""

    transport: H2Transport
    inflight: int = 0
    origin: httpx.Request | None = None  # what every request on it is sent as (H2Transport.send)
    # Retired connections take no new requests and are closed when their last request finishes, so a
    # broken connection is replaced at once without cutting streams that may still complete.
    retired: bool = False


# Keyed by credential: APNs binds a token-auth connection to the team and key of its first push
# (another key gets 403 UnrelatedKeyIdInToken); a certificate is a property of the TLS session.
_ConnKey = tuple[str, str, int]

# Request fields that differ from push to push (the path carries the device token): sent as HPACK
# literals so they don't evict the repeated ones (topic, push type, provider token) from the table.
_PER_PUSH_HEADERS = frozenset({":path", "apns-id", "apns-expiration", "apns-collapse-id"})


def _secret_tmp_dir() -> str | None:
    # A RAM-backed directory keeps the private key off disk even for the milliseconds it exists.
    # mkstemp opens with O_EXCL and mode 0600, so a shared directory is safe here.
    shm = "/dev/shm"  # noqa: S108
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class ApnsClient:
    """Sends pushes over persistent HTTP/2 connections, one per (credential, host, port).

    Thread-safe: `send_sync` may be called from any number of threads, `send` from any event loop.
    All connection and token state lives on the client's private loop and is touched only there.
    """

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        jwt_max_age: float = DEFAULT_JWT_MAX_AGE_S,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        token_store: TokenStore | None = None,
        max_connections: int = MAX_CONNECTIONS_PER_ORIGIN,
        answer_round_s: float = ANSWER_ROUND_S,  # 0: every answer read as it comes (rounds.py)
    ) -> None:
        if not JWT_MIN_AGE_S <= jwt_max_age <= JWT_MAX_AGE_S:
            raise ValueError(
                f"jwt_max_age must be between {JWT_MIN_AGE_S} and {JWT_MAX_AGE_S} seconds: APNs rejects "
                "tokens renewed more often than every 20 minutes or older than 60 minutes"
            )
        if connect_timeout <= 0 or request_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._ca_file = ca_file
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._jwt_max_age = jwt_max_age
        self._idle_timeout = idle_timeout
        self._max_connections, self._answer_round_s = max(1, max_connections), answer_round_s
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rounds: RoundSelector | None = None  # the loop's selector: answers read in rounds
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # Loop-thread-only state.
        self._connections: dict[_ConnKey, list[_Connection]] = {}
        # Current and retired connections not closed yet, so close() can close every one of them.
        self._open: set[_Connection] = set()
        # asyncio keeps only weak references to tasks; closing tasks must not be collected mid-way.
        self._closing: set[asyncio.Task[None]] = set()
        self._tokens = ProviderTokens(max_age=jwt_max_age, clock=clock, store=token_store)
        self._token_fetches: dict[tuple[str, str], asyncio.Future[str]] = {}
        # Built now so that a missing or broken CA bundle fails at configuration time, not at the
        # first push; token-auth connections share it (they present no client certificate).
        self._token_ssl_context = self._new_ssl_context()

    def __repr__(self) -> str:
        count = sum(len(conns) for conns in self._connections.values())
        return f"<ApnsClient connections={count} closed={self._closed}>"

    # ---- public API -------------------------------------------------------------------------

    async def send(
        self, request: ApnsRequest, credential: ApnsCredential, *, timeout: float | None = None
    ) -> ApnsResult:
        """Send one push; never raises for network, TLS or HTTP/2 errors (see `Outcome`)."""
        timeout = self._request_timeout if timeout is None else timeout
        loop = self._ensure_loop()
        if asyncio.get_running_loop() is loop:
            return await self._send(request, credential, timeout)
        future = asyncio.run_coroutine_threadsafe(self._send(request, credential, timeout), loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller was cancelled, not the push
            return self._closed_result()

    def send_sync(
        self, request: ApnsRequest, credential: ApnsCredential, *, timeout: float | None = None
    ) -> ApnsResult:
        """Blocking `send` for threaded callers (AMQP consumer, admin, commands)."""
        timeout = self._request_timeout if timeout is None else timeout
        if threading.current_thread() is self._thread:
            raise RuntimeError("send_sync() called from the APNs loop thread; use send()")
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._send(request, credential, timeout), loop)
        try:
            # _send enforces `timeout` itself; the slack only guards against a wedged loop.
            return future.result(timeout=timeout + 5.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            description = "The APNs client loop did not answer."
            return ApnsResult(Outcome.RETRY, None, "Timeout", description, None, None, timeout)
        except concurrent.futures.CancelledError:
            return self._closed_result()

    def warm(self, credential: ApnsCredential, *, host: str, port: int) -> concurrent.futures.Future[None]:
        """Get ready for the first push with `credential` to host:port: open its connection (TCP, TLS
        with the credential's certificate, HTTP/2 settings exchanged) and, for token auth, sign the
        provider token, so that the first push pays for none of it. Non-blocking: the future holds
        None once done, or WarmError saying why not (the first push will then try again)."""
        loop = self._ensure_loop()
        return asyncio.run_coroutine_threadsafe(self._warm(credential, host, port), loop)

    def invalidate(self, cache_key: str) -> None:
        """Drop the connections of a credential (changed or deleted in the admin).

        Non-blocking. Later sends submitted from the same thread are queued behind it on the loop,
        so they already use a new connection.
        """
        loop = self._loop
        if loop is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):  # loop closed concurrently
            loop.call_soon_threadsafe(self._invalidate_in_loop, cache_key)

    def close(self) -> None:
        """Close every connection and stop the loop thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._pid != os.getpid():
            return
        if threading.current_thread() is thread:
            raise RuntimeError("close() called from the APNs loop thread")
        try:
            asyncio.run_coroutine_threadsafe(self._aclose_all(), loop).result(timeout=10)
        except Exception:  # closing must not fail the caller's shutdown
            log.exception("apns: error while closing connections")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    # ---- loop management --------------------------------------------------------------------

    def loop(self) -> asyncio.AbstractEventLoop:
        """The client's event loop (started if need be). Code running on it calls `send` without
        a thread hop; the consumer's push lane runs there for that reason."""
        return self._ensure_loop()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid() and not self._closed:
            return loop
        with self._lock:
            if self._closed:
                raise RuntimeError("ApnsClient is closed")
            if self._pid != os.getpid():
                # After fork() the loop thread does not exist in the child; start afresh there. The
                # inherited sockets belong to the parent and are simply abandoned.
                self._pid = os.getpid()
                self._loop = self._thread = None
                self._connections = {}
                self._open = set()
                self._closing = set()
                self._tokens.clear()
            if self._loop is None:
                new_loop, rounds = event_loop(self._answer_round_s)
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run_loop, args=(new_loop, ready), name="apns-client", daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread, self._rounds = new_loop, thread, rounds
            return self._loop

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _aclose_all(self) -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        connections, self._open, self._connections = list(self._open), set(), {}
        for conn in connections:
            with contextlib.suppress(Exception):
                await conn.transport.aclose()

    def _closed_result(self) -> ApnsResult:
        return ApnsResult(
            Outcome.RETRY,
            None,
            "ClientClosed",
            "The APNs client was closed before the push finished.",
            None,
            None,
            0.0,
        )

    # ---- connections ------------------------------------------------------------------------

    def _new_ssl_context(self) -> ssl.SSLContext:
        # The system trust store plus the optional extra bundle; hostname and chain are always checked.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self._ca_file:
            context.load_verify_locations(cafile=self._ca_file)
        return context

    def _certificate_ssl_context(self, credential: ApnsCredential) -> ssl.SSLContext:
        context = self._new_ssl_context()
        # ssl can only load a client certificate from a file. The file is created 0600 by mkstemp
        # (chmod again in case of an unusual umask handling) and removed as soon as it is loaded.
        fd, path = tempfile.mkstemp(prefix="apns-", suffix=".pem", dir=_secret_tmp_dir())
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(credential.cert_pem.strip() + "\n" + credential.key_pem.strip() + "\n")
            context.load_cert_chain(path)
        except (ssl.SSLError, ValueError, UnicodeError) as exc:
            raise _CredentialProblem(f"the certificate or its private key cannot be loaded ({exc})") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return context

    def _connection_for(self, key: _ConnKey, credential: ApnsCredential) -> _Connection:
        """The connection a request for `key` goes on: the first with a free stream; a new one when
        every connection is full at a limit of SPREAD_MIN_STREAMS or more (up to max_connections;
        beyond, the least busy, where the request waits for a stream)."""
        conns = self._connections.get(key)
        if conns:
            limits = [conn.transport.stream_limit() for conn in conns]
            known = next((limit for limit in limits if limit is not None), None)  # for one still opening
            for conn, limit in zip(conns, limits, strict=True):
                limit = known if limit is None else limit
                if limit is None or limit < SPREAD_MIN_STREAMS or conn.inflight < limit:
                    return conn
            if len(conns) >= self._max_connections:
                return min(conns, key=lambda c: c.inflight)
        if credential.kind == "certificate":
            context = self._certificate_ssl_context(credential)
        else:
            context = self._token_ssl_context
        # Read and write waits are bounded by the per-request deadline instead (see _send): a read
        # timeout on the connection would fail every stream it carries. Requests beyond the server's
        # MAX_CONCURRENT_STREAMS wait on the connection for a free stream.
        transport = H2Transport(
            ssl_context=context,
            connect_timeout=self._connect_timeout,
            idle_timeout=self._idle_timeout,
            unindexed_headers=_PER_PUSH_HEADERS,
            rounds=self._rounds,
        )
        conn = _Connection(transport)
        self._connections.setdefault(key, []).append(conn)
        self._open.add(conn)
        return conn

    def _retire(self, key: _ConnKey, conn: _Connection) -> None:
        conns = self._connections.get(key, [])
        if conn in conns:
            conns.remove(conn)
            if not conns:
                del self._connections[key]
        conn.retired = True
        self._maybe_close(conn)

    def _maybe_close(self, conn: _Connection) -> None:
        if conn.retired and conn.inflight == 0 and conn in self._open:
            self._open.discard(conn)
            task = asyncio.get_running_loop().create_task(conn.transport.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _invalidate_in_loop(self, cache_key: str) -> None:
        for key, conns in list(self._connections.items()):
            if key[0] == cache_key:
                for conn in list(conns):
                    self._retire(key, conn)

    async def _warm(self, credential: ApnsCredential, host: str, port: int) -> None:
        key: _ConnKey = (credential.cache_key, host, port)
        try:
            if credential.kind == "token":
                await self._bearer(credential)
            conn = self._connection_for(key, credential)
        except _CredentialProblem as exc:
            raise WarmError(f"APNs credential {credential.cache_key}: {exc}") from None
        conn.inflight += 1  # as a request would: a retirement meanwhile closes it once we are done
        try:
            async with asyncio.timeout(self._connect_timeout + 1.0):
                await conn.transport.connect(host, port)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is the warm-up's one line
            self._retire(key, conn)
            why = "timed out" if isinstance(exc, TimeoutError) else _classify_exception(exc)[2]
            raise WarmError(f"cannot connect to APNs at {host}:{port}: {why}") from None
        finally:
            conn.inflight -= 1
            self._maybe_close(conn)

    # ---- provider tokens --------------------------------------------------------------------

    async def _bearer(self, credential: ApnsCredential, *, stale: str | None = None) -> str:
        """The provider token for (team, key): from memory; else shared or minted (`ProviderTokens`),
        on a worker thread when the shared store is in play (it is the database), one fetch per key
        however many streams ask at once."""
        token = self._tokens.cached(credential, stale=stale)
        if token is not None:
            return token
        try:
            if self._tokens.store is None:
                return self._tokens.fetch(credential, stale=stale)
            key = (credential.team_id, credential.key_id)
            pending = self._token_fetches.get(key)
            if pending is None:
                pending = asyncio.get_running_loop().run_in_executor(
                    None, functools.partial(self._tokens.fetch, credential, stale=stale)
                )
                self._token_fetches[key] = pending
                pending.add_done_callback(lambda _: self._token_fetches.pop(key, None))
            return await asyncio.shield(pending)
        except TokenProblem as exc:
            raise _CredentialProblem(str(exc)) from None

    # ---- sending ----------------------------------------------------------------------------

    @staticmethod
    def _headers(request: ApnsRequest, bearer: str | None) -> dict[str, str]:
        headers = {"user-agent": USER_AGENT, "apns-topic": request.topic, "apns-push-type": request.push_type}
        if request.priority is not None:
            headers["apns-priority"] = str(request.priority)
        if request.expiration is not None:
            headers["apns-expiration"] = str(request.expiration)
        if request.collapse_id:
            headers["apns-collapse-id"] = request.collapse_id
        if request.apns_id:
            headers["apns-id"] = request.apns_id
        # Configured headers win over the typed fields (Kazoo's `apple.headers` semantics). Names are
        # lowercased so an override replaces rather than duplicates (APNs: 400 DuplicateHeaders).
        for name, value in request.extra_headers.items():
            headers[name.lower()] = str(value)
        if bearer is not None:
            headers["authorization"] = f"bearer {bearer}"
        return headers

    @staticmethod
    def _origin(request: ApnsRequest) -> httpx.Request:
        host = f"[{request.host}]" if ":" in request.host else request.host
        return httpx.Request("POST", f"https://{host}:{request.port}/3/device/")

    async def _send(self, request: ApnsRequest, credential: ApnsCredential, timeout: float) -> ApnsResult:
        started = time.monotonic()
        attempt: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                return await self._send_once(request, credential, started, attempt)
        except TimeoutError:
            # The stream may be stuck, or the whole connection silently dead; new pushes go to a
            # fresh connection while this one finishes (or abandons) what it carries.
            if "conn" in attempt:
                self._retire(attempt["key"], attempt["conn"])
            description = f"APNs did not answer within {timeout:g} s; retry later."
            return _no_response(Outcome.RETRY, "Timeout", description, request, started)

    async def _send_once(
        self, request: ApnsRequest, credential: ApnsCredential, started: float, attempt: dict[str, Any]
    ) -> ApnsResult:
        key: _ConnKey = (credential.cache_key, request.host, request.port)
        # Compact and UTF-8 (not \u escapes): the payload limit counts bytes.
        body = json.dumps(request.body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        bearer: str | None = None
        refreshed = False
        while True:
            try:
                if credential.kind == "token":
                    bearer = await self._bearer(credential, stale=bearer if refreshed else None)
                conn = self._connection_for(key, credential)
            except _CredentialProblem as exc:
                description = f"APNs credential {credential.cache_key}: {exc}"
                return _no_response(Outcome.FAILED, "BadCredential", description, request, started)
            attempt["key"], attempt["conn"] = key, conn
            conn.inflight += 1
            try:
                # The transport is called directly, not through httpx.AsyncClient (its cookie, auth,
                # redirect and header-merging layer measured 0.18 ms of CPU per push), with the request
                # to the connection's origin built once. Tokens come from SIP Contact parameters
                # (untrusted): quoting keeps them inside the path.
                conn.origin = conn.origin or self._origin(request)
                path = b"/3/device/" + quote(request.token, safe="").encode("ascii")
                fields = [(k.encode("ascii"), v.encode("ascii")) for k, v in self._headers(request, bearer).items()]
                response = await conn.transport.send(conn.origin, path, fields, body)
            except Exception as exc:
                self._retire(key, conn)
                if not _is_transport_error(exc):
                    log.exception("apns: unexpected error sending to %s", request.host)
                    description = f"Unexpected client error: {exc!r}"
                    return _no_response(Outcome.FAILED, "InternalError", description, request, started)
                outcome, reason, description = _classify_exception(exc)
                return _no_response(outcome, reason, description, request, started)
            finally:
                conn.inflight -= 1
                self._maybe_close(conn)

            result = result_from_response(request, response, started)
            if result.reason in _CONNECTION_SCOPED_REASONS:
                self._retire(key, conn)
            if result.reason == "ExpiredProviderToken" and credential.kind == "token" and not refreshed:
                # Our clock and Apple's disagree, or the token outlived the cache; mint once and retry.
                refreshed = True
                continue
            return result


# ---- one client per process ---------------------------------------------------------------------

_default_lock = threading.Lock()
_default_client: ApnsClient | None = None
_default_config: dict[str, Any] = {}


def configure(
    *,
    ca_file: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    jwt_max_age: float = DEFAULT_JWT_MAX_AGE_S,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT_S,
    token_store: TokenStore | None = None,
) -> None:
    """Set the process-wide client's options (call once at startup, e.g. from AppConfig.ready()).

    Reconfiguring closes the existing client; the next `get_client()` builds one with the new options.
    """
    global _default_client
    if not JWT_MIN_AGE_S <= jwt_max_age <= JWT_MAX_AGE_S:
        raise ValueError(f"jwt_max_age must be between {JWT_MIN_AGE_S} and {JWT_MAX_AGE_S} seconds")
    with _default_lock:
        _default_config.clear()
        _default_config.update(
            ca_file=ca_file,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            jwt_max_age=jwt_max_age,
            idle_timeout=idle_timeout,
            token_store=token_store,
        )
        old, _default_client = _default_client, None
    if old is not None:
        old.close()


def get_client() -> ApnsClient:
    """The process-wide client (one connection per credential for the whole process)."""
    global _default_client
    client = _default_client
    if client is not None:
        return client
    with _default_lock:
        if _default_client is None:
            _default_client = ApnsClient(**_default_config)
        return _default_client


def _close_default_client() -> None:
    global _default_client
    with _default_lock:
        client, _default_client = _default_client, None
    if client is not None:
        client.close()


def _forget_default_client_after_fork() -> None:
    # The loop thread does not survive fork(); the child builds its own client on first use.
    global _default_client, _default_lock
    _default_client = None
    _default_lock = threading.Lock()


atexit.register(_close_default_client)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_default_client_after_fork)
