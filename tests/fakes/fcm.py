"""Fake Google for FCM HTTP v1 tests: the OAuth2 token endpoint and `messages:send`, on 127.0.0.1.

It speaks the real protocol rather than echoing whatever the client sends:

* `POST /token`: JWT-bearer grant; the assertion's RS256 signature is checked against the public key of a
  service account registered with the fake (`kid` = private_key_id, `iss` = client_email), plus `aud`,
  `exp`/`iat` and the FCM scope. Answers `{"access_token", "expires_in", "token_type": "Bearer"}`.
  `aud` may be this fake's token URI or Google's canonical https://oauth2.googleapis.com/token: google-auth
  always puts the canonical one in the assertion, whatever `token_uri` the service-account file names, and
  the real endpoint accepts it.
* `POST /v1/projects/<p>/messages:send`: Bearer token issued here (else 401 UNAUTHENTICATED with a
  google.rpc.ErrorInfo), the token's service account must belong to <p> (else 403 PERMISSION_DENIED), the
  body is validated like HTTP v1 does (string-only `data`, Duration `ttl`, one recipient...), then the
  scripted answer is returned in Google's error JSON shape.

Plain HTTP by default (FcmSender allows http:// on loopback only). `FakeFcm(tls=True)` serves HTTPS with a
throwaway CA written to `ca_file`, to exercise the sender's `ca_file` and its refusal of unknown CAs.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.apns import FakeCA
from tests.fakes.http_server import FakeHandler, FakeServer, RecordedRequest, record, reply_json, serve, shutdown

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPES = frozenset(
    {"https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform"}
)
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

_SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")
_DURATION = re.compile(r"\d+(\.\d{1,9})?s")
_MESSAGE_FIELDS = frozenset(
    {
        "name",
        "token",
        "topic",
        "condition",
        "data",
        "notification",
        "android",
        "apns",
        "webpush",
        "fcm_options",
    }
)
_ANDROID_FIELDS = frozenset(
    {
        "collapse_key",
        "priority",
        "ttl",
        "restricted_package_name",
        "data",
        "notification",
        "fcm_options",
        "direct_boot_ok",
    }
)
_PRIORITIES = frozenset({"high", "normal", "HIGH", "NORMAL"})


class FcmAnswer(str, Enum):  # noqa: UP042 - set_answer() takes the enum or its plain string
    """What messages:send answers once auth and body validation have passed."""

    SUCCESS = "success"
    UNREGISTERED = "UNREGISTERED"  # 404, app uninstalled / token expired
    INVALID_TOKEN = "INVALID_TOKEN"  # 400 INVALID_ARGUMENT "not a valid FCM registration token"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # 400 INVALID_ARGUMENT about the message, not the token
    SENDER_ID_MISMATCH = "SENDER_ID_MISMATCH"  # 403, token belongs to another project
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"  # 429 with Retry-After
    UNAVAILABLE = "UNAVAILABLE"  # 503
    INTERNAL = "INTERNAL"  # 500
    THIRD_PARTY_AUTH_ERROR = "THIRD_PARTY_AUTH_ERROR"  # 401, APNs/web-push credentials of the app
    UNAUTHENTICATED = "UNAUTHENTICATED"  # 401 as for a bad access token, even with a good one
    PERMISSION_DENIED = "PERMISSION_DENIED"  # 403 without an FCM error code


# answer -> (HTTP status, google.rpc status, message, FCM errorCode or None)
_ERRORS: dict[FcmAnswer, tuple[int, str, str, str | None]] = {
    FcmAnswer.UNREGISTERED: (404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
    FcmAnswer.INVALID_TOKEN: (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
        "INVALID_ARGUMENT",
    ),
    FcmAnswer.INVALID_ARGUMENT: (
        400,
        "INVALID_ARGUMENT",
        "Request contains an invalid argument.",
        "INVALID_ARGUMENT",
    ),
    FcmAnswer.SENDER_ID_MISMATCH: (403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
    FcmAnswer.QUOTA_EXCEEDED: (
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Send requests'.",
        "QUOTA_EXCEEDED",
    ),
    FcmAnswer.UNAVAILABLE: (503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
    FcmAnswer.INTERNAL: (500, "INTERNAL", "Internal error encountered.", "INTERNAL"),
    FcmAnswer.THIRD_PARTY_AUTH_ERROR: (
        401,
        "UNAUTHENTICATED",
        "Auth error from APNS or Web Push Service",
        "THIRD_PARTY_AUTH_ERROR",
    ),
    FcmAnswer.UNAUTHENTICATED: (
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access "
        "token, login cookie or other valid authentication credential.",
        None,
    ),
    FcmAnswer.PERMISSION_DENIED: (
        403,
        "PERMISSION_DENIED",
        "Permission 'cloudmessaging.messages.create' denied on resource.",
        None,
    ),
}


@dataclass
class _Issued:
    client_email: str
    project_id: str
    expires_at: float
    revoked: bool = False


@dataclass
class _State:
    answers: dict[str | None, FcmAnswer] = field(default_factory=dict)  # key None = default
    one_shots: dict[str | None, list[FcmAnswer]] = field(default_factory=dict)
    delay_s: float = 0.0
    token_delay_s: float = 0.0
    token_down: str | None = None  # None, "503" or "close"
    token_lifetime_s: int = 3599  # what Google actually answers
    retry_after_s: int = 30
    requests: list[RecordedRequest] = field(default_factory=list)
    token_requests: list[RecordedRequest] = field(default_factory=list)
    issued: dict[str, _Issued] = field(default_factory=dict)


def make_service_account(project_id: str, token_uri: str) -> dict[str, Any]:
    """A service-account JSON (as parsed) with a fresh 2048-bit RSA key, shaped like Firebase's download."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    local = f"firebase-adminsdk-{secrets.token_hex(3)}"
    email = f"{local}@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**21)).rjust(21, "1"),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": (
            f"https://www.googleapis.com/robot/v1/metadata/x509/{email.replace('@', '%40')}"
        ),
        "universe_domain": "googleapis.com",
    }


