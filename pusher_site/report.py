"""`GET|POST /report/<slug>/<secret>/` (or `/report/<slug>/` with a signature): push token reports,
as Acrobits' Push Token Reporter sends them (Groundwire and white-label apps) and any app that
reports its token over HTTP instead of putting it in its Contact.

This face authenticates the request (the reporter's secret in the path, compared in constant time,
or an HMAC-SHA256 signature of the request), bounds it (sizes, parameter count, reports per
account, failed attempts per client), reads its parameters (query string, form or JSON body) and
hands them to registry.reporting.token_report_apply, the one service. It answers JSON:
200 {"outcome"}; 400 malformed; 401 no secret or signature; 403 a wrong one; 404 unknown reporter
or no device this reporter may write (one answer: it tells nobody which accounts exist); 409 the
device has no known registrar yet; 413/414 too large; 415 a body of another type; 429 too many.

The secret and the tokens never reach a log: the answer is marked logged so that Django does not
log its path, and pusher_site.logfilters masks /report/ paths in any log line."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt

from core.errors import InvalidInput, PusherError, UnknownDevice
from core.jsonlimits import json_depth_exceeds
from core.text import text_storable_problem
from registry.models import ReporterAuth, TokenReporter
from registry.reporter import report_signature_valid
from registry.reporting import (
    token_report_account,
    token_report_apply,
    token_reporter_secret,
    token_reporter_secret_matches,
)

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 4096
MAX_BODY_BYTES = 8192
MAX_PARAMETERS = 50
MAX_VALUE_CHARS = 2048
# An app reports at every start: a dozen reports a minute for one account is already a loop.
REPORTS_PER_ACCOUNT_PER_MINUTE = 12
# Failed secrets or signatures from one address to one reporter in a minute; past them, failures are
# answered 429 without a log line each. A right secret is still taken: behind a reverse proxy every
# app shares the proxy's address, and one client's guesses must not lock the others out.
AUTH_FAILURES_PER_MINUTE = 20


class _MinuteCounter:
    """Events per key in the current minute-long window of that key, for at most `size` keys (the
    least recently seen are forgotten first). Per process: a limit, not an accounting."""

    def __init__(self, limit: int, *, period_s: float = 60.0, size: int = 20_000) -> None:
        self.limit = limit
        self.period_s = period_s
        self.size = size
        self._windows: OrderedDict[tuple[str, ...], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def _window(self, key: tuple[str, ...], now: float) -> tuple[float, int]:
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.period_s:
            start, count = now, 0
        return start, count

    def wait_s(self, key: tuple[str, ...], now: float) -> float:
        """Seconds until `key` may go on (0: now)."""
        with self._lock:
            start, count = self._window(key, now)
            return max(0.0, start + self.period_s - now) if count >= self.limit else 0.0

    def hit(self, key: tuple[str, ...], now: float) -> None:
        with self._lock:
            start, count = self._window(key, now)
            self._windows[key] = (start, count + 1)
            self._windows.move_to_end(key)
            while len(self._windows) > self.size:
                self._windows.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()


_reports = _MinuteCounter(REPORTS_PER_ACCOUNT_PER_MINUTE)
_auth_failures = _MinuteCounter(AUTH_FAILURES_PER_MINUTE)


def limits_reset() -> None:
    """Forget every count (tests)."""
    _reports.clear()
    _auth_failures.clear()


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, *, retry_after: float = 0.0, quiet: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
        self.quiet = quiet  # already said in the log (a lockout's later failures)


def _answer(status: int, body: dict[str, Any], *, retry_after: float = 0.0) -> JsonResponse:
    response = JsonResponse(body, status=status)
    if status == 405:
        response["Allow"] = "GET, POST"
    if retry_after:
        response["Retry-After"] = str(max(1, round(retry_after)))
    # Django logs a 4xx/5xx with the request's path, which holds the secret: our own line says it
    # (pusher_site.logfilters would mask it anyway).
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


@csrf_exempt
def token_report(request: HttpRequest, slug: str, secret: str | None = None) -> JsonResponse:
    client = request.META.get("REMOTE_ADDR", "") or "-"
    try:
        reporter, params = _authenticated_params(request, slug, secret, client)
        _account_limit(reporter, params)
        result = token_report_apply(reporter=reporter, params=params)
    except _Refused as refused:
        if not refused.quiet:
            log.warning("token report refused: %s %s reporter %r from %s: %s (%s)", request.method,
                        "with a path secret" if secret else "without a path secret", slug, client, refused.message,
                        refused.code)
        return _answer(refused.status, {"code": refused.code, "message": refused.message},
                       retry_after=refused.retry_after)
    except (InvalidInput, UnknownDevice, PusherError) as exc:
        status = 404 if isinstance(exc, UnknownDevice) else 409 if exc.code == "device_unroutable" else 400
        log.warning("token report refused: reporter %r from %s: %s (%s)", slug, client, exc.message, exc.code)
        return _answer(status, {"code": exc.code, "message": exc.message})
    return _answer(200, {"outcome": result.outcome})


def _authenticated_params(
    request: HttpRequest, slug: str, secret: str | None, client: str
) -> tuple[TokenReporter, dict[str, str]]:
    """The enabled reporter the request authenticates for, and its parameters; _Refused otherwise."""
    if request.method not in ("GET", "POST"):
        raise _Refused(405, "method_not_allowed", "report with GET or POST")
    query = request.META.get("QUERY_STRING", "")
    if len(query) > MAX_QUERY_CHARS:
        raise _Refused(414, "uri_too_long", f"the query string is over {MAX_QUERY_CHARS} characters")
    reporter = TokenReporter.objects.filter(slug=slug, enabled=True).first()
    if reporter is None:
        raise _Refused(404, "reporter_unknown", "no such token reporter")
    now = time.time()
    failures_key = (reporter.slug, client)
    body = _body(request)
    try:
        if reporter.auth == ReporterAuth.SIGNATURE:
            authentic = _signature_valid(request, reporter, secret, body, query, now)
        else:
            if not secret:
                raise _Refused(401, "secret_missing", "this reporter's URL holds its secret: /report/<slug>/<secret>/")
            authentic = token_reporter_secret_matches(reporter=reporter, given=secret)
    except PusherError as exc:  # the stored secret cannot be decrypted: the operator must set it again
        log.error("token reporter %r cannot authenticate reports: %s", reporter.slug, exc.message)
        raise _Refused(503, "reporter_unusable", "this reporter cannot take reports now") from None
    if not authentic:
        wait = _auth_failures.wait_s(failures_key, now)
        if wait:
            raise _Refused(429, "too_many_failures", "too many failed attempts; wait", retry_after=wait, quiet=True)
        _auth_failures.hit(failures_key, now)
        if _auth_failures.wait_s(failures_key, now):
            log.warning("token reporter %r: %d failed attempts from %s within a minute; further failures from there "
                        "are answered 429 without a log line until it passes", reporter.slug, AUTH_FAILURES_PER_MINUTE,
                        client)
        raise _Refused(403, "authentication_failed", "wrong secret or signature")
    return reporter, _params(request, query, body)


def _signature_valid(
    request: HttpRequest, reporter: TokenReporter, secret: str | None, body: bytes, query: str, now: float
) -> bool:
    if secret:
        raise _Refused(401, "signature_required", "this reporter takes a signature, not a secret in the URL")
    signature = request.headers.get("X-Pusher-Signature", "")
    timestamp = request.headers.get("X-Pusher-Timestamp", "")
    if not signature or not timestamp:
        raise _Refused(401, "signature_missing", "sign the request: X-Pusher-Timestamp and X-Pusher-Signature")
    return report_signature_valid(
        secret=token_reporter_secret(reporter), signature=signature, timestamp=timestamp, now=now,
        method=request.method or "", path=request.path, query=query, body=body,
    )


def _body(request: HttpRequest) -> bytes:
    if request.method != "POST":
        return b""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Refused(400, "bad_request", "Content-Length is not a number") from None
    if length > MAX_BODY_BYTES:
        raise _Refused(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    body = request.body
    if len(body) > MAX_BODY_BYTES:
        raise _Refused(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    return body


def _params(request: HttpRequest, query: str, body: bytes) -> dict[str, str]:
    """The query string's parameters and the body's (form or JSON object), each name once."""
    sources: list[tuple[str, list[tuple[str, Any]]]] = [("query string", list(QueryDict(query).lists()))]
    if body.strip():
        content_type = (request.content_type or "").lower()
        if content_type == "application/json":
            sources.append(("body", _json_pairs(body)))
        elif content_type in ("application/x-www-form-urlencoded", "text/plain", ""):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused(400, "bad_request", "the body is not UTF-8") from None
            sources.append(("body", list(QueryDict(text).lists())))
        elif content_type == "multipart/form-data":
            if request.FILES:
                raise _Refused(400, "bad_request", "a report carries no files")
            sources.append(("body", list(request.POST.lists())))
        else:
            raise _Refused(415, "unsupported_media_type",
                           "send a form (application/x-www-form-urlencoded or multipart) or a JSON object")
    params: dict[str, str] = {}
    for where, pairs in sources:
        for name, values in pairs:
            if len(values) != 1 or name in params:
                raise _Refused(400, "bad_request", f"parameter {name[:40]!r} is given more than once")
            value = values[0]
            if len(name) > 100 or len(value) > MAX_VALUE_CHARS:
                raise _Refused(400, "bad_request", f"a parameter of the {where} is too long")
            params[name] = value
            if len(params) > MAX_PARAMETERS:
                raise _Refused(400, "bad_request", f"more than {MAX_PARAMETERS} parameters")
    problem = text_storable_problem(params)
    if problem:
        raise _Refused(400, "bad_request", f"a parameter {problem}")
    return params


def _json_pairs(body: bytes) -> list[tuple[str, list[str]]]:
    try:
        text = body.decode("utf-8")
        if json_depth_exceeds(text):
            raise ValueError("too deep")
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Refused(400, "bad_request", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise _Refused(400, "bad_request", "the JSON body must be an object of parameters")
    pairs = []
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Refused(400, "bad_request", f"parameter {name[:40]!r} must be text or a number")
        pairs.append((name, [str(value)]))
    return pairs


def _account_limit(reporter: TokenReporter, params: Mapping[str, str]) -> None:
    username, realm = token_report_account(reporter=reporter, params=params)
    key = (reporter.slug, username[:255], realm[:255])
    now = time.time()
    wait = _reports.wait_s(key, now)
    if wait:
        raise _Refused(429, "too_many_reports", "too many reports for this account; wait", retry_after=wait)
    _reports.hit(key, now)
