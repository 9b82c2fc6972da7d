"""Firebase Cloud Messaging, HTTP v1 API: the sender (loaded on first use by push/providers/fcm.py).

`FcmSender.send(request, credential, timeout=...)` posts one message and returns an `FcmResult`. It never
touches the ORM or settings (the service passes `PUSHER_FCM_ENDPOINT` and the credential in) and never raises
for network or provider errors: the service reads `outcome` and decides (log, retry, deactivate the token).

Why pyfcm is subclassed rather than used through `FCMNotification.notify()` (pyfcm 2.1.1, baseapi.py):

* The send URL comes from the class constant `FCM_END_POINT_BASE` (always https://fcm.googleapis.com) and
  `fcm_end_point` prefers the service account's own `project_id` over the one passed in. We override the
  `fcm_end_point` property so the URL is exactly
  `{endpoint}/v1/projects/{credential.project_id}/messages:send` (a service account may legitimately send
  for another project it has rights on; PUSHER_FCM_ENDPOINT and the test fake need another base).
* `_get_access_token()` calls `credentials.refresh()` - a round trip to the OAuth2 token endpoint - every time
  it is asked, wraps every failure (including "token endpoint down") in `InvalidDataError`, and
  `requests_session` re-seeds the per-thread `Authorization` header on a fixed 1800 s clock that ignores
  `expires_in`. We keep one access token per credential, refresh it only when it is (nearly) expired or
  rejected with 401, and report token-endpoint failures as their own outcome.
* `send_request()` sleeps `Retry-After` seconds and recurses without bound (a 429 would park a worker),
  and recurses forever on ACCESS_TOKEN_EXPIRED; `parse_response()` raises exceptions that drop Google's
  error code. We post once (plus one retry after a 401) and classify Google's error JSON ourselves.
* Its default adapter retries 502/503 POSTs with urllib3 backoff, up to 10 times. We pass an adapter with
  no retries, so the service's retry policy is the only one.

What we keep from pyfcm: credential holding, the per-thread `requests.Session` (requests sessions are not
thread-safe; pyfcm gives each worker thread its own), and its compact UTF-8 JSON encoding.

TLS: verification is always on. `ca_file` adds a CA to certifi's bundle (it does not replace it). Plain
`http://` is accepted only for loopback hosts, which is what the test fake uses.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import certifi
import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import requests
from google.oauth2 import service_account
from pyfcm import FCMNotification
from requests.adapters import HTTPAdapter

from push.providers.fcm import (
    DEFAULT_ENDPOINT,
    FcmCredential,
    FcmRequest,
    FcmResult,
    FcmWarmError,
    Outcome,
    fcm_message_build,
)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

# Refresh the access token this long before Google's stated expiry, so a token never expires between
# being read and reaching FCM (Google issues 3600 s tokens, so this costs nothing).
TOKEN_REFRESH_MARGIN_S = 60.0

# FCM answers 400 INVALID_ARGUMENT both for a malformed message (our bug: keep the token) and for a
# malformed registration token (the token is garbage: drop it). Only its message tells them apart.
_INVALID_TOKEN_MESSAGE = "registration token is not a valid fcm registration token"

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_ANDROID_PRIORITIES = frozenset({"high", "normal"})
_DETAIL_LIMIT = 300


class FcmSender:
    """Sends FCM HTTP v1 messages; one cached pyfcm client (and OAuth2 access token) per credential.

    Thread-safe: any number of worker threads may call `send()` concurrently.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`endpoint`: base URL (PUSHER_FCM_ENDPOINT); `ca_file`: extra trusted CA bundle (PEM);
        `clock`: wall clock used to decide when the access token is stale (tests move it forward)."""
        _require_tls_or_loopback(endpoint, "FCM endpoint")
        self._endpoint = endpoint.rstrip("/")
        self._clock = clock
        # One adapter (connection pools) shared by every client and thread: all clients talk to the same
        # host, and urllib3's pool manager is thread-safe. max_retries=0: no hidden retries (see module doc).
        self._adapter = _TlsAdapter(ca_file) if ca_file else HTTPAdapter(max_retries=0)
        self._clients: dict[str, _FcmClient] = {}
        self._lock = threading.Lock()

    def send(self, request: FcmRequest, credential: FcmCredential, *, timeout: float) -> FcmResult:
        """Send one message. `timeout` bounds the whole call (token fetch, send, one 401 retry)."""
        started = time.monotonic()
        deadline = started + timeout

        def done(
            outcome: Outcome,
            status: int | None,
            reason: str,
            description: str,
            message_name: str | None = None,
            retry_after_s: float | None = None,
        ) -> FcmResult:
            return FcmResult(
                outcome=outcome,
                status=status,
                reason=reason,
                description=description,
                message_name=message_name,
                latency_s=time.monotonic() - started,
                retry_after_s=retry_after_s,
            )

        problem = _request_problem(request)
        if problem:
            return done(Outcome.FAILED, None, "INVALID_REQUEST", problem)
        try:
            client = self._client_for(credential)
        except (ValueError, KeyError, TypeError) as exc:
            # A broken service-account JSON is an operator problem; retrying cannot fix it.
            return done(Outcome.FAILED, None, "CredentialError", _short(exc))

        body = client.json_dumps(fcm_message_build(request))
        try:
            response, used_token = client.post(body, deadline=deadline)
            if response.status_code == 401 and _fcm_error_code(response) != "THIRD_PARTY_AUTH_ERROR":
                # Google revoked or expired the token before we thought it would: fetch a new one and
                # retry once. THIRD_PARTY_AUTH_ERROR is about the app's APNs/web-push setup, not our token.
                client.token_reject(used_token)
                response, _ = client.post(body, deadline=deadline)
        except _DeadlineExceeded:
            return done(Outcome.RETRY, None, "Timeout", f"no answer from FCM within {timeout:g} s")
        except _TokenEndpointError as exc:
            outcome = Outcome.RETRY if exc.retryable else Outcome.FAILED
            return done(outcome, None, f"TokenEndpointError: {exc.summary}", exc.detail)
        except requests.exceptions.SSLError as exc:
            # Certificate problems need an operator (wrong CA, interception); a retry would fail the same way.
            return done(Outcome.FAILED, None, "SSLError", _short(exc))
        except requests.exceptions.Timeout as exc:
            return done(Outcome.RETRY, None, "Timeout", _short(exc))
        except requests.exceptions.ConnectionError as exc:
            return done(Outcome.RETRY, None, "ConnectionError", _short(exc))
        except requests.exceptions.RequestException as exc:
            return done(Outcome.FAILED, None, type(exc).__name__, _short(exc))

        outcome, reason, description, name = _classify(response)
        return done(outcome, response.status_code, reason, description, name, _retry_after(response))

    def warm(self, credential: FcmCredential, *, timeout: float) -> None:
        """Get ready for the first push with `credential`: fetch its OAuth2 access token now (one
        round trip to the token endpoint) and open the TLS connection to the send endpoint, so that
        the first push waits for neither. Blocking;
        raises FcmWarmError saying why it could not (the first push will then try again)."""
        deadline = time.monotonic() + timeout
        try:
            client = self._client_for(credential)
            client.access_token(timeout=_remaining(deadline))
        except (ValueError, KeyError, TypeError) as exc:
            raise FcmWarmError(f"service account unusable: {_short(exc)}") from None
        except _TokenEndpointError as exc:
            raise FcmWarmError(exc.detail) from None
        except (_DeadlineExceeded, requests.exceptions.RequestException) as exc:
            raise FcmWarmError(f"no access token within {timeout:g} s: {_short(exc)}") from None
        try:
            client.connection_warm(timeout=_remaining(deadline))
        except (_DeadlineExceeded, requests.exceptions.RequestException) as exc:
            raise FcmWarmError(f"cannot connect to {self._endpoint}: {_short(exc)}") from None

    def invalidate(self, cache_key: str) -> None:
        """Forget the client (and access token) for `cache_key`, e.g. after the credential changed."""
        with self._lock:
            self._clients.pop(cache_key, None)

    def close(self) -> None:
        """Drop all clients and close pooled connections (process shutdown)."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()
        self._adapter.close()

    def _client_for(self, credential: FcmCredential) -> _FcmClient:
        with self._lock:
            client = self._clients.get(credential.cache_key)
            # Same cache key but different content means the credential was replaced without an
            # invalidate(); never keep sending with the old key.
            if client is None or client.credential != credential:
                client = _FcmClient(credential, self._endpoint, self._adapter, self._clock)
                self._clients[credential.cache_key] = client
            return client