class FakeFcm:
    """Threaded fake of Google's token endpoint + FCM HTTP v1 on an ephemeral 127.0.0.1 port."""

    def __init__(self, *, tls: bool = False) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._state = _State()
        self._accounts: dict[str, dict[str, Any]] = {}  # client_email -> {"kid", "public_key", "project_id"}
        self._server: FakeServer | None = None
        self._tmpdir: str | None = None
        self.ca_file: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FakeFcm:
        context = None
        if self._tls:
            self._tmpdir = tempfile.mkdtemp(prefix="fake-fcm-tls-")
            ca = FakeCA("pusher test CA", directory=self._tmpdir)
            cert, key = ca.issue_server_cert(("127.0.0.1", "localhost"), common_name="127.0.0.1")
            self.ca_file = ca.ca_file
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        self._server = serve(self, _Handler, name="fake-fcm", tls=context)
        return self

    def stop(self) -> None:
        if self._server is not None:
            shutdown(self._server)
            self._server = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def reset(self) -> None:
        """Forget answers, delays, outages, recorded requests and issued tokens (keeps service accounts)."""
        with self._lock:
            self._state = _State()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "FakeFcm not started"
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def connections_accepted(self) -> int:
        assert self._server is not None, "FakeFcm not started"
        return self._server.connections_accepted

    @property
    def token_uri(self) -> str:
        return f"{self.endpoint}/token"

    # -- service accounts ----------------------------------------------------------------------------

    def register_service_account(self, info: dict[str, Any]) -> None:
        """Trust `info`'s key, as Google trusts a key created in the console."""
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        with self._lock:
            self._accounts[info["client_email"]] = {
                "kid": info["private_key_id"],
                "public_key": key.public_key(),
                "project_id": info["project_id"],
            }

    def service_account(self, project_id: str) -> dict[str, Any]:
        """make_service_account() pointed at this fake, already registered."""
        info = make_service_account(project_id, self.token_uri)
        self.register_service_account(info)
        return info

    # -- scripting -----------------------------------------------------------------------------------

    def set_answer(
        self, answer: FcmAnswer | str, *, token: str | None = None, times: int | None = None
    ) -> None:
        """Answer for a registration token (or the default when `token` is None). `times=n` answers it for
        the next n matching sends only, then falls back to the persistent answer."""
        answer = FcmAnswer(answer)
        with self._lock:
            if times is None:
                self._state.answers[token] = answer
            else:
                self._state.one_shots.setdefault(token, []).extend([answer] * times)

    def set_delay(self, seconds: float, *, token_endpoint: bool = False) -> None:
        with self._lock:
            if token_endpoint:
                self._state.token_delay_s = seconds
            else:
                self._state.delay_s = seconds

    def set_retry_after(self, seconds: int) -> None:
        """Retry-After sent with QUOTA_EXCEEDED and UNAVAILABLE."""
        with self._lock:
            self._state.retry_after_s = seconds

    def set_token_lifetime(self, seconds: int) -> None:
        """`expires_in` of tokens issued from now on (the fake enforces it too)."""
        with self._lock:
            self._state.token_lifetime_s = seconds

    def token_endpoint_down(self, down: bool, *, mode: str = "503") -> None:
        """Take the token endpoint down: `mode` "503" answers 503, "close" drops the connection unanswered."""
        if mode not in ("503", "close"):
            raise ValueError("mode must be '503' or 'close'")
        with self._lock:
            self._state.token_down = mode if down else None

    def revoke_access_tokens(self) -> None:
        """Every token issued so far is now rejected with 401 (as after a key rotation on Google's side)."""
        with self._lock:
            for issued in self._state.issued.values():
                issued.revoked = True

    @property
    def requests(self) -> list[RecordedRequest]:
        """messages:send requests, in arrival order (rejected ones included)."""
        with self._lock:
            return list(self._state.requests)

    @property
    def token_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.token_requests)

    @property
    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._state.issued)

    # -- request handling (called from handler threads) ----------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        path = handler.path.split("?", 1)[0]
        if handler.command == "POST" and path == "/token":
            self._token(handler, raw)
            return
        match = _SEND_PATH.fullmatch(path)
        if handler.command == "POST" and match:
            self._send(handler, match.group(1), raw)
            return
        _reply(handler, 404, _google_error(404, "NOT_FOUND", f"Unknown path {path}", None))

    def _token(self, handler: _Handler, raw: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        with self._lock:
            self._state.token_requests.append(record(handler, form, raw))
            down, delay = self._state.token_down, self._state.token_delay_s
            lifetime = self._state.token_lifetime_s
        if delay:
            time.sleep(delay)
        if down == "close":
            handler.close_connection = True  # no status line at all: the client sees a dropped connection
            return
        if down == "503":
            _reply(handler, 503, {"error": "internal_failure", "error_description": "Backend Error"})
            return
        if form.get("grant_type") != JWT_BEARER_GRANT:
            _reply(
                handler,
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": f"Invalid grant_type: {form.get('grant_type')}",
                },
            )
            return
        claims, problem = self._verify_assertion(form.get("assertion", ""))
        if problem:
            _reply(handler, 400, {"error": problem[0], "error_description": problem[1]})
            return
        token = f"ya29.fake-{secrets.token_urlsafe(32)}"
        with self._lock:
            account = self._accounts[claims["iss"]]
            self._state.issued[token] = _Issued(claims["iss"], account["project_id"], time.time() + lifetime)
        _reply(handler, 200, {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"})

    def _verify_assertion(self, assertion: str) -> tuple[dict[str, Any], tuple[str, str] | None]:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return {}, ("invalid_request", "Invalid JWT: assertion is not a JWT")
        with self._lock:
            account = self._accounts.get(str(unverified.get("iss")))
        if account is None:
            return {}, ("invalid_grant", "Invalid grant: account not found")
        if header.get("alg") != "RS256" or header.get("kid") != account["kid"]:
            return {}, ("invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(
                assertion,
                account["public_key"],
                algorithms=["RS256"],
                audience=[self.token_uri, GOOGLE_TOKEN_AUDIENCE],
                issuer=unverified["iss"],
                leeway=30,
                options={"require": ["iss", "aud", "exp", "iat"]},
            )
        except jwt.InvalidSignatureError:
            return {}, ("invalid_grant", "Invalid JWT Signature.")
        except jwt.PyJWTError as exc:
            return {}, ("invalid_grant", f"Invalid JWT: {exc}")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return {}, ("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes)")
        if not FCM_SCOPES & set(str(claims.get("scope", "")).split()):
            return {}, ("invalid_scope", "The requested scope does not allow sending FCM messages.")
        return claims, None

    def _send(self, handler: _Handler, project: str, raw: bytes) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self._state.requests.append(record(handler, body, raw))
            delay = self._state.delay_s
        if delay:
            time.sleep(delay)

        authorization = handler.headers.get("Authorization") or ""
        token = authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else None
        with self._lock:
            issued = self._state.issued.get(token) if token else None
        if issued is None or issued.revoked or issued.expires_at <= time.time():
            reason = (
                "CREDENTIALS_MISSING"
                if token is None
                else "ACCESS_TOKEN_EXPIRED"
                if issued
                else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
            )
            _reply(handler, 401, _unauthenticated(reason))
            return
        if issued.project_id != project:
            _reply(
                handler,
                403,
                _google_error(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission 'cloudmessaging.messages.create' denied on resource "
                    f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist).",
                    None,
                ),
            )
            return
        if body is None:
            _reply(
                handler, 400, _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.", None)
            )
            return
        problem = _message_problem(body)
        if problem:
            field_path, description = problem
            _reply(
                handler, 400, _google_error(400, "INVALID_ARGUMENT", description, None, bad_field=field_path)
            )
            return

        answer = self._next_answer(body["message"].get("token"))
        if answer is FcmAnswer.SUCCESS:
            message_id = f"0:{int(time.time() * 1000)}%{secrets.token_hex(8)}"
            _reply(handler, 200, {"name": f"projects/{project}/messages/{message_id}"})
            return
        status, rpc_status, message, error_code = _ERRORS[answer]
        headers = {}
        if answer in (FcmAnswer.QUOTA_EXCEEDED, FcmAnswer.UNAVAILABLE):
            with self._lock:
                headers["Retry-After"] = str(self._state.retry_after_s)
        if answer is FcmAnswer.INVALID_ARGUMENT:
            payload = _google_error(status, rpc_status, message, error_code, bad_field="message.android.ttl")
        elif answer is FcmAnswer.UNAUTHENTICATED:
            payload = _unauthenticated("ACCESS_TOKEN_EXPIRED")
        else:
            payload = _google_error(status, rpc_status, message, error_code)
        _reply(handler, status, payload, headers)

    def _next_answer(self, token: str | None) -> FcmAnswer:
        with self._lock:
            for key in (token, None):
                queue = self._state.one_shots.get(key)
                if queue:
                    return queue.pop(0)
                if key in self._state.answers:
                    return self._state.answers[key]
        return FcmAnswer.SUCCESS


class _Handler(FakeHandler):
    do_POST = do_GET = FakeHandler.dispatch  # http.server dispatches on these names


def _reply(
    handler: FakeHandler, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    reply_json(handler, status, payload, headers, content_type="application/json; charset=UTF-8")


def _google_error(
    code: int, status: str, message: str, fcm_error_code: str | None, *, bad_field: str | None = None
) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if fcm_error_code:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": fcm_error_code})
    if bad_field:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": bad_field, "description": message}],
            }
        )
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def _unauthenticated(reason: str) -> dict[str, Any]:
    payload = _google_error(401, "UNAUTHENTICATED", _ERRORS[FcmAnswer.UNAUTHENTICATED][2], None)
    payload["error"]["details"] = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {
                "service": "fcm.googleapis.com",
                "method": "google.firebase.fcm.v1.FcmService.SendMessage",
            },
        }
    ]
    return payload


