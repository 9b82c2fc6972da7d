"""Push token reports: what an app says over HTTP about its push tokens (Acrobits' "Push Token
Reporter", used by Groundwire and its white-label apps; other clients that report a token instead of
putting it in their Contact), read through a reporter's parameter mapping into the push object and
tokens a reg_success would have given. Pure: no ORM, no network.

A reporter maps keys to the request parameters that hold them, as a User-Agent rule maps push
object keys to Contact parameters (`{"Token-ID": "pushToken", ...}`), and may fix a value no
request carries (`{"Token-Type": "apple"}`). The tokens pass the same test as a Contact's
(pushobject.push_token_problem: no whitespace or control characters, APNs hex, FCM URL-safe).

The signature helpers here are the HMAC alternative to a secret in the URL, for clients that can
compute one (Acrobits' templates cannot).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from core.errors import InvalidInput, UnknownDevice
from registry.pushobject import (
    APNS_TOKEN_TYPES,
    KIND_REMOTE,
    KIND_VOIP,
    TOKEN_MAX_CHARS,
    TokenInfo,
    push_token_problem,
    token_type_decode,
)

KEY_USERNAME = "Username"
KEY_REALM = "Realm"
KEY_TOKEN = "Token-ID"
KEY_APP = "Token-App"
KEY_TYPE = "Token-Type"
KEY_VOIP_TOKEN = "VoIP-Token-ID"
KEY_VOIP_APP = "VoIP-Token-App"
KEY_SELECTOR = "Selector"

# What a reporter may map to a request parameter, and what it may fix instead.
PARAMETER_KEYS = (KEY_USERNAME, KEY_REALM, KEY_TOKEN, KEY_APP, KEY_TYPE, KEY_VOIP_TOKEN, KEY_VOIP_APP, KEY_SELECTOR)
FIXED_KEYS = (KEY_REALM, KEY_APP, KEY_TYPE, KEY_VOIP_APP)

# Acrobits' own variable names, as a URL template usually repeats them:
# ...?username=%account[username]%&realm=%account[host]%&pushToken=%pushToken%&...
DEFAULT_PARAMETERS = {
    KEY_USERNAME: "username",
    KEY_REALM: "realm",
    KEY_SELECTOR: "selector",
    KEY_TOKEN: "pushToken",
    KEY_APP: "pushappid",
    KEY_VOIP_TOKEN: "pushTokenIncomingCall",
    KEY_VOIP_APP: "pushappid_incoming_call",
}

ENCODING_AS_SENT = "as_sent"
ENCODING_BASE64 = "base64"

# A parameter name as a URL template or a form can carry it.
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,100}")
# What each value may hold (lengths are the store's). A SIP user part's unreserved characters, less
# the URI delimiters (';', '?', '/', '@', ':') and quotes: whitespace, controls, '@', path pieces
# or look-alike Unicode would not name one device. Realms are host names or IP literals.
_USERNAME = re.compile(r"[A-Za-z0-9\-_.!~*()&=+$,]{1,255}")
_REALM = re.compile(r"[A-Za-z0-9.\-_]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_APP = re.compile(r"[A-Za-z0-9._\-]{1,255}")
_TYPE = re.compile(r"[A-Za-z0-9._\-]{1,32}")
_SELECTOR = re.compile(r"[A-Za-z0-9:._\-]{1,200}")
# Base64 of the longest token, with room for line breaks some encoders add.
_ENCODED_TOKEN_MAX = TOKEN_MAX_CHARS * 4 // 3 + 8

# The secret: a URL path segment as it is (no escaping), long enough that guessing is hopeless.
SECRET_MIN_CHARS = 24
SECRET_MAX_CHARS = 128
_SECRET = re.compile(r"[A-Za-z0-9_\-]+")

# A signed request is accepted this long around its timestamp (clock skew and transit).
SIGNATURE_MAX_SKEW_S = 300


@dataclass(frozen=True)
class ReporterConfig:
    """A reporter's mapping, as report_map reads it."""

    slug: str
    parameters: Mapping[str, str]
    fixed: Mapping[str, str]
    token_encoding: str = ENCODING_AS_SENT


@dataclass(frozen=True)
class Report:
    """A report read: whose tokens (username@realm) and the push object without Token-Proxy (the
    proxy is the device's: where its registration is)."""

    username: str
    realm: str
    selector: str
    push: dict[str, str]
    tokens: tuple[TokenInfo, ...]


