"""Kazoo Crossbar client for the device `push` object: transport only (httpx, sync, thread-safe).

Writing through Crossbar rather than straight into CouchDB keeps Kazoo's device cache coherent: Crossbar
publishes the `doc_edited` event that flushes it (PROTOCOL.md §9.18).

How the push object is written (PROTOCOL.md §5: "replace `push` wholesale, stale keys disappear"):
Crossbar's PATCH merges the request into the stored document *recursively* (crossbar_doc:patch_the_doc ->
kz_json:merge with merge_left, Kazoo 4.3), so PATCHing a new push object keeps keys of the old one that the
new one lacks. The same merge deletes keys whose value is `null`, and an empty object replaces the stored
object outright. Hence:

* `push=None` or `{}` sends `{"data": {"push": {}}}`: the stored object becomes `{}`, which kz_endpoint
  treats as "no push" (it needs a non-empty object). A `{}` is used rather than `null` so the key stays
  visible in the document as "explicitly cleared by pusher".
* a non-empty push object is PATCHed as is. Kazoo answers with the saved document; if that still holds
  keys we did not send (stale keys of an older object, or an older Kazoo whose merge ignores `{}`), a
  second PATCH sets them to `null`. The common case costs one request, and there is never a window in
  which the device has no push object.

PUT/POST with the full document would also replace it, but needs a GET and a revision check, and would
overwrite any concurrent edit of the rest of the device made in the Kazoo UI.

Secrets: the API key and the auth token never appear in exception messages (Kazoo may echo request data in
validation errors, so messages are also scrubbed of both).
"""

from __future__ import annotations

import ssl
import threading
from typing import Any
from urllib.parse import quote

import certifi
import httpx

from core.errors import PusherError
from registry.ids import kazoo_id_valid

_MESSAGE_LIMIT = 300