def _message_problem(body: Any) -> tuple[str, str] | None:
    """(field, description) of the first HTTP v1 validation error, in Google's wording, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return "message", "Invalid JSON payload received. 'message' must be an object."
    for key in body:
        if key not in ("message", "validate_only"):
            return key, f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    message = body["message"]
    for key in message:
        if key not in _MESSAGE_FIELDS:
            return f"message.{key}", f"Invalid JSON payload received. Unknown name \"{key}\" at 'message'."
    if sum(1 for key in ("token", "topic", "condition") if message.get(key)) != 1:
        return "message", "Recipient of the message is not set."
    data = message.get("data", {})
    if not isinstance(data, dict):
        return "message.data", "Invalid value at 'message.data' (type.googleapis.com/google.protobuf.Struct)"
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            return (
                f"message.data[{index}].value",
                f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {json.dumps(value)}",
            )
        if key.startswith(("google.", "gcm.")) or key in ("from", "message_type"):
            return f"message.data[{index}].key", f"Invalid data key {key!r}: reserved word"
    android = message.get("android", {})
    if not isinstance(android, dict):
        return "message.android", "Invalid value at 'message.android'"
    for key in android:
        if key not in _ANDROID_FIELDS:
            return (
                f"message.android.{key}",
                f"Invalid JSON payload received. Unknown name \"{key}\" at 'message.android'.",
            )
    if "priority" in android and android["priority"] not in _PRIORITIES:
        return (
            "message.android.priority",
            "Invalid value at 'message.android.priority' "
            "(type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), "
            f"{json.dumps(android['priority'])}",
        )
    if "ttl" in android and not (isinstance(android["ttl"], str) and _DURATION.fullmatch(android["ttl"])):
        return (
            "message.android.ttl",
            f"Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), "
            f"{json.dumps(android['ttl'])}",
        )
    notification = message.get("notification", {})
    if not isinstance(notification, dict) or not all(
        key in ("title", "body", "image") and isinstance(value, str) for key, value in notification.items()
    ):
        return "message.notification", "Invalid value at 'message.notification'"
    return None