def reporter_config_problems(*, parameters: object, fixed: object, token_encoding: str) -> list[str]:
    """What makes a mapping unusable, one line each; [] when it can be saved."""
    problems: list[str] = []
    if not isinstance(parameters, Mapping) or not all(isinstance(v, str) for v in parameters.values()):
        return ['parameters must be a JSON object of key -> request parameter name, e.g. {"Token-ID": "pushToken"}']
    if not isinstance(fixed, Mapping) or not all(isinstance(v, str) for v in fixed.values()):
        return ['fixed must be a JSON object of key -> value, e.g. {"Token-Type": "apple"}']
    for key in sorted(set(parameters) - set(PARAMETER_KEYS)):
        problems.append(f"parameters: unknown key {key!r} (keys: {', '.join(PARAMETER_KEYS)})")
    for key in sorted(set(fixed) - set(FIXED_KEYS)):
        problems.append(f"fixed: unknown key {key!r} (keys: {', '.join(FIXED_KEYS)})")
    for key, name in parameters.items():
        if not _PARAMETER_NAME.fullmatch(name):
            problems.append(f"parameters: {key} names {name[:40]!r}: a parameter name is 1 to 100 letters, digits "
                            "or _ . - [ ]")
    for key, value in fixed.items():
        pattern = {KEY_REALM: _REALM, KEY_TYPE: _TYPE}.get(key, _APP)
        if not pattern.fullmatch(value):
            problems.append(f"fixed: {key} {value[:60]!r} is not a valid {key}")
    if KEY_USERNAME not in parameters:
        problems.append("parameters: Username is required (the SIP username the device registers with)")
    if KEY_TOKEN not in parameters and KEY_VOIP_TOKEN not in parameters:
        problems.append("parameters: map Token-ID or VoIP-Token-ID (or both)")
    def given(key: str) -> bool:
        return key in parameters or key in fixed

    for key in (KEY_REALM, KEY_TYPE):
        if not given(key):
            problems.append(f"{key}: map it to a parameter or give a fixed value")
    if not given(KEY_APP) and not given(KEY_VOIP_APP):
        problems.append("Token-App: map it to a parameter or give a fixed value")
    if token_encoding not in (ENCODING_AS_SENT, ENCODING_BASE64):
        problems.append(f"token encoding {token_encoding!r} is not {ENCODING_AS_SENT} or {ENCODING_BASE64}")
    return problems


def secret_problem(secret: object) -> str | None:
    """Why `secret` cannot be a reporter's secret, or None. It travels as a URL path segment."""
    if not isinstance(secret, str):
        return "the secret must be text"
    if not SECRET_MIN_CHARS <= len(secret) <= SECRET_MAX_CHARS:
        return f"the secret must be {SECRET_MIN_CHARS} to {SECRET_MAX_CHARS} characters (it has {len(secret)})"
    if not _SECRET.fullmatch(secret):
        return "the secret may hold only letters, digits, '-' and '_' (it goes in a URL as it is)"
    return None


def _given(config: ReporterConfig, params: Mapping[str, str], key: str) -> str:
    """A report's value for `key`: its parameter's, stripped, else the reporter's fixed one."""
    name = config.parameters.get(key)
    given = params.get(name, "") if name else ""
    return (given.strip() if isinstance(given, str) else "") or config.fixed.get(key, "")


def report_account(*, config: ReporterConfig, params: Mapping[str, str]) -> tuple[str, str]:
    """(username, realm) a report names, read as `report_map` reads them but not checked: what a
    limit per account counts, so that spellings of one account (" 1001", "1001 ") count as one."""
    return _given(config, params, KEY_USERNAME), _given(config, params, KEY_REALM).lower()


def report_map(*, config: ReporterConfig, params: Mapping[str, str]) -> Report:
    """The report a request's parameters make under `config`. Raises InvalidInput naming the
    parameter (never quoting a token) for a missing or malformed value."""

    def value(key: str, pattern: re.Pattern[str] | None = None, *, required: bool = False) -> str:
        name = config.parameters.get(key)
        text = _given(config, params, key)
        if not text:
            if required:
                where = f"parameter {name!r}" if name else "a fixed value"
                raise InvalidInput(f"{key} is missing ({where})", code="report_invalid")
            return ""
        if pattern is not None and not pattern.fullmatch(text):
            raise InvalidInput(f"{key} (parameter {name!r}) is malformed", code="report_invalid")
        return text

    username = value(KEY_USERNAME, _USERNAME, required=True)
    realm = value(KEY_REALM, _REALM, required=True).lower()
    fixed_realm = config.fixed.get(KEY_REALM, "").lower()
    if fixed_realm and realm != fixed_realm:
        # A reporter bound to a realm answers for that realm only, as if the account did not exist.
        raise UnknownDevice("no device answers to this account")
    selector = value(KEY_SELECTOR, _SELECTOR)
    token_type, sandbox = token_type_decode(value(KEY_TYPE, _TYPE, required=True))
    app = value(KEY_APP, _APP)
    voip_app = value(KEY_VOIP_APP, _APP) or app

    tokens: list[TokenInfo] = []
    voip = _token(config, params, KEY_VOIP_TOKEN, token_type)
    plain = _token(config, params, KEY_TOKEN, token_type)
    if voip:
        if not voip_app:
            raise InvalidInput("VoIP-Token-App is missing (no app id for the VoIP token)", code="report_invalid")
        tokens.append(TokenInfo(token=voip, type=token_type, app=voip_app, kind=KIND_VOIP, sandbox=sandbox))
    if plain and plain != voip:
        if not app:
            raise InvalidInput("Token-App is missing (no app id for the token)", code="report_invalid")
        # Beside a VoIP token, the other one is for visible notifications; alone, it is the token.
        kind = KIND_REMOTE if voip else ""
        tokens.append(TokenInfo(token=plain, type=token_type, app=app, kind=kind, sandbox=sandbox))
    if not tokens:
        raise InvalidInput("no push token in the report", code="report_invalid")
    # A VoIP push (PushKit) is what wakes an iOS app for a call: it goes in the push object.
    first = tokens[0]
    push = {"Token-ID": first.token, "Token-App": first.app, "Token-Type": token_type}
    return Report(username=username, realm=realm, selector=selector, push=push, tokens=tuple(tokens))


