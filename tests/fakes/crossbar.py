"""Fake Kazoo Crossbar (HTTP JSON API v2) for the device sync, on an ephemeral 127.0.0.1 port.

Implements what pusher uses, with Kazoo 4.3's shapes and semantics:

* `PUT /v2/api_auth` `{"data": {"api_key": ...}}` -> 201 `{"auth_token", "data": {"account_id", ...}}`,
  401 `invalid_credentials` for a wrong key.
* `PATCH /v2/accounts/<a>/devices/<d>` (X-Auth-Token required): merges `data` into the stored device doc
  the way crossbar_doc:patch_the_doc does (kz_json:merge with merge_left: recursive; `null` deletes a
  key; an empty object replaces the stored object; `_`/`pvt_` keys of the request are ignored).
  Unknown devices are created when `auto_create` is on (default), else 404 `bad_identifier`.
* `GET` of the same device.

Every answer uses Kazoo's envelope: `{"data", "status", "auth_token", "revision", "request_id", ...}`;
errors add `"error": "<code>", "message": "<text>"`.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http_server import FakeHandler, FakeServer, RecordedRequest, record, reply_json, serve, shutdown

_DEVICE_PATH = re.compile(r"/v2/accounts/([^/]+)/devices/([^/]+)")
_KAZOO_VERSION = "4.3.142"


@dataclass
class _Failure:
    status: int
    message: str | None
    only: str | None  # substring of the path the failure applies to; None = any request


@dataclass
class _State:
    tokens: set[str] = field(default_factory=set)
    failures: list[_Failure] = field(default_factory=list)
    delay_s: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list)
    revisions: dict[tuple[str, str], int] = field(default_factory=dict)


def kazoo_merge(request: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any]:
    """kz_json:merge(fun merge_left/2, Request, Existing) as in Kazoo 4.3."""
    merged: dict[str, Any] = {}
    for key in sorted(set(request) | set(existing)):
        if key in request:
            value = request[key]
            if value is None:
                continue  # null deletes the key
            old = existing.get(key)
            if isinstance(value, dict) and isinstance(old, dict):
                # An empty object replaces the stored one; a non-empty one is merged into it.
                merged[key] = {} if not value else kazoo_merge(value, old)
            elif isinstance(value, dict):
                merged[key] = kazoo_merge(value, {})
            else:
                merged[key] = copy.deepcopy(value)
        else:
            merged[key] = copy.deepcopy(existing[key])
    return merged


class FakeCrossbar:
    """Threaded fake Crossbar. `devices` maps (account_id, device_id) -> public device document."""

    def __init__(self, *, api_key: str | None = None, account_id: str | None = None) -> None:
        self.api_key = api_key or secrets.token_hex(32)  # Kazoo API keys are 64 hex characters
        self.account_id = account_id or secrets.token_hex(16)
        self.auto_create = True
        self.devices: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._state = _State()
        self._server: FakeServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FakeCrossbar:
        self._server = serve(self, _Handler, name="fake-crossbar")
        return self

    def stop(self) -> None:
        if self._server is not None:
            shutdown(self._server)
            self._server = None

    def reset(self) -> None:
        """Forget devices, tokens, scripted failures, delay and recorded requests; auto-create back on."""
        with self._lock:
            self._state = _State()
            self.devices.clear()
            self.auto_create = True

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeCrossbar not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- scripting -----------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int, *, message: str | None = None, only: str | None = None) -> None:
        """Answer the next `n` requests (whose path contains `only`, if given) with `status` and a Kazoo
        error envelope; `message` overrides Kazoo's usual message for that status."""
        with self._lock:
            self._state.failures.extend(_Failure(status, message, only) for _ in range(n))

    def expire_tokens(self) -> None:
        """Every auth token issued so far is now answered with 401 (as after Kazoo's token expiry)."""
        with self._lock:
            self._state.tokens.clear()

    def set_delay(self, seconds: float) -> None:
        with self._lock:
            self._state.delay_s = seconds

    def add_device(self, account_id: str, device_id: str, doc: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.devices[(account_id, device_id)] = {"id": device_id, **(doc or {})}
            self._state.revisions[(account_id, device_id)] = 1

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    @property
    def auth_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/v2/api_auth")]

    @property
    def issued_tokens(self) -> set[str]:
        with self._lock:
            return set(self._state.tokens)

    # -- request handling (called from handler threads) ----------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = handler.path.split("?", 1)[0]
        token = handler.headers.get("X-Auth-Token") or ""
        with self._lock:
            self._state.requests.append(record(handler, body, raw, path=path))
            delay = self._state.delay_s
            failure = self._take_failure(path)
        if delay:
            time.sleep(delay)
        if failure is not None:
            reply_json(handler, failure.status, _error(failure.status, failure.message, token))
            return
        if raw and body is None:
            reply_json(handler, 400, _error(400, "malformed request body", token))
            return

        if path == "/v2/api_auth" and handler.command == "PUT":
            self._api_auth(handler, body)
            return
        match = _DEVICE_PATH.fullmatch(path)
        if match is None:
            reply_json(handler, 404, _error(404, None, token))
            return
        with self._lock:
            authorized = token in self._state.tokens
        if not authorized:
            reply_json(handler, 401, _error(401, None, token))
            return
        key = (match.group(1), match.group(2))
        if handler.command == "PATCH":
            self._device_patch(handler, key, body, token)
        elif handler.command == "GET":
            self._device_get(handler, key, token)
        else:
            reply_json(handler, 405, _error(405, None, token))

    def _take_failure(self, path: str) -> _Failure | None:
        for index, failure in enumerate(self._state.failures):
            if failure.only is None or failure.only in path:
                return self._state.failures.pop(index)
        return None

    def _api_auth(self, handler: _Handler, body: Any) -> None:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("api_key") != self.api_key:
            reply_json(handler, 401, _error(401, None, ""))
            return
        token = secrets.token_hex(16)
        with self._lock:
            self._state.tokens.add(token)
        data = {
            "account_id": self.account_id,
            "apps": [],
            "is_reseller": True,
            "language": "en-us",
            "reseller_id": self.account_id,
        }
        reply_json(handler, 201, _envelope(data, token, "automatic"))

    def _device_patch(self, handler: _Handler, key: tuple[str, str], body: Any, token: str) -> None:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            reply_json(handler, 400, _error(400, "invalid request: data must be an object", token))
            return
        public = {k: v for k, v in data.items() if not k.startswith(("_", "pvt_"))}
        with self._lock:
            existing = self.devices.get(key)
            if existing is None and not self.auto_create:
                missing = True
            else:
                missing = False
                doc = kazoo_merge(public, existing or {"id": key[1]})
                doc["id"] = key[1]
                self.devices[key] = doc
                revision = self._state.revisions.get(key, 0) + 1
                self._state.revisions[key] = revision
                saved = copy.deepcopy(doc)
        if missing:
            reply_json(handler, 404, _error(404, None, token))
            return
        reply_json(handler, 200, _envelope(saved, token, f"{revision}-{secrets.token_hex(16)}"))

    def _device_get(self, handler: _Handler, key: tuple[str, str], token: str) -> None:
        with self._lock:
            doc = copy.deepcopy(self.devices.get(key))
            revision = self._state.revisions.get(key, 0)
        if doc is None:
            reply_json(handler, 404, _error(404, None, token))
            return
        reply_json(handler, 200, _envelope(doc, token, f"{revision}-{secrets.token_hex(16)}"))


class _Handler(FakeHandler):
    do_PUT = do_PATCH = do_GET = do_POST = FakeHandler.dispatch  # http.server dispatches on these names


_DEFAULT_MESSAGES = {
    400: "invalid request",
    401: "invalid_credentials",
    404: "bad_identifier",
    405: "method_not_allowed",
    409: "conflicting documents",
    500: "datastore_fault",
    503: "datastore_unreachable",
}


def _envelope(data: Any, token: str, revision: str) -> dict[str, Any]:
    return {
        "data": data,
        "revision": revision,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": _KAZOO_VERSION,
        "node": "fake-crossbar",
        "request_id": secrets.token_hex(16),
        "status": "success",
        "auth_token": token,
    }


def _error(status: int, message: str | None, token: str) -> dict[str, Any]:
    text = message or _DEFAULT_MESSAGES.get(status, "error")
    return {
        "data": {"message": text},
        "error": str(status),
        "message": text,
        "status": "error",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "version": _KAZOO_VERSION,
        "node": "fake-crossbar",
        "request_id": secrets.token_hex(16),
        "auth_token": token,
    }