class _FcmClient(FCMNotification):
    """pyfcm client for one credential, with our endpoint, token cache and single-shot send."""

    def __init__(
        self,
        credential: FcmCredential,
        endpoint: str,
        adapter: HTTPAdapter,
        clock: Callable[[], float],
    ) -> None:
        info = credential.service_account_info
        _require_tls_or_loopback(str(info.get("token_uri", "")), "service account token_uri")
        # from_service_account_info honours the file's token_uri, which is how tests reach the fake Google.
        google_credentials = service_account.Credentials.from_service_account_info(info, scopes=[FCM_SCOPE])
        super().__init__(credentials=google_credentials, project_id=credential.project_id, adapter=adapter)
        self.credential = credential
        self._endpoint_root = f"{endpoint}/"
        self._send_url = f"{endpoint}/v1/projects/{quote(credential.project_id, safe='')}/messages:send"
        self._clock = clock
        self._token_lock = threading.Lock()  # google-auth credentials are not safe to refresh concurrently
        self._token_session = requests.Session()  # only used under _token_lock
        self._token_session.mount("http://", adapter)
        self._token_session.mount("https://", adapter)

    def connection_warm(self, *, timeout: float) -> None:
        """Open the TLS connection the first push will use: a GET of the send endpoint's root (Google
        answers 404; the connection stays in the shared adapter's pool, where every thread's session
        takes its connections from)."""
        with self._token_lock:
            self._token_session.get(self._endpoint_root, timeout=timeout, allow_redirects=False).content  # noqa: B018

    @property
    def fcm_end_point(self) -> str:
        return self._send_url

    def request_headers(self) -> dict[str, str]:
        # pyfcm seeds each per-thread session with these. The bearer token is sent per request instead
        # (see post()), so a session can never carry a stale one.
        return {"Content-Type": "application/json"}

    def send_request(self, payload: bytes | None = None, timeout: float | None = None) -> requests.Response:
        # Keeps pyfcm's own notify() coherent with our token handling should anyone call it.
        return self.post(payload or b"", deadline=time.monotonic() + (timeout or 10.0))[0]

    def post(self, body: bytes, *, deadline: float) -> tuple[requests.Response, str]:
        """One POST to messages:send with a fresh-enough token; both steps share the caller's deadline."""
        token = self.access_token(timeout=_remaining(deadline))
        response = self.requests_session.post(
            self.fcm_end_point,
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=UTF-8"},
            timeout=_remaining(deadline),
        )
        return response, token

    def access_token(self, *, timeout: float) -> str:
        with self._token_lock:
            if not self._token_fresh():
                self._refresh(timeout)
            return str(self.credentials.token)

    def token_reject(self, used_token: str) -> None:
        """FCM said 401 to `used_token`: make the next access_token() fetch a new one. If another thread
        already replaced that token, keep the new one (avoids a refresh stampede)."""
        with self._token_lock:
            if self.credentials.token == used_token:
                self.credentials.token = None

    def close(self) -> None:
        self._token_session.close()

    def _token_fresh(self) -> bool:
        credentials = self.credentials
        if not credentials.token:
            return False
        if credentials.expiry is None:  # no expires_in from the token endpoint: trust it until a 401
            return True
        expires_at = credentials.expiry.replace(tzinfo=dt.UTC).timestamp()  # google-auth: naive UTC
        return self._clock() < expires_at - TOKEN_REFRESH_MARGIN_S

    def _refresh(self, timeout: float) -> None:
        token_uri = self.credential.service_account_info.get("token_uri")
        try:
            self.credentials.refresh(_TokenRequest(self._token_session, timeout))
        except google.auth.exceptions.RefreshError as exc:
            # The endpoint answered but refused (invalid_grant: key deleted/rotated, clock skew...). Only
            # google-auth's "retryable" errors (server_error, temporarily_unavailable) are worth a retry.
            retryable = bool(getattr(exc, "retryable", False))
            summary = _refresh_error_code(exc)
            if retryable:
                summary = f"FCM OAuth2 token endpoint unreachable: {summary}"
            else:
                summary = f"FCM OAuth2 token request rejected: {summary}"
            raise _TokenEndpointError(summary, f"{summary} ({token_uri}): {_short(exc)}", retryable) from exc
        except google.auth.exceptions.TransportError as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, _TokenEndpointUnavailable):
                kind = detail = cause.status_line
            else:
                kind, detail = type(cause).__name__, _short(cause)
            summary = f"FCM OAuth2 token endpoint unreachable: {kind}"
            raise _TokenEndpointError(summary, f"{summary} ({token_uri}): {detail}", True) from exc