def _token(config: ReporterConfig, params: Mapping[str, str], key: str, token_type: str) -> str:
    """The token under `key`, decoded as configured and checked as a Contact's would be; "" when
    the request has none."""
    name = config.parameters.get(key)
    raw = params.get(name, "") if name else ""
    if not isinstance(raw, str) or not raw.strip():
        return ""
    if config.token_encoding != ENCODING_BASE64:
        raw = raw.strip()  # (base64's '+' may have arrived as a space: _decoded puts it back)
    if len(raw) > _ENCODED_TOKEN_MAX:
        raise InvalidInput(f"{key} (parameter {name!r}) is {len(raw)} characters, more than a token has",
                           code="report_invalid")
    token = _decoded(raw, token_type, key=key, name=name) if config.token_encoding == ENCODING_BASE64 else raw
    problem = push_token_problem(token, token_type)
    if problem is not None:
        raise InvalidInput(f"{key} (parameter {name!r}) refused: {problem}", code="report_invalid")
    return token


def _decoded(raw: str, token_type: str, *, key: str, name: str | None) -> str:
    """A base64 token (Acrobits documents its tokens as base64 text): APNs device tokens become the
    hex APNs takes, others the text they encode."""
    # A '+' a client did not percent-encode arrives as a space (form decoding); base64 has no spaces.
    text = "".join(raw.replace(" ", "+").split()).replace("-", "+").replace("_", "/")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{key} (parameter {name!r}) is not base64", code="report_invalid") from None
    if token_type.lower() in APNS_TOKEN_TYPES:
        return data.hex()
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput(f"{key} (parameter {name!r}) does not decode to a token", code="report_invalid") from None


def report_signature(*, secret: str, timestamp: str, method: str, path: str, query: str, body: bytes) -> str:
    """HMAC-SHA256 of `timestamp \\n METHOD \\n path \\n query \\n body` with the reporter's secret,
    hex: what `X-Pusher-Signature` carries (with `X-Pusher-Timestamp`, Unix seconds)."""
    head = f"{timestamp}\n{method.upper()}\n{path}\n{query}\n".encode()
    return hmac.new(secret.encode(), head + body, hashlib.sha256).hexdigest()


def report_signature_valid(
    *, secret: str, signature: str, timestamp: str, now: float, method: str, path: str, query: str, body: bytes
) -> bool:
    """Whether `signature` (hex, optionally "sha256=" first) signs this request, made within
    SIGNATURE_MAX_SKEW_S of `now`. Compared in constant time."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(now - stamp) > SIGNATURE_MAX_SKEW_S:
        return False
    expected = report_signature(secret=secret, timestamp=timestamp, method=method, path=path, query=query, body=body)
    given = signature.removeprefix("sha256=").strip().lower()
    return hmac.compare_digest(expected.encode(), given.encode("ascii", "replace"))


# Acrobits' template variables for each key, for the URL template shown to operators (Token-Type has
# none: it is fixed per app). %account[host]% is the account's SIP domain in Acrobits' account XML.
ACROBITS_VARIABLES = {
    KEY_USERNAME: "%account[username]%",
    KEY_REALM: "%account[host]%",
    KEY_SELECTOR: "%selector%",
    KEY_TOKEN: "%pushToken%",
    KEY_APP: "%pushappid%",
    KEY_VOIP_TOKEN: "%pushTokenIncomingCall%",
    KEY_VOIP_APP: "%pushappid_incoming_call%",
}


def acrobits_url_template(*, slug: str, parameters: Mapping[str, str], signed: bool, base: str = "") -> str:
    """The pushTokenReporterUrl an Acrobits app is provisioned with for this mapping ("<secret>"
    stands for the secret, which is never shown once saved; a signed reporter has none in its URL)."""
    path = f"{base.rstrip('/')}/report/{slug}/" + ("" if signed else "<secret>/")
    query = "&".join(f"{name}={ACROBITS_VARIABLES[key]}" for key, name in parameters.items()
                     if key in ACROBITS_VARIABLES)
    return f"{path}?{query}" if query else path