class KazooSyncError(PusherError):
    """Crossbar refused or could not be reached. `status` is the HTTP status (None: no answer);
    `retryable` tells the sync loop whether trying again later can help."""

    code = "kazoo_sync_failed"

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class CrossbarClient:
    """One authenticated Crossbar session (API key -> auth token), shared by all threads."""

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 5.0, ca_file: str | None = None
    ) -> None:
        """`base_url`: Crossbar root without `/v2`, e.g. `https://kazoo.example.com:8443`."""
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._auth_token: str | None = None
        self._account_id: str | None = None
        self._lock = threading.Lock()  # guards the auth token; httpx.Client itself is thread-safe
        self._http = httpx.Client(
            timeout=timeout,
            verify=_ssl_context(ca_file),
            headers={"Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"CrossbarClient(base_url={self.base_url!r}, authenticated={self._auth_token is not None})"

    @property
    def account_id(self) -> str | None:
        """The account the API key belongs to (known after authenticate())."""
        return self._account_id

    def authenticate(self) -> None:
        """PUT /v2/api_auth with the API key; keeps the auth token for the X-Auth-Token header."""
        with self._lock:
            self._authenticate_locked()

    def device_push_set(self, account_id: str, device_id: str, push: dict[str, Any] | None) -> None:
        """Make the device's `push` object equal to `push` (None or {} clears it). See the module doc."""
        wanted = dict(push or {})
        saved = self._device_patch(account_id, device_id, {"push": wanted})
        stored = saved.get("push") if isinstance(saved, dict) else None
        if isinstance(stored, dict):
            stale = [key for key in stored if key not in wanted and stored[key] is not None]
            if stale:
                # Kazoo merged instead of replacing: drop the leftovers (null deletes in Kazoo's merge).
                self._device_patch(account_id, device_id, {"push": {key: None for key in stale}})

    def device_get(self, account_id: str, device_id: str) -> dict[str, Any]:
        """The device document as Crossbar shows it (public fields)."""
        response = self._call("GET", self._device_path(account_id, device_id), None, what="read device")
        return _envelope_data(response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CrossbarClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------------

    def _device_path(self, account_id: str, device_id: str) -> str:
        # The ids come from bus messages: checked (the registry refuses such messages already) and
        # quoted, so that no id can walk the URL path ("..": the account document itself).
        for name, value in (("account", account_id), ("device", device_id)):
            if not kazoo_id_valid(value):
                shown = repr(value[:70]) if isinstance(value, str) else type(value).__name__
                raise KazooSyncError(f"refusing to build a Crossbar URL from {name} id {shown}: not a Kazoo id")
        return f"/v2/accounts/{quote(account_id, safe='')}/devices/{quote(device_id, safe='')}"

    def _device_patch(self, account_id: str, device_id: str, data: dict[str, Any]) -> dict[str, Any]:
        response = self._call(
            "PATCH", self._device_path(account_id, device_id), {"data": data}, what="update device push"
        )
        return _envelope_data(response)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, what: str) -> httpx.Response:
        token = self._current_token()
        response = self._send(method, path, body, token, what=what)
        if response.status_code == 401:
            # Auth tokens expire (Kazoo's default is one hour) or are revoked: get a new one, try once more.
            token = self._reauthenticate(stale=token)
            response = self._send(method, path, body, token, what=what)
        if response.is_success:
            return response
        raise self._error(what, response)

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None, token: str, *, what: str
    ) -> httpx.Response:
        try:
            return self._http.request(
                method, self.base_url + path, json=body, headers={"X-Auth-Token": token}
            )
        except httpx.HTTPError as exc:
            raise self._unreachable(what, exc) from None

    def _current_token(self) -> str:
        with self._lock:
            if self._auth_token is None:
                self._authenticate_locked()
            assert self._auth_token is not None
            return self._auth_token

    def _reauthenticate(self, *, stale: str) -> str:
        with self._lock:
            # Another thread may have re-authenticated while we waited; one new token is enough.
            if self._auth_token == stale or self._auth_token is None:
                self._authenticate_locked()
            assert self._auth_token is not None
            return self._auth_token

    def _authenticate_locked(self) -> None:
        self._auth_token = None
        try:
            response = self._http.put(
                f"{self.base_url}/v2/api_auth", json={"data": {"api_key": self._api_key}}
            )
        except httpx.HTTPError as exc:
            raise self._unreachable("authenticate", exc) from None
        if not response.is_success:
            raise self._error("authenticate with the API key", response)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        token = payload.get("auth_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise KazooSyncError(
                f"Kazoo authentication answered HTTP {response.status_code} without an auth_token",
                status=response.status_code,
                retryable=True,
            )
        self._auth_token = token
        data = payload.get("data")
        account_id = data.get("account_id") if isinstance(data, dict) else None
        self._account_id = account_id if isinstance(account_id, str) else None

    def _error(self, what: str, response: httpx.Response) -> KazooSyncError:
        status = response.status_code
        detail = self._scrub(_kazoo_message(response))
        text = f"Kazoo {what} failed: HTTP {status}" + (f" ({detail})" if detail else "")
        # 5xx, 429 and 409 (CouchDB conflict with a concurrent edit) can pass; other 4xx will not.
        return KazooSyncError(text, status=status, retryable=status >= 500 or status in (409, 429))

    def _unreachable(self, what: str, exc: httpx.HTTPError) -> KazooSyncError:
        detail = self._scrub(f"{type(exc).__name__}: {exc}")[:_MESSAGE_LIMIT]
        return KazooSyncError(f"Kazoo {what} failed: Crossbar unreachable ({detail})", retryable=True)

    def _scrub(self, text: str) -> str:
        for secret in (self._api_key, self._auth_token):
            if secret:
                text = text.replace(secret, "<redacted>")
        return text


def _envelope_data(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    data = payload.get("data") if isinstance(payload, dict) else None
    return data if isinstance(data, dict) else {}


def _kazoo_message(response: httpx.Response) -> str:
    """Kazoo's error envelope: {"error": "500", "message": "datastore_fault", "data": {"message": ...}}.
    Only these short fields are used: `data` may echo request values back in validation errors."""
    try:
        payload = response.json()
    except ValueError:
        return response.reason_phrase
    if not isinstance(payload, dict):
        return response.reason_phrase
    parts = [payload.get("message")]
    data = payload.get("data")
    if isinstance(data, dict):
        parts.append(data.get("message"))
    text = ": ".join(dict.fromkeys(p for p in parts if isinstance(p, str) and p))
    return (text or response.reason_phrase)[:_MESSAGE_LIMIT]


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    # Verification always on; `ca_file` (a private CA in front of Crossbar) adds to certifi's bundle.
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


__all__ = ["CrossbarClient", "KazooSyncError"]