class _TokenRequest(google.auth.transport.Request):
    """google-auth transport for the token endpoint: our timeout, our adapter, and no hidden retries.

    google-auth retries a 5xx/429 from the token endpoint 3 times with 1 s + 2 s backoff; for a push worker
    that is 3 s stalled per message while Google is down. Raising a TransportError on such an answer ends
    that loop at once; the service's own retry policy takes over.
    """

    def __init__(self, session: requests.Session, timeout: float) -> None:
        self._inner = google.auth.transport.requests.Request(session=session)
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        response = self._inner(
            url, method=method, body=body, headers=headers, timeout=self._timeout, **kwargs
        )
        if response.status == 429 or response.status >= 500:
            raise google.auth.exceptions.TransportError(
                "token endpoint unavailable"
            ) from _TokenEndpointUnavailable(response.status)
        return response



class _TokenEndpointUnavailable(Exception):
    def __init__(self, status: int) -> None:
        self.status_line = f"HTTP {status}"
        super().__init__(self.status_line)


class _TokenEndpointError(Exception):
    def __init__(self, summary: str, detail: str, retryable: bool) -> None:
        super().__init__(detail)
        self.summary = summary  # low-cardinality, goes into FcmResult.reason
        self.detail = detail
        self.retryable = retryable


class _DeadlineExceeded(Exception):
    pass


