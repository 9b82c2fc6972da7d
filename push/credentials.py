"""Parse and validate push credentials: APNs certificates and token keys, FCM service accounts.

Pure: bytes or text in, a `ParsedCredential` out, `CredentialError` for anything that cannot send.
No ORM and no network, so every face (admin form, API, management command) can validate an upload
the moment it is saved and show its subject, topics and expiry (STYLE.md rule 8), and the sender
always receives one normalized form whatever the operator uploaded.

Error messages never quote the input: a credential pasted into the wrong field is still a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from core.errors import CredentialError
from core.text import text_storable_problem
from push.pem import (
    _PEM_BLOCK,
    MAX_CREDENTIAL_BYTES,
    _as_bytes,
    _certificate_public_der,
    _der_children,
    _der_read,
    _is_der_certificate,
    _json_object,
    _load_pem_certificate,
    _load_pem_private_key,
    _looks_like_pem,
    _looks_like_pkcs12,
    _name_value,
    _pem_blocks,
    _pkcs8_pem,
    _public_der,
)

__all__ = [
    "MAX_CREDENTIAL_BYTES",
    "CredentialFacts",
    "CredentialKind",
    "ParsedCredential",
    "parse_apns_certificate",
    "parse_apns_token_key",
    "parse_credential",
    "parse_fcm_legacy_key",
    "parse_fcm_service_account",
    "pem_cert_and_key",
]


# A certificate this close to its end still sends, but the operator should renew it now: Apple
# takes a few minutes to issue a new one, the app owner may take weeks.
EXPIRY_WARNING_DAYS = 30

# Apple's private extension listing the topics a universal certificate may push to:
# SEQUENCE { UTF8String topic, SEQUENCE { UTF8String kind }, UTF8String topic, ... }.
_OID_APPLE_TOPICS = "1.2.840.113635.100.6.3.6"
# Markers Apple puts on certificates valid for the development (sandbox) / production gateway.
_OID_APPLE_DEVELOPMENT = "1.2.840.113635.100.6.3.1"
_OID_APPLE_PRODUCTION = "1.2.840.113635.100.6.3.2"

# The common name starts with the certificate type chosen in the Apple developer portal.
# Order matters: the specific "Development"/"Production" names before the generic ones.
_CN_ENVIRONMENTS: tuple[tuple[str, str], ...] = (
    ("Apple Development", "sandbox"),
    ("Apple Sandbox", "sandbox"),
    ("Apple Production", "production"),
    ("Apple Push Services", "both"),
    ("VoIP Services", "both"),
)

_APPLE_ID = re.compile(r"[A-Z0-9]{10}")
_PROJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]*")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_LEGACY_KEY_SHUT_DOWN = (
    "the FCM legacy HTTP API was shut down by Google in 2024; upload a service-account JSON (HTTP v1)"
)


class CredentialKind(StrEnum):
    # StrEnum (a str subclass): the value goes straight into model choices, JSON and the API.
    APNS_CERTIFICATE = "apns_certificate"
    APNS_TOKEN = "apns_token"
    FCM_SERVICE_ACCOUNT = "fcm_service_account"
    FCM_LEGACY_KEY = "fcm_legacy_key"


@dataclass(frozen=True)
class CredentialFacts:
    """What can be shown about a credential without revealing it."""

    kind: CredentialKind
    subject: str = ""
    topics: tuple[str, ...] = ()
    not_before: datetime | None = None
    not_after: datetime | None = None
    fingerprint_sha256: str = ""
    key_id: str = ""
    team_id: str = ""
    project_id: str = ""
    client_email: str = ""
    environment: str = ""
    usable: bool = True
    unusable_reason: str = ""
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for a JSONField, an API response or an event)."""
        return {
            "kind": self.kind.value,
            "subject": self.subject,
            "topics": list(self.topics),
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "fingerprint_sha256": self.fingerprint_sha256,
            "key_id": self.key_id,
            "team_id": self.team_id,
            "project_id": self.project_id,
            "client_email": self.client_email,
            "environment": self.environment,
            "usable": self.usable,
            "unusable_reason": self.unusable_reason,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class ParsedCredential:
    """Facts plus the normalized secret to store encrypted; the secret stays out of repr()."""

    facts: CredentialFacts
    # repr=False: a ParsedCredential ends up in debug logs and test failure output sooner or later.
    secret: str = field(repr=False)


# --------------------------------------------------------------------------------------------------
# APNs certificate (Kazoo's PEM "cert + key" or a Keychain .p12)
# --------------------------------------------------------------------------------------------------


def parse_apns_certificate(data: bytes | str, *, password: str | None = None) -> ParsedCredential:
    """Validate an APNs client certificate and its key; the secret is PEM cert + PEM PKCS#8 key.

    A .p12 is converted to PEM here so the sender never needs (and we never store) its password.
    """
    raw = _as_bytes(data, what="the APNs certificate")
    if _looks_like_pem(raw):
        cert, key = _cert_and_key_from_pem(raw)
    else:
        cert, key = _cert_and_key_from_pkcs12(_maybe_base64_pkcs12(data, raw), password)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CredentialError("unsupported private key type: APNs certificates use RSA (or EC) keys")
    if _certificate_public_der(cert) != _public_der(key.public_key()):
        raise CredentialError("the private key does not belong to the certificate")
    try:
        facts = _certificate_facts(cert)
    except ValueError:
        # cryptography decodes names and extensions lazily; a malformed one only shows up here.
        raise CredentialError("the certificate could not be read (malformed subject or extensions)") from None

    secret = cert.public_bytes(serialization.Encoding.PEM).decode("ascii") + _pkcs8_pem(key)
    return ParsedCredential(facts=facts, secret=secret)


def pem_cert_and_key(secret: str) -> tuple[str, str]:
    """Split a stored APNs certificate secret into (certificate PEM, private key PEM)."""
    cert_pem = key_pem = ""
    for match in _PEM_BLOCK.finditer(secret):
        label = match.group(1)
        if label == "CERTIFICATE" and not cert_pem:
            cert_pem = match.group(0) + "\n"
        elif label.endswith("PRIVATE KEY") and not key_pem:
            key_pem = match.group(0) + "\n"
    if not cert_pem or not key_pem:
        raise CredentialError("the stored APNs certificate is incomplete (certificate or key missing)")
    return cert_pem, key_pem


def _cert_and_key_from_pem(raw: bytes) -> tuple[x509.Certificate, Any]:
    blocks = _pem_blocks(raw)
    certs = [_load_pem_certificate(text) for label, text in blocks if label == "CERTIFICATE"]
    key_blocks = [(label, text) for label, text in blocks if label.endswith("PRIVATE KEY")]
    if not certs and not key_blocks:
        # Labels are not secret and name the usual mistake (a CSR or a public key uploaded instead).
        found = ", ".join(sorted({label for label, _ in blocks})) or "nothing"
        raise CredentialError(f"no PEM certificate or private key found (found: {found})")
    if not key_blocks:
        raise CredentialError(
            "the PEM holds a certificate but no private key; upload the certificate and its key "
            "together (as Kazoo stores them) or a .p12 file"
        )
    if not certs:
        raise CredentialError("the PEM holds a private key but no certificate; add the certificate")
    key = _load_pem_private_key(*key_blocks[0])
    # Kazoo documents "first certificate, then key", but exports from `openssl pkcs12 -nodes` can put
    # the Apple intermediate first; picking the certificate that matches the key accepts both and
    # still reports a mismatch when none fits.
    wanted = _public_der(key.public_key())
    for cert in certs:
        if _certificate_public_der(cert) == wanted:
            return cert, key
    return certs[0], key


def _cert_and_key_from_pkcs12(raw: bytes, password: str | None) -> tuple[x509.Certificate, Any]:
    if raw.startswith(b"%PDF-"):
        raise CredentialError("this is a PDF document, not a certificate; upload the .p12 or PEM file")
    if not _looks_like_pkcs12(raw):
        if _is_der_certificate(raw):
            raise CredentialError(
                "this is a certificate alone (DER .cer) without its private key; export the "
                "certificate with its key from Keychain as .p12, or upload a PEM with both"
            )
        raise CredentialError(
            "not a PEM certificate and key nor a PKCS#12 (.p12) file; it may be truncated or damaged"
        )
    # OpenSSL tells "no password" and "empty password" apart, and Keychain exports with an empty
    # one when the user leaves the field blank; try both before asking for a password.
    attempts: list[bytes | None] = [None, b""] if not password else [password.encode("utf-8")]
    for attempt in attempts:
        try:
            key, cert, _chain = pkcs12.load_key_and_certificates(raw, attempt)
            break
        except (ValueError, UnsupportedAlgorithm):
            continue
    else:
        # OpenSSL says "invalid password or PKCS12 data" for both; the shape check above already
        # ruled out "not a PKCS#12 at all", so the password is the likely culprit.
        if not password:
            raise CredentialError("the .p12 file is password protected (or damaged): give its password")
        raise CredentialError("wrong password for the .p12 file (or the file is damaged)")
    if cert is None:
        raise CredentialError("the .p12 file holds no certificate")
    if key is None:
        raise CredentialError("the .p12 file holds no private key; export the certificate with its key")
    return cert, key


def _maybe_base64_pkcs12(data: bytes | str, raw: bytes) -> bytes:
    """JSON APIs cannot carry raw bytes, so a .p12 may arrive base64-encoded in a text field."""
    if not isinstance(data, str):
        return raw
    try:
        decoded = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return raw
    return decoded if _looks_like_pkcs12(decoded) else raw


def _certificate_facts(cert: x509.Certificate) -> CredentialFacts:
    warnings: list[str] = []
    common_name = _name_value(cert.subject, NameOID.COMMON_NAME)
    uid = _name_value(cert.subject, NameOID.USER_ID)
    team = _name_value(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)

    try:
        extensions = list(cert.extensions)
    except ValueError:
        extensions = []
        warnings.append("the certificate's extensions could not be read")
    topics, topics_warning = _certificate_topics(extensions, uid)
    if topics_warning:
        warnings.append(topics_warning)
    if not topics:
        warnings.append("no topic (bundle id) found in the certificate; is this an Apple push certificate?")

    environment = _certificate_environment(extensions, common_name)
    if not environment:
        warnings.append("cannot tell sandbox from production from this certificate")

    now = datetime.now(UTC)
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    usable, unusable_reason = True, ""
    if not_after < now:
        usable, unusable_reason = False, f"certificate expired on {not_after:%Y-%m-%d}"
    elif not_after - now < timedelta(days=EXPIRY_WARNING_DAYS):
        warnings.append(f"certificate expires on {not_after:%Y-%m-%d}; renew it soon")
    if not_before > now:
        warnings.append(f"certificate is not valid before {not_before:%Y-%m-%d %H:%M} UTC")

    return CredentialFacts(
        kind=CredentialKind.APNS_CERTIFICATE,
        subject=cert.subject.rfc4514_string(),
        topics=topics,
        not_before=not_before,
        not_after=not_after,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        team_id=team if _APPLE_ID.fullmatch(team) else "",
        environment=environment,
        usable=usable,
        unusable_reason=unusable_reason,
        warnings=tuple(warnings),
    )


def _certificate_topics(extensions: list[x509.Extension[Any]], uid: str) -> tuple[tuple[str, ...], str]:
    """Topics from Apple's extension, falling back to the subject UID; returns (topics, warning)."""
    topics: list[str] = []
    warning = ""
    extension = next((ext for ext in extensions if ext.oid.dotted_string == _OID_APPLE_TOPICS), None)
    if extension is not None:
        value = extension.value
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        try:
            topics = _topics_from_extension(raw)
        except ValueError:
            # Best effort: the UID still names the bundle, which is what most pushes target.
            warning = "the certificate's topic list could not be read; using the bundle id only"
    if uid and uid not in topics:
        topics.insert(0, uid)
    return tuple(dict.fromkeys(topics)), warning


def _topics_from_extension(raw: bytes) -> list[str]:
    # Top-level strings are topics; the nested SEQUENCEs only label them ("app", "voip"...).
    tag, content, end = _der_read(raw, 0)
    if tag != 0x30 or end != len(raw):
        raise ValueError("topics extension is not one SEQUENCE")
    topics = []
    for item_tag, item in _der_children(content):
        if item_tag in (0x0C, 0x13, 0x16):  # UTF8String, PrintableString, IA5String
            topic = item.decode("utf-8", errors="strict").strip()
            if topic and topic.isprintable() and not any(ch.isspace() for ch in topic):
                topics.append(topic)
    return topics


def _certificate_environment(extensions: list[x509.Extension[Any]], common_name: str) -> str:
    for prefix, environment in _CN_ENVIRONMENTS:
        if common_name.startswith(prefix):
            return environment
    oids = {ext.oid.dotted_string for ext in extensions}
    development, production = _OID_APPLE_DEVELOPMENT in oids, _OID_APPLE_PRODUCTION in oids
    if development and production:
        return "both"
    if development:
        return "sandbox"
    if production:
        return "production"
    return ""


# --------------------------------------------------------------------------------------------------
# APNs token key (.p8)
# --------------------------------------------------------------------------------------------------


def parse_apns_token_key(data: bytes | str, *, key_id: str, team_id: str) -> ParsedCredential:
    """Validate an APNs auth key (.p8, EC P-256) with its key id and team id."""
    key_id, team_id = (key_id or "").strip(), (team_id or "").strip()
    if not _APPLE_ID.fullmatch(key_id):
        raise CredentialError("the key id must be 10 uppercase letters or digits (Apple Developer > Keys)")
    if not _APPLE_ID.fullmatch(team_id):
        raise CredentialError(
            "the team id must be 10 uppercase letters or digits (Apple Developer > Membership)"
        )

    raw = _as_bytes(data, what="the APNs auth key")
    blocks = _pem_blocks(raw) if _looks_like_pem(raw) else []
    key_blocks = [(label, text) for label, text in blocks if label.endswith("PRIVATE KEY")]
    if not key_blocks:
        if any(label == "CERTIFICATE" for label, _ in blocks):
            raise CredentialError("this is a certificate; an APNs auth key (.p8) is a PEM PRIVATE KEY")
        raise CredentialError("expected a PEM private key (the .p8 file from Apple Developer > Keys)")
    key = _load_pem_private_key(*key_blocks[0])
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CredentialError("an APNs auth key must be an EC P-256 key (the .p8 file from Apple)")

    # Sign and verify a throwaway provider token: proves the key works with the JWT library the
    # sender uses, not merely that it parses.
    try:
        token = jwt.encode(
            {"iss": team_id, "iat": int(time.time())}, key, algorithm="ES256", headers={"kid": key_id}
        )
        jwt.decode(token, key.public_key(), algorithms=["ES256"])
    except (jwt.PyJWTError, ValueError, TypeError):
        raise CredentialError("the key cannot sign ES256 provider tokens") from None

    public_der = _public_der(key.public_key())
    facts = CredentialFacts(
        kind=CredentialKind.APNS_TOKEN,
        fingerprint_sha256=hashlib.sha256(public_der).hexdigest(),
        key_id=key_id,
        team_id=team_id,
        # Token authentication is accepted by both the sandbox and the production gateway.
        environment="both",
    )
    return ParsedCredential(facts=facts, secret=_pkcs8_pem(key))


# --------------------------------------------------------------------------------------------------
# FCM
# --------------------------------------------------------------------------------------------------


def parse_fcm_service_account(data: bytes | str | Mapping[str, Any]) -> ParsedCredential:
    """Validate a Google service-account key (FCM HTTP v1); the secret is its JSON text."""
    info = dict(data) if isinstance(data, Mapping) else _json_object(data)
    # Its strings become the stored facts (client_email, key_id), a fingerprint's input and the
    # signed token's claims: a lone surrogate (`\ud800` in the JSON) cannot be encoded for any of
    # them (a UnicodeEncodeError, a 500), a NUL cannot be stored.
    problem = text_storable_problem(info)
    if problem:
        raise CredentialError(f"the service account JSON {problem}")
    if "project_info" in info:
        raise CredentialError(
            "this is google-services.json (the app configuration), not a service-account key; "
            "download one from Firebase console > Project settings > Service accounts"
        )
    kind = info.get("type")
    if kind is None:
        raise CredentialError("the service account JSON is missing 'type'")
    if kind != "service_account":
        raise CredentialError(f"expected \"type\": \"service_account\", got {_word_shown(kind)}")
    for name in ("project_id", "private_key", "client_email", "token_uri"):
        value = info.get(name)
        if value is None:
            raise CredentialError(f"the service account JSON is missing '{name}'")
        if not isinstance(value, str) or not value.strip():
            raise CredentialError(f"the service account's '{name}' must be a non-empty string")

    project_id = info["project_id"].strip()
    client_email = info["client_email"].strip()
    if not _PROJECT_ID.fullmatch(project_id):
        raise CredentialError("the service account's 'project_id' is not a valid Google project id")
    if "@" not in client_email:
        raise CredentialError("the service account's 'client_email' is not an e-mail address")

    private_key = info["private_key"]
    if "\n" not in private_key and "\\n" in private_key:
        # The JSON was pasted through a shell or an env var and its newlines stayed escaped.
        private_key = private_key.replace("\\n", "\n")
    blocks = [(label, text) for label, text in _pem_blocks(private_key.encode("utf-8"))
              if label.endswith("PRIVATE KEY")]
    if not blocks:
        raise CredentialError("the service account's 'private_key' is not a PEM private key")
    key = _load_pem_private_key(*blocks[0])
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError("the service account's 'private_key' must be an RSA key")
    info["private_key"] = private_key

    warnings = _token_uri_warnings(info["token_uri"].strip())
    private_key_id = info.get("private_key_id")
    private_key_id = private_key_id.strip() if isinstance(private_key_id, str) else ""
    if not private_key_id:
        warnings.append("no 'private_key_id': Google cannot tell which key signed; re-download the JSON")

    facts = CredentialFacts(
        kind=CredentialKind.FCM_SERVICE_ACCOUNT,
        # Identifies the key without hashing key material: rotating the key changes private_key_id.
        fingerprint_sha256=hashlib.sha256(f"{client_email}\n{private_key_id}".encode()).hexdigest(),
        key_id=private_key_id,
        project_id=project_id,
        client_email=client_email,
        warnings=tuple(warnings),
    )
    return ParsedCredential(facts=facts, secret=json.dumps(info))


def _token_uri_warnings(token_uri: str) -> list[str]:
    parts = urlsplit(token_uri)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not host or scheme not in ("https", "http"):
        raise CredentialError("the service account's 'token_uri' is not an http(s) URL")
    if scheme == "http" and host not in _LOOPBACK_HOSTS:
        # Plain http would send the signed assertion and get the access token back in clear text;
        # loopback stays allowed for the local fake OAuth2 server used by the tests.
        raise CredentialError(
            "the service account's 'token_uri' must use https (http only for 127.0.0.1, localhost or ::1)"
        )
    if host not in _LOOPBACK_HOSTS and not host.endswith(".googleapis.com"):
        return [f"'token_uri' points at {host}, not Google; tokens will be requested there"]
    return []


def parse_fcm_legacy_key(data: bytes | str) -> ParsedCredential:
    """Accept a legacy FCM server key for the record; it can no longer send."""
    raw = _as_bytes(data, what="the FCM server key")
    try:
        key = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialError("the FCM server key is not text") from None
    # A server key is one printable token; anything else is a wrong file pasted into the field.
    if not key.isascii() or not key.isprintable() or any(ch.isspace() for ch in key):
        raise CredentialError("the FCM server key must be a single line without spaces")
    facts = CredentialFacts(
        kind=CredentialKind.FCM_LEGACY_KEY,
        fingerprint_sha256=hashlib.sha256(key.encode("utf-8")).hexdigest(),
        usable=False,
        unusable_reason=_LEGACY_KEY_SHUT_DOWN,
        warnings=(_LEGACY_KEY_SHUT_DOWN,),
    )
    return ParsedCredential(facts=facts, secret=key)


# --------------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------------


def parse_credential(
    kind: CredentialKind | str,
    data: bytes | str,
    *,
    password: str | None = None,
    key_id: str = "",
    team_id: str = "",
) -> ParsedCredential:
    """Parse `data` as a credential of `kind`; the one entry point for forms, API and commands."""
    try:
        kind = CredentialKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in CredentialKind)
        raise CredentialError(f"unknown credential kind {_word_shown(kind)} (expected one of {choices})") from None
    if kind is CredentialKind.APNS_CERTIFICATE:
        return parse_apns_certificate(data, password=password)
    if kind is CredentialKind.APNS_TOKEN:
        return parse_apns_token_key(data, key_id=key_id, team_id=team_id)
    if kind is CredentialKind.FCM_SERVICE_ACCOUNT:
        return parse_fcm_service_account(data)
    return parse_fcm_legacy_key(data)


SECRET_GIVEN_TWICE = "give the secret as a file or as text, not both"


def credential_secret_given(*, uploaded: bytes | None, text: str | None) -> bytes | str | None:
    """The secret from the one source given (a file uploaded, or text typed, pasted or sent as a
    string), None when neither is. Both together are refused (CredentialError): which of them
    counted was no face's to guess. Every face asks this: the admin's upload/paste, the API's
    file/data."""
    if uploaded and text:
        raise CredentialError(SECRET_GIVEN_TWICE)
    return uploaded or text or None


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _word_shown(value: object) -> str:
    """A value the input named (a `type`, a kind), as a message may show it: quoted when it is one
    short word such as "authorized_user", else only its shape, since it may be a secret pasted
    into the wrong field."""
    if isinstance(value, str):
        return repr(value) if _WORD.fullmatch(value) else f"a text of {len(value)} characters"
    return "null" if value is None else f"a {type(value).__name__}"