class _TlsAdapter(HTTPAdapter):
    """HTTPAdapter that trusts certifi's bundle plus one extra CA file; verification stays on."""

    def __init__(self, ca_file: str) -> None:
        self._ssl_context = ssl.create_default_context(cafile=certifi.where())
        self._ssl_context.load_verify_locations(cafile=ca_file)
        super().__init__(max_retries=0)  # calls init_poolmanager, so the context must exist first

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)


def _classify(response: requests.Response) -> tuple[Outcome, str, str, str | None]:
    """(outcome, reason, description, message_name) for an FCM HTTP answer."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    status = response.status_code
    if status == 200:
        name = payload.get("name") if isinstance(payload, dict) else None
        return Outcome.SENT, "OK", "accepted by FCM", name if isinstance(name, str) else None

    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(error.get("message") or response.reason or "")
    code = _fcm_error_code_from(error) or str(error.get("status") or f"HTTP_{status}")
    description = f"HTTP {status} {code}: {message}"[: _DETAIL_LIMIT * 2]

    if code in ("UNREGISTERED", "SENDER_ID_MISMATCH"):
        # The app was uninstalled / the token belongs to another Firebase project: the token is dead.
        return Outcome.TOKEN_INVALID, code, description, None
    if status == 400 and _INVALID_TOKEN_MESSAGE in message.lower():
        return Outcome.TOKEN_INVALID, code, description, None
    if status == 429 or status >= 500 or code in ("QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"):
        return Outcome.RETRY, code, description, None
    # 400 (malformed message), 401 after a fresh token, 403 (no permission on the project), 404 without
    # UNREGISTERED (e.g. unknown project): a retry would fail the same way, and the token is not to blame.
    return Outcome.FAILED, code, description, None


def _fcm_error_code(response: requests.Response) -> str | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    return _fcm_error_code_from(error) if isinstance(error, dict) else None


def _fcm_error_code_from(error: dict[str, Any]) -> str | None:
    # Google's generic `status` (NOT_FOUND, PERMISSION_DENIED...) is coarse; FCM's own errorCode in
    # `details` (UNREGISTERED, SENDER_ID_MISMATCH...) is the documented signal.
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith(
            "google.firebase.fcm.v1.FcmError"
        ):
            code = detail.get("errorCode")
            if isinstance(code, str) and code:
                return code
    return None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:  # the HTTP-date form (RFC 9110 10.2.3): rare from Google
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def _refresh_error_code(exc: google.auth.exceptions.RefreshError) -> str:
    # google-auth raises RefreshError("<error>: <error_description>", response_data).
    data = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return type(exc).__name__


def _request_problem(request: FcmRequest) -> str | None:
    if not request.token:
        return "empty registration token"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in request.data.items()):
        return "FCM HTTP v1 data values must all be strings (the caller stringifies nested values)"
    if request.android_priority not in _ANDROID_PRIORITIES:
        return f"android_priority must be 'high' or 'normal', not {request.android_priority!r}"
    if request.ttl_s is not None and (not isinstance(request.ttl_s, int) or request.ttl_s < 0):
        return f"ttl_s must be a non-negative integer, not {request.ttl_s!r}"
    return None


def _require_tls_or_loopback(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return  # test fakes on 127.0.0.1; nothing leaves the host
    raise ValueError(f"{what} must be an https:// URL (plain http only on loopback), got {url!r}")


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _DeadlineExceeded()
    return remaining


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."
