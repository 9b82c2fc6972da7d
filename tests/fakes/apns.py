"""A fake APNs server that speaks the real protocol: HTTP/2 (h2) over TLS with ALPN "h2".

It has its own test PKI (CA, server certificate for 127.0.0.1/localhost, client certificates shaped
like Apple's push certificates, ES256 .p8 signing keys), authenticates by client certificate or by
provider token (JWT) like APNs, validates the request the way APNs documents, records every request
and answers as scripted.

In tests:

    fake = FakeApns.start()
    cert = fake.ca.issue_client_cert("com.acme.phone")       # UID=com.acme.phone, "VoIP Services: ..."
    key = fake.new_token_key(team_id="TEAM123456")          # registered with the fake
    fake.set_token_answer(token, Answer.unregistered())      # or fake.enqueue(Answer.error(503, ...))
    ... push to fake.host:fake.port trusting fake.ca_file ...
    fake.requests[-1].headers["apns-topic"]
    fake.stop()

Standalone (benchmarks): `python -m tests.fakes.apns --port 8443 --delay-ms 30` prints one JSON line
with the port, the CA file and ready-to-use client credentials, then serves until interrupted.

Why asyncio protocols and timers rather than a task or a thread per request: benchmarks push
1000+ requests/s with a simulated 30 ms latency, and many streams must be in flight at once on one
connection without blocking the loop. The benchmark runs the fake in its own process on the machine
it measures, so the fake keeps its CPU per request low: HTTP/2 by hand (see below), one timer per
millisecond of due answers, one TLS write per batch, request bodies parsed only when read.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import ipaddress
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import string
import struct
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hpack.huffman_table import HUFFMAN_COMPLETE, HUFFMAN_EMIT_SYMBOL, HUFFMAN_FAIL, HUFFMAN_TABLE
from hpack.table import HeaderTable

# Apple's documented push types (apns-push-type).
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "complication",
        "controls",
        "fileprovider",
        "liveactivity",
        "location",
        "mdm",
        "pushtotalk",
        "voip",
        "widgets",
    }
)
# Payload limits: 5 KB for VoIP, 4 KB for everything else.
VOIP_PAYLOAD_LIMIT = 5120
PAYLOAD_LIMIT = 4096
PROVIDER_TOKEN_MAX_AGE_S = 3600
PROVIDER_TOKEN_MIN_RENEWAL_S = 20 * 60

# Apple push certificate extensions (see Apple's WWDR CPS): environment markers and topic list.
_OID_APNS_DEVELOPMENT = x509.ObjectIdentifier("1.2.840.113635.100.6.3.1")
_OID_APNS_PRODUCTION = x509.ObjectIdentifier("1.2.840.113635.100.6.3.2")
_OID_APNS_TOPICS = x509.ObjectIdentifier("1.2.840.113635.100.6.3.6")

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")


# ---- test PKI -----------------------------------------------------------------------------------


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _apns_topics_extension(topics: Iterable[tuple[str, str]]) -> bytes:
    # SEQUENCE { UTF8String topic, SEQUENCE { UTF8String kind }, ... } as in Apple's certificates.
    items = b"".join(
        _der(0x0C, topic.encode()) + _der(0x30, _der(0x0C, kind.encode())) for topic, kind in topics
    )
    return _der(0x30, items)


def _pem_private_key(key: Any, *, traditional: bool = False) -> str:
    fmt = serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


@dataclass(frozen=True)
class ClientCert:
    """A client certificate shaped like an Apple push certificate, with its unencrypted key."""

    cert_pem: str
    key_pem: str = field(repr=False)
    subject: str
    bundle_id: str

    @property
    def pem(self) -> str:
        """Certificate then key in one text, like Kazoo's `apple.certificate` setting."""
        return self.cert_pem + self.key_pem

    def to_p12(self, password: bytes | None = None, *, name: str | None = None) -> bytes:
        """The certificate and key as a PKCS#12 bundle, like the .p12 Keychain exports."""
        cert = x509.load_pem_x509_certificate(self.cert_pem.encode())
        key = serialization.load_pem_private_key(self.key_pem.encode(), password=None)
        encryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return pkcs12.serialize_key_and_certificates(
            (name or self.bundle_id).encode(),
            key,  # type: ignore[arg-type]
            cert,
            None,
            encryption,
        )


@dataclass(frozen=True)
class TokenKey:
    """An APNs auth key: the .p8 text (PKCS#8 EC P-256), its key id and team id."""

    key_id: str
    team_id: str
    key_pem: str = field(repr=False)
    public_key: ec.EllipticCurvePublicKey = field(repr=False)


def generate_token_key(*, team_id: str = "TEAM123456", key_id: str | None = None) -> TokenKey:
    """A new ES256 signing key like the .p8 file Apple lets you download once."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    if key_id is None:
        alphabet = string.ascii_uppercase + string.digits
        key_id = "".join(secrets.choice(alphabet) for _ in range(10))
    return TokenKey(
        key_id=key_id,
        team_id=team_id,
        key_pem=_pem_private_key(private_key),
        public_key=private_key.public_key(),
    )


class FakeCA:
    """A throw-away certificate authority for the fake server and the client certificates."""

    def __init__(self, name: str = "Pusher Fake APNs CA", *, directory: str | None = None) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="fake-apns-")
        self._owns_directory = directory is None
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        self.ca_file = os.path.join(self.directory, "ca.pem")
        with open(self.ca_file, "w") as handle:
            handle.write(self.cert_pem)

    def cleanup(self) -> None:
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _sign(
        self,
        builder: x509.CertificateBuilder,
        public_key: Any,
        *,
        not_before: dt.datetime | None,
        not_after: dt.datetime | None,
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        return (
            builder.issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(minutes=5))
            .not_valid_after(not_after or now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )

    def issue_server_cert(
        self,
        hosts: Iterable[str] = ("127.0.0.1", "::1", "localhost"),
        *,
        common_name: str = "api.push.apple.com (fake)",
    ) -> tuple[str, str]:
        """Write a server certificate and key for `hosts`; returns (cert_file, key_file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        cert = self._sign(builder, key.public_key(), not_before=None, not_after=None)
        cert_file = os.path.join(self.directory, "server.pem")
        key_file = os.path.join(self.directory, "server.key")
        with open(cert_file, "w") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM).decode())
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(_pem_private_key(key))
        return cert_file, key_file

    def issue_client_cert(
        self,
        bundle_id: str,
        *,
        voip: bool = True,
        team_id: str = "TEAM123456",
        organization: str = "Pusher Test Inc.",
        common_name: str | None = None,
        environments: Iterable[Literal["sandbox", "production"]] = ("sandbox", "production"),
        topics: Iterable[str] | None = None,
        key_type: Literal["rsa", "ec"] = "rsa",
        pkcs1: bool = False,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> ClientCert:
        """A certificate like Apple's: UID=<bundle id>, CN="VoIP Services: <bundle id>" (or
        "Apple Push Services: ..."), OU=<team id>, with the APNs environment and topics extensions.

        Apple issues RSA 2048 keys; `pkcs1=True` writes the key as "RSA PRIVATE KEY" (what
        `openssl pkcs12 -nodes` produced with OpenSSL 1.x), otherwise PKCS#8 "PRIVATE KEY".
        """
        if key_type == "rsa":
            key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        if common_name is None:
            common_name = f"{'VoIP Services' if voip else 'Apple Push Services'}: {bundle_id}"
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.USER_ID, bundle_id),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, team_id),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            ]
        )
        if topics is None:
            topic_list = [(bundle_id, "app"), (f"{bundle_id}.voip", "voip")]
            topic_list.append((f"{bundle_id}.complication", "complication"))
        else:
            topic_list = [(topic, topic.rsplit(".", 1)[-1]) for topic in topics]
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.UnrecognizedExtension(_OID_APNS_TOPICS, _apns_topics_extension(topic_list)),
                critical=False,
            )
        )
        env = set(environments)
        if "sandbox" in env:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(_OID_APNS_DEVELOPMENT, b"\x05\x00"), critical=False
            )
        if "production" in env:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(_OID_APNS_PRODUCTION, b"\x05\x00"), critical=False
            )
        cert = self._sign(builder, key.public_key(), not_before=not_before, not_after=not_after)
        return ClientCert(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            key_pem=_pem_private_key(key, traditional=pkcs1 and key_type == "rsa"),
            subject=cert.subject.rfc4514_string(),
            bundle_id=bundle_id,
        )


# ---- scripting and records ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the fake does with one request, after `delay` seconds.

    action "respond" sends `status` (with `reason` in the JSON body when not 200; a 410 also carries
    `timestamp`); "reset" drops the TCP connection (RST); "goaway" sends GOAWAY (last stream id =
    the highest stream received, debug data {"reason": reason} unless reason is None) and closes;
    "stall" never answers.
    """

    status: int = 200
    reason: str | None = None
    timestamp_ms: int | None = None
    delay: float = 0.0
    action: Literal["respond", "reset", "goaway", "stall"] = "respond"

    @classmethod
    def ok(cls, *, delay: float = 0.0) -> Answer:
        return cls(delay=delay)

    @classmethod
    def error(cls, status: int, reason: str, *, delay: float = 0.0) -> Answer:
        return cls(status=status, reason=reason, delay=delay)

    @classmethod
    def unregistered(cls, *, timestamp_ms: int | None = None, delay: float = 0.0) -> Answer:
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        return cls(status=410, reason="Unregistered", timestamp_ms=timestamp_ms, delay=delay)

    @classmethod
    def reset(cls, *, delay: float = 0.0) -> Answer:
        return cls(status=0, action="reset", delay=delay)

    @classmethod
    def goaway(cls, reason: str | None = "Shutdown", *, delay: float = 0.0) -> Answer:
        """GOAWAY carrying {"reason": reason}, or no debug data at all when reason is None."""
        return cls(status=0, reason=reason, action="goaway", delay=delay)

    @classmethod
    def stall(cls) -> Answer:
        return cls(status=0, action="stall")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    token: str | None
    # Regular headers, lower-case names (pseudo-headers are in method/path/authority).
    headers: dict[str, str]
    authority: str
    raw_body: bytes
    received_at: float
    auth: Literal["certificate", "token"] | None
    cert_subject: str | None
    jwt_header: dict[str, Any] | None
    jwt_claims: dict[str, Any] | None
    connection_id: int
    stream_id: int
    alpn: str | None
    # What the fake answered (status 0 for reset/goaway/stall).
    status: int
    reason: str | None
    action: str

    @functools.cached_property
    def body(self) -> Any:
        """The JSON body, None when empty or not JSON. Parsed on first read, not on the server's
        loop: a benchmark records every request but reads few bodies, and after the run."""
        try:
            return json.loads(self.raw_body) if self.raw_body else None
        except ValueError:
            return None


@dataclass(frozen=True)
class ConnectionInfo:
    id: int
    alpn: str | None
    tls_version: str | None
    cert_subject: str | None
    cert_uid: str | None
    opened_at: float
    closed_at: float | None = None


@dataclass
class _JwtVerdict:
    header: dict[str, Any] | None
    claims: dict[str, Any] | None
    error: str | None
    team_id: str | None = None
    key_id: str | None = None
    issued_at: int = 0


# ---- HTTP/2 and HPACK, server side --------------------------------------------------------------
#
# Why by hand rather than with the h2 library: h2 cost about 0.3 ms of CPU per request (frame
# objects, stream state machines, chains of header-validation generators, Huffman decoding nibble by
# nibble), most of the fake's budget when a benchmark runs it next to the code it measures. A server
# that only answers requests needs few frame types; for everything else it does what h2 did: a
# connection error is a GOAWAY with the RFC 9113 error code, then the socket is closed.

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame header: 24-bit length (as 8 + 16 bits), type, flags, reserved bit + stream id.
_FRAME_HEADER = struct.Struct(">BHBBL")
_SETTING = struct.Struct(">HL")
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE = range(9)
_CONTINUATION = 9
_FLAG_END_STREAM = _FLAG_ACK = 0x1
_FLAG_END_HEADERS = 0x4
_FLAG_PADDED = 0x8
_FLAG_PRIORITY = 0x20
_NO_ERROR = 0x0
_PROTOCOL_ERROR = 0x1
_FLOW_CONTROL_ERROR = 0x3
_STREAM_CLOSED = 0x5
_FRAME_SIZE_ERROR = 0x6
_COMPRESSION_ERROR = 0x9
_ENHANCE_YOUR_CALM = 0xB
# Our settings, as h2 announced them.
_MAX_FRAME_SIZE = 16384
_HEADER_TABLE_SIZE = 4096
_MAX_HEADER_LIST_SIZE = 8000
_DEFAULT_WINDOW = 65535
_MAX_WINDOW = 2**31 - 1

_REQUEST_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":protocol"})
_CONNECTION_HEADERS = frozenset({"connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade"})
# RFC 9113 §8.2.1: no controls, spaces, upper case or non-ASCII in a name, a colon only in front.
_FIELD_NAME_RE = re.compile(r"^:?[!-9;-@\[-~]+$")


class _H2Error(Exception):
    """A connection error: GOAWAY with `code` (None: close without one, as for a bad preface)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _FRAME_HEADER.pack(size >> 16, size & 0xFFFF, kind, flags, stream_id) + payload


def _settings_frame(max_concurrent_streams: int) -> bytes:
    values = (
        (0x1, _HEADER_TABLE_SIZE),
        (0x2, 0),  # ENABLE_PUSH
        (0x4, _DEFAULT_WINDOW),  # INITIAL_WINDOW_SIZE
        (0x5, _MAX_FRAME_SIZE),
        (0x8, 0),  # ENABLE_CONNECT_PROTOCOL
        (0x3, max_concurrent_streams),
        (0x6, _MAX_HEADER_LIST_SIZE),
    )
    return _frame(_SETTINGS, 0, 0, b"".join(_SETTING.pack(code, value) for code, value in values))


def _window_update_frame(stream_id: int, increment: int) -> bytes:
    return _frame(_WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def _goaway_frame(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return _frame(_GOAWAY, 0, 0, struct.pack(">LL", last_stream_id, code) + debug)


# (name, value, entry size, name size): sizes in octets as RFC 7541 §4.1 counts them.
_HpackEntry = tuple[str, str, int, int]
_HPACK_STATIC: list[_HpackEntry] = [
    (name.decode(), value.decode(), len(name) + len(value) + 32, len(name))
    for name, value in HeaderTable.STATIC_TABLE
]
# Name -> its first static index.
_HPACK_STATIC_NAMES: dict[str, int] = {
    entry[0]: index for index, entry in reversed(list(enumerate(_HPACK_STATIC, start=1)))
}


def _hpack_int_encode(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_field(name: str, value: str) -> bytes:
    """A literal field "without indexing", named by static index when it can be: answers never
    touch the client's dynamic table, so encoding them needs no connection state."""
    raw = value.encode()
    index = _HPACK_STATIC_NAMES.get(name)
    if index is None:
        prefix = b"\x00" + _hpack_int_encode(len(name), 7) + name.encode()
    else:
        prefix = _hpack_int_encode(index, 4)
    return prefix + _hpack_int_encode(len(raw), 7) + raw


@functools.cache
def _hpack_status(status: int) -> bytes:
    for index, (name, value, _size, _name_size) in enumerate(_HPACK_STATIC, start=1):
        if name == ":status" and value == str(status):
            return bytes([0x80 | index])
    return _hpack_field(":status", str(status))


# Huffman decoding (RFC 7541 Appendix B) with hpack's automaton (nghttp2's), two nibbles folded
# into one step per input byte and steps computed once, on first use: hpack's own decoder, nibble
# by nibble, took 40 µs per apns-id.
_HUFFMAN_STEPS: dict[int, tuple[int, bytes, bool]] = {}


def _huffman_step(key: int) -> tuple[int, bytes, bool]:
    state, emitted, flags = key >> 8, bytearray(), 0
    for nibble in ((key >> 4) & 0x0F, key & 0x0F):
        state, flags, symbol = HUFFMAN_TABLE[state * 16 + nibble]
        if flags & HUFFMAN_FAIL:
            state = -1
            break
        if flags & HUFFMAN_EMIT_SYMBOL:
            emitted.append(symbol)
    step = (state, bytes(emitted), bool(flags & HUFFMAN_COMPLETE))
    _HUFFMAN_STEPS[key] = step
    return step


def _huffman_decode(data: bytes) -> bytes:
    steps = _HUFFMAN_STEPS
    state, complete, out = 0, True, []
    for byte in data:
        key = state << 8 | byte
        state, emitted, complete = steps.get(key) or _huffman_step(key)
        if state < 0:
            raise _H2Error(_COMPRESSION_ERROR, "invalid Huffman string")
        out.append(emitted)
    if not complete:
        raise _H2Error(_COMPRESSION_ERROR, "incomplete Huffman string")
    return b"".join(out)


def _hpack_int(data: bytes, i: int, value: int) -> tuple[int, int]:
    """The continuation bytes of an integer whose prefix was full (RFC 7541 §5.1)."""
    shift = 0
    while True:
        byte = data[i]
        i += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift > 28:
            raise _H2Error(_COMPRESSION_ERROR, "HPACK integer too large")


class _HpackDecoder:
    """Request header blocks to (name, value) strings; one per connection (the dynamic table)."""

    def __init__(self) -> None:
        self.table: deque[_HpackEntry] = deque()  # newest first
        self.size = 0
        self.max_size = _HEADER_TABLE_SIZE

    def decode(self, data: bytes) -> list[tuple[str, str]]:
        try:
            return self._decode(data)
        except (IndexError, UnicodeDecodeError) as exc:
            raise _H2Error(_COMPRESSION_ERROR, f"undecodable header block ({exc})") from exc

    def _decode(self, data: bytes) -> list[tuple[str, str]]:
        fields: list[tuple[str, str]] = []
        list_size = 0
        i, end = 0, len(data)
        while i < end:
            byte = data[i]
            i += 1
            if byte & 0x80:  # indexed field
                index = byte & 0x7F
                if index == 0x7F:
                    index, i = _hpack_int(data, i, index)
                name, value, size, _name_size = self._entry(index)
            elif byte & 0x40:  # literal, added to the table
                index = byte & 0x3F
                if index == 0x3F:
                    index, i = _hpack_int(data, i, index)
                entry, i = self._literal(data, i, index)
                name, value, size, _name_size = entry
                self._insert(entry)
            elif byte & 0x20:  # dynamic table size update
                if fields:
                    raise _H2Error(_COMPRESSION_ERROR, "table size update after a field")
                size = byte & 0x1F
                if size == 0x1F:
                    size, i = _hpack_int(data, i, size)
                if size > _HEADER_TABLE_SIZE:
                    raise _H2Error(_COMPRESSION_ERROR, "table size above SETTINGS_HEADER_TABLE_SIZE")
                self.max_size = size
                self._evict()
                continue
            else:  # literal, not added to the table (never-indexed or not)
                index = byte & 0x0F
                if index == 0x0F:
                    index, i = _hpack_int(data, i, index)
                (name, value, size, _name_size), i = self._literal(data, i, index)
            fields.append((name, value))
            list_size += size
        if list_size > _MAX_HEADER_LIST_SIZE:
            raise _H2Error(_ENHANCE_YOUR_CALM, f"header list larger than {_MAX_HEADER_LIST_SIZE}")
        return fields

    def _entry(self, index: int) -> _HpackEntry:
        if index <= 0:
            raise _H2Error(_COMPRESSION_ERROR, "HPACK index 0")
        if index <= len(_HPACK_STATIC):
            return _HPACK_STATIC[index - 1]
        return self.table[index - len(_HPACK_STATIC) - 1]

    def _literal(self, data: bytes, i: int, index: int) -> tuple[_HpackEntry, int]:
        if index:
            name, _value, _size, name_size = self._entry(index)
        else:
            name, name_size, i = self._string(data, i)
            if not _FIELD_NAME_RE.match(name):
                raise _H2Error(_PROTOCOL_ERROR, f"invalid header name {name!r}")
        value, value_size, i = self._string(data, i)
        # RFC 9113 §8.2.1. Only literals are checked: indexed fields were checked on the way in.
        if value and (
            "\0" in value or "\r" in value or "\n" in value or value[0] in " \t" or value[-1] in " \t"
        ):
            raise _H2Error(_PROTOCOL_ERROR, f"invalid value for header {name!r}")
        return (name, value, name_size + value_size + 32, name_size), i

    @staticmethod
    def _string(data: bytes, i: int) -> tuple[str, int, int]:
        byte = data[i]
        length = byte & 0x7F
        i += 1
        if length == 0x7F:
            length, i = _hpack_int(data, i, length)
        end = i + length
        if end > len(data):
            raise _H2Error(_COMPRESSION_ERROR, "truncated header block")
        raw = data[i:end]
        if byte & 0x80:
            raw = _huffman_decode(raw)
        return raw.decode(), len(raw), end

    def _insert(self, entry: _HpackEntry) -> None:
        if entry[2] > self.max_size:
            self.table.clear()
            self.size = 0
            return
        self.table.appendleft(entry)
        self.size += entry[2]
        self._evict()

    def _evict(self) -> None:
        while self.size > self.max_size:
            self.size -= self.table.pop()[2]


def _request_headers(fields: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str], bool]:
    """(pseudo-headers, headers, a header came twice) of a request, checked as h2 did (RFC 9113
    §8.2-8.3); anything malformed is a connection error."""
    pseudo: dict[str, str] = {}
    headers: dict[str, str] = {}
    duplicate = False
    for name, value in fields:
        if name[0] == ":":
            if headers or name in pseudo or name not in _REQUEST_PSEUDO_HEADERS:
                raise _H2Error(_PROTOCOL_ERROR, f"misplaced, repeated or unknown pseudo-header {name}")
            pseudo[name] = value
        elif name in _CONNECTION_HEADERS or (name == "te" and value.lower() != "trailers"):
            raise _H2Error(_PROTOCOL_ERROR, f"connection-specific header {name}")
        elif name in headers:
            if name == "cookie":  # crumbs of one cookie header (RFC 9113 §8.2.3), as h2 joined them
                headers[name] += "; " + value
            elif name == "host":
                raise _H2Error(_PROTOCOL_ERROR, "two Host headers")
            else:
                duplicate = True
                headers[name] = value
        else:
            headers[name] = value
    method = pseudo.get(":method")
    if method is None:
        raise _H2Error(_PROTOCOL_ERROR, "no :method")
    if method == "CONNECT" and ":protocol" not in pseudo:
        if ":scheme" in pseudo or ":path" in pseudo:
            raise _H2Error(_PROTOCOL_ERROR, "CONNECT with :scheme or :path")
    elif ":scheme" not in pseudo or not pseudo.get(":path"):
        raise _H2Error(_PROTOCOL_ERROR, "no :scheme or no :path")
    elif ":protocol" in pseudo and method != "CONNECT":
        raise _H2Error(_PROTOCOL_ERROR, ":protocol without CONNECT")
    authority, host = pseudo.get(":authority"), headers.get("host")
    if (authority is None and host is None) or (None not in (authority, host) and authority != host):
        raise _H2Error(_PROTOCOL_ERROR, "no :authority nor Host, or both and different")
    return pseudo, headers, duplicate


class _Stream:
    __slots__ = ("pseudo", "headers", "duplicate", "body", "ended", "unacked", "send_window", "pending")

    def __init__(self, pseudo: dict[str, str], headers: dict[str, str], duplicate: bool, window: int) -> None:
        self.pseudo = pseudo
        self.headers = headers
        self.duplicate = duplicate
        self.body: list[bytes] = []
        self.ended = False  # the client sent END_STREAM
        self.unacked = 0  # body bytes not yet handed back with WINDOW_UPDATE
        self.send_window = window
        self.pending = b""  # answer body waiting for flow-control window


class _ApnsProtocol(asyncio.Protocol):
    """One TCP connection: TLS (driven here over memory BIOs) carrying HTTP/2 (server side).

    Why TLS by hand instead of `create_server(ssl=...)`: asyncio aborts the transport when a
    handshake fails without flushing the TLS alert, so a client could not tell "certificate
    refused" from a network blip. A real TLS server sends the alert, and so does this one.

    Bytes out are collected in `_out` and encrypted and written once per received chunk or per
    batch of delayed answers (`_flush`): a TLS record and a send() per frame cost more than the
    frame.
    """

    def __init__(self, server: FakeApns) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.handshake_done = False
        self.info: ConnectionInfo | None = None
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        # APNs binds a token-auth connection to the (team, key) of its first push.
        self.bound_key: tuple[str, str] | None = None
        # HTTP/2 state.
        self._http2 = False  # TLS done and ALPN "h2": frames flow
        self._preface_seen = False
        self._buffer = b""  # an incomplete frame
        self._out: list[bytes] = []
        self._decoder = _HpackDecoder()
        self._highest_stream_id = 0
        self._continuation: tuple[int, int, list[bytes]] | None = None  # stream id, flags, fragments
        self._unacked = 0  # connection-level bytes not yet handed back with WINDOW_UPDATE
        self._send_window = _DEFAULT_WINDOW
        self._peer_initial_window = _DEFAULT_WINDOW
        self._peer_max_frame_size = _MAX_FRAME_SIZE
        self._blocked: dict[int, _Stream] = {}  # answered streams whose body waits for window
        self._table_size_update = b""  # owed to the client after it shrank its HPACK table

    # -- connection lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._protocols.add(self)
        self.tls = self.server._server_context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # Delayed answers for these streams find them gone and are dropped.
        self.streams.clear()
        self._blocked.clear()
        self.server._connection_closed(self)

    def eof_received(self) -> bool:
        return False  # close our side too

    def _tls_flush(self) -> None:
        data = self._outgoing.read()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _flush(self) -> None:
        if self.tls is None or self.closed:
            return
        if self._out:
            self.tls.write(b"".join(self._out))
            self._out.clear()
        self._tls_flush()

    def _close(self) -> None:
        """Send what is queued (e.g. a GOAWAY), then close the connection."""
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _handshake(self) -> bool:
        assert self.tls is not None and self.transport is not None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._tls_flush()
            return False
        except ssl.SSLError as exc:
            # Send the alert, then give the client a moment to read it before the socket goes:
            # with TLS 1.3 it only learns about a refused certificate after its own handshake ended.
            self._tls_flush()
            self.server._handshake_failed(exc)
            self.handshake_done = True
            self.closed = True
            asyncio.get_running_loop().call_later(0.2, self.transport.close)
            return False
        self.handshake_done = True
        self._tls_flush()
        self._start_h2()
        return True

    def _start_h2(self) -> None:
        assert self.tls is not None and self.transport is not None
        alpn = self.tls.selected_alpn_protocol()
        subject = uid = None
        der = self.tls.getpeercert(binary_form=True)
        if der:
            cert = x509.load_der_x509_certificate(der)
            subject = cert.subject.rfc4514_string()
            uids = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
            uid = str(uids[0].value) if uids else None
        self.info = self.server._connection_opened(self, alpn, self.tls.version(), subject, uid)
        if alpn != "h2":
            # APNs only speaks HTTP/2; a client that did not negotiate it is hung up on.
            self.transport.close()
            return
        self._http2 = True
        self._out.append(_settings_frame(self.server.max_concurrent_streams))
        self._flush()

    # -- bytes in

    def data_received(self, data: bytes) -> None:
        if self.closed or self.tls is None or self.transport is None:
            return
        self._incoming.write(data)
        if not self.handshake_done and not self._handshake():
            return
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                self._tls_flush()
                self.transport.close()
                return
            if not chunk:
                break
            chunks.append(chunk)
        if chunks and self._http2:
            try:
                self._receive(b"".join(chunks))
            except _H2Error as exc:
                if exc.code is not None:
                    self._out.append(_goaway_frame(self._highest_stream_id, exc.code, str(exc).encode()))
                self._close()
                return
        self._flush()  # answers, acknowledgements; or TLS 1.3 session tickets, key updates

    def _receive(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        position = 0
        if not self._preface_seen:
            if not buffer.startswith(_PREFACE[: len(buffer)]):
                raise _H2Error(None, "invalid HTTP/2 preface")
            if len(buffer) < len(_PREFACE):
                self._buffer = buffer
                return
            self._preface_seen = True
            position = len(_PREFACE)
        end = len(buffer)
        unpack = _FRAME_HEADER.unpack_from
        while end - position >= 9 and not self.closed:
            length_high, length_low, kind, flags, stream_id = unpack(buffer, position)
            length = length_high << 16 | length_low
            if length > _MAX_FRAME_SIZE:
                raise _H2Error(_FRAME_SIZE_ERROR, f"frame of {length} bytes")
            start = position + 9
            if start + length > end:
                break
            position = start + length
            payload = buffer[start:position]
            stream_id &= 0x7FFFFFFF
            if self._continuation is not None and kind != _CONTINUATION:
                raise _H2Error(_PROTOCOL_ERROR, "header block interrupted")
            if kind == _HEADERS:
                self._on_headers(stream_id, flags, payload)
            elif kind == _DATA:
                self._on_data(stream_id, flags, payload)
            elif kind == _WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == _SETTINGS:
                self._on_settings(stream_id, flags, payload)
            elif kind == _PING:
                if stream_id:
                    raise _H2Error(_PROTOCOL_ERROR, "PING on a stream")
                if length != 8:
                    raise _H2Error(_FRAME_SIZE_ERROR, "PING of other than 8 bytes")
                if not flags & _FLAG_ACK:
                    self._out.append(_frame(_PING, _FLAG_ACK, 0, payload))
            elif kind == _RST_STREAM:
                if not stream_id or stream_id > self._highest_stream_id:
                    raise _H2Error(_PROTOCOL_ERROR, "RST_STREAM on stream 0 or an idle stream")
                if length != 4:
                    raise _H2Error(_FRAME_SIZE_ERROR, "RST_STREAM of other than 4 bytes")
                # A delayed answer for the stream finds it gone and is dropped.
                self.streams.pop(stream_id, None)
                self._blocked.pop(stream_id, None)
            elif kind == _CONTINUATION:
                self._on_continuation(stream_id, flags, payload)
            elif kind == _PRIORITY:
                if not stream_id:
                    raise _H2Error(_PROTOCOL_ERROR, "PRIORITY on stream 0")
                if length != 5:
                    raise _H2Error(_FRAME_SIZE_ERROR, "PRIORITY of other than 5 bytes")
            elif kind == _GOAWAY:
                self._close()  # the client is leaving
            elif kind == _PUSH_PROMISE:
                raise _H2Error(_PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            # Other frame types are ignored (RFC 9113 §5.5).
        self._buffer = buffer[position:]

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if not stream_id:
            raise _H2Error(_PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & _FLAG_PADDED:
            start, end = 1, end - (payload[0] if payload else end + 1)
        if flags & _FLAG_PRIORITY:
            start += 5
        if start > end:
            raise _H2Error(_PROTOCOL_ERROR, "padding or priority longer than the frame")
        fragment = payload[start:end] if start or end < len(payload) else payload
        if flags & _FLAG_END_HEADERS:
            self._on_header_block(stream_id, flags & _FLAG_END_STREAM, fragment)
        else:
            self._continuation = (stream_id, flags, [fragment])

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise _H2Error(_PROTOCOL_ERROR, "CONTINUATION out of sequence")
        fragments = self._continuation[2]
        fragments.append(payload)
        if sum(map(len, fragments)) > 4 * _MAX_HEADER_LIST_SIZE:
            raise _H2Error(_ENHANCE_YOUR_CALM, "endless header block")
        if flags & _FLAG_END_HEADERS:
            first_flags = self._continuation[1]
            self._continuation = None
            self._on_header_block(stream_id, first_flags & _FLAG_END_STREAM, b"".join(fragments))

    def _on_header_block(self, stream_id: int, end_stream: int, block: bytes) -> None:
        fields = self._decoder.decode(block)
        stream = self.streams.get(stream_id)
        if stream_id > self._highest_stream_id:
            if not stream_id & 1:
                raise _H2Error(_PROTOCOL_ERROR, "even stream id from a client")
            if len(self.streams) >= self.server.max_concurrent_streams:
                raise _H2Error(_PROTOCOL_ERROR, "more streams than SETTINGS_MAX_CONCURRENT_STREAMS")
            self._highest_stream_id = stream_id  # before the checks: h2's GOAWAY counted it too
            pseudo, headers, duplicate = _request_headers(fields)
            stream = _Stream(pseudo, headers, duplicate, self._peer_initial_window)
            self.streams[stream_id] = stream
        elif stream is None or stream.ended:
            raise _H2Error(_STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        elif not end_stream or any(name[0] == ":" for name, _value in fields):
            raise _H2Error(_PROTOCOL_ERROR, "trailers without END_STREAM or with pseudo-headers")
        if end_stream:
            self._request_complete(stream_id, stream)

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        size = len(payload)
        data = payload
        if flags & _FLAG_PADDED:
            if not size or payload[0] >= size:
                raise _H2Error(_PROTOCOL_ERROR, "padding longer than the frame")
            data = payload[1 : size - payload[0]]
        stream = self.streams.get(stream_id)
        if stream is None or stream.ended:
            if stream_id and stream_id <= self._highest_stream_id:
                raise _H2Error(_STREAM_CLOSED, f"DATA on closed stream {stream_id}")
            raise _H2Error(_PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
        if data:
            stream.body.append(data)
        # Keep both windows open; bodies are small but many streams share the connection.
        self._unacked += size
        if self._unacked >= _DEFAULT_WINDOW // 2:
            self._out.append(_window_update_frame(0, self._unacked))
            self._unacked = 0
        if flags & _FLAG_END_STREAM:
            self._request_complete(stream_id, stream)
            return
        stream.unacked += size
        if stream.unacked >= _DEFAULT_WINDOW // 2:
            self._out.append(_window_update_frame(stream_id, stream.unacked))
            stream.unacked = 0

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _H2Error(_FRAME_SIZE_ERROR, "WINDOW_UPDATE of other than 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise _H2Error(_PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise _H2Error(_FLOW_CONTROL_ERROR, "connection window above 2^31-1")
        else:
            stream = self.streams.get(stream_id) or self._blocked.get(stream_id)
            if stream is None:
                return  # a stream closed meanwhile
            if not increment:
                raise _H2Error(_PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            stream.send_window += increment
        for blocked_id, blocked in list(self._blocked.items()):
            self._send_body(blocked_id, blocked)

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id:
            raise _H2Error(_PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _FLAG_ACK:
            if payload:
                raise _H2Error(_FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise _H2Error(_FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        for offset in range(0, len(payload), 6):
            code, value = _SETTING.unpack_from(payload, offset)
            if code == 0x1 and value < _HEADER_TABLE_SIZE:
                # Answers never use the dynamic table; say so once by shrinking it to 0.
                self._table_size_update = _hpack_int_encode(0, 5, 0x20)
            elif code == 0x2 and value > 1:
                raise _H2Error(_PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            elif code == 0x4:
                if value > _MAX_WINDOW:
                    raise _H2Error(_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in (*self.streams.values(), *self._blocked.values()):
                    stream.send_window += delta
            elif code == 0x5:
                if not _MAX_FRAME_SIZE <= value <= 2**24 - 1:
                    raise _H2Error(_PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._peer_max_frame_size = value
        self._out.append(_frame(_SETTINGS, _FLAG_ACK, 0))
        for blocked_id, blocked in list(self._blocked.items()):
            self._send_body(blocked_id, blocked)

    # -- requests and answers

    def _request_complete(self, stream_id: int, stream: _Stream) -> None:
        stream.ended = True
        body = stream.body[0] if len(stream.body) == 1 else b"".join(stream.body)
        length = stream.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) != len(body)):
            raise _H2Error(_PROTOCOL_ERROR, "body length differs from content-length")
        answer, apns_id = self.server._process(
            self, stream_id, stream.pseudo, stream.headers, stream.duplicate, body
        )
        if answer.action == "stall":
            return
        if answer.delay > 0:
            self.server._schedule(self, stream_id, answer, apns_id)
        else:
            self._finish(stream_id, answer, apns_id)

    def _finish(self, stream_id: int, answer: Answer, apns_id: str) -> None:
        """Queue the answer's frames; the caller flushes."""
        if self.closed or self.transport is None:
            return
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return  # reset by the client meanwhile
        if answer.action == "reset":
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 turns the close into a TCP RST, like a crashed peer or a middlebox.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.closed = True
            self.transport.abort()
            return
        if answer.action == "goaway":
            data = json.dumps({"reason": answer.reason}).encode() if answer.reason is not None else b""
            self._out.append(_goaway_frame(self._highest_stream_id, _NO_ERROR, data))
            self._close()
            return
        block = self._table_size_update + _hpack_status(answer.status) + _hpack_field("apns-id", apns_id)
        self._table_size_update = b""
        if answer.status == 200:
            self._out.append(_frame(_HEADERS, _FLAG_END_HEADERS | _FLAG_END_STREAM, stream_id, block))
            return
        payload: dict[str, Any] = {"reason": answer.reason or ""}
        if answer.status == 410:
            payload["timestamp"] = (
                answer.timestamp_ms if answer.timestamp_ms is not None else int(time.time() * 1000)
            )
        body = json.dumps(payload, separators=(",", ":")).encode()
        block += _hpack_field("content-type", "application/json")
        block += _hpack_field("content-length", str(len(body)))
        self._out.append(_frame(_HEADERS, _FLAG_END_HEADERS, stream_id, block))
        stream.pending = body
        self._send_body(stream_id, stream)

    def _send_body(self, stream_id: int, stream: _Stream) -> None:
        """DATA frames as far as the client's flow-control windows allow; the rest waits in
        `_blocked` for its WINDOW_UPDATE."""
        data = stream.pending
        while data:
            size = min(len(data), self._send_window, stream.send_window, self._peer_max_frame_size)
            if size <= 0:
                stream.pending = data
                self._blocked[stream_id] = stream
                return
            chunk, data = data[:size], data[size:]
            self._send_window -= size
            stream.send_window -= size
            self._out.append(_frame(_DATA, 0 if data else _FLAG_END_STREAM, stream_id, chunk))
        stream.pending = b""
        self._blocked.pop(stream_id, None)


class FakeApns:
    """The fake server. Use `FakeApns.start()`; scripting and inspection are thread-safe.

    Answers are chosen in this order: a queued answer (`enqueue`, first in first out), the answer
    for the request's device token (`set_token_answer`), the default (`set_default`). A request
    that fails validation (auth, topic, push type...) gets the error APNs would send and consumes
    no scripted answer.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.0,
        ca: FakeCA | None = None,
        max_records: int | None = 100_000,
        max_concurrent_streams: int = 1000,
        check_cert_topic: bool = True,
        enforce_token_renewal_interval: bool = False,
        tls_max_version: ssl.TLSVersion | None = None,
    ) -> None:
        self.ca = ca or FakeCA()
        self._owns_ca = ca is None
        # TLS 1.2 makes a refused client certificate fail inside the handshake; with TLS 1.3 the
        # refusal arrives after the client already considers the handshake done.
        self.tls_max_version = tls_max_version
        self.host = host
        self.port = port
        self.max_concurrent_streams = max_concurrent_streams
        # Reject a topic the client certificate's UID does not cover (APNs: 400 TopicDisallowed).
        self.check_cert_topic = check_cert_topic
        # Reject a new provider token minted less than 20 minutes after the previous one for the same
        # key (APNs: 429 TooManyProviderTokenUpdates). Off by default: tests often mint freely.
        self.enforce_token_renewal_interval = enforce_token_renewal_interval
        # The clock provider tokens are judged by (tests may replace it).
        self.clock: Callable[[], float] = time.time
        self._initial_options = (check_cert_topic, enforce_token_renewal_interval)
        self._default_delay = delay
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._default = Answer(delay=delay)
        self._queue: deque[Answer] = deque()
        self._by_token: dict[str, Answer] = {}
        self._keys: dict[str, TokenKey] = {}
        self._requests: deque[RecordedRequest] = deque(maxlen=max_records)
        self._connections: dict[int, ConnectionInfo] = {}
        self._handshake_failures: list[str] = []
        self._next_connection_id = 0
        self._stats: Counter[str] = Counter()
        # apns-id for requests without one: UUID-shaped, a random prefix and a counter (uuid4() per
        # request cost more than the rest of the answer).
        self._apns_id_prefix = str(uuid.uuid4()).upper()[:24]
        self._apns_id_counter = itertools.count(1)
        # Loop-thread-only state.
        self._jwt_cache: dict[str, _JwtVerdict] = {}
        self._last_token: dict[tuple[str, str], tuple[str, int]] = {}
        self._protocols: set[_ApnsProtocol] = set()
        # Delayed answers by the millisecond (loop clock) they are due in; see _schedule.
        self._due: dict[int, list[tuple[_ApnsProtocol, int, Answer, str]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._server_context: ssl.SSLContext

    # ---- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def start(cls, **kwargs: Any) -> FakeApns:
        """Create the fake and serve in a daemon thread; returns once it listens."""
        fake = cls(**kwargs)
        fake._start()
        return fake

    def _ssl_context(self) -> ssl.SSLContext:
        cert_file, key_file = self.ca.issue_server_cert()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.tls_max_version is not None:
            context.maximum_version = self.tls_max_version
        context.load_cert_chain(cert_file, key_file)
        # Client certificates are optional (token auth presents none) but, when presented, must
        # chain to the CA, as Apple requires its own push CA.
        context.load_verify_locations(cafile=self.ca.ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.set_alpn_protocols(["h2"])
        return context

    def _start(self) -> None:
        self._server_context = self._ssl_context()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        lambda: _ApnsProtocol(self), self.host, self.port, backlog=1024, reuse_address=True
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-apns", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for protocol in list(self._protocols):
                if protocol.transport is not None:
                    protocol.transport.abort()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if self._owns_ca:
            self.ca.cleanup()

    def __enter__(self) -> FakeApns:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def ca_file(self) -> str:
        return self.ca.ca_file

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- scripting ------------------------------------------------------------------------------

    def set_default(self, answer: Answer) -> None:
        with self._lock:
            self._default = answer

    def set_token_answer(self, token: str, answer: Answer | None) -> None:
        """Answer every request for `token` this way (None removes it)."""
        with self._lock:
            if answer is None:
                self._by_token.pop(token, None)
            else:
                self._by_token[token] = answer

    def enqueue(self, *answers: Answer) -> None:
        """Answer the next requests (any token) with these, in order."""
        with self._lock:
            self._queue.extend(answers)

    def add_token_key(self, key: TokenKey) -> None:
        """Trust provider tokens signed by this key (kid = key.key_id, iss must be key.team_id)."""
        with self._lock:
            self._keys[key.key_id] = key
        if self._loop is not None:
            # Verdicts cached before the key was (re)registered are stale.
            self._loop.call_soon_threadsafe(self._jwt_cache.clear)

    def new_token_key(self, *, team_id: str = "TEAM123456", key_id: str | None = None) -> TokenKey:
        key = generate_token_key(team_id=team_id, key_id=key_id)
        self.add_token_key(key)
        return key

    def reset(self) -> None:
        """Forget requests, connection history, scripted answers, token-renewal tracking and option
        changes made by a test (`clock`, `check_cert_topic`...). Registered keys are kept."""
        self.check_cert_topic, self.enforce_token_renewal_interval = self._initial_options
        self.clock = time.time
        with self._lock:
            self._default = Answer(delay=self._default_delay)
            self._queue.clear()
            self._by_token.clear()
            self._requests.clear()
            self._handshake_failures.clear()
            self._connections = {
                cid: info for cid, info in self._connections.items() if info.closed_at is None
            }
            self._stats.clear()
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self._reset_in_loop(), self._loop).result(timeout=5)

    async def _reset_in_loop(self) -> None:
        self._last_token.clear()
        self._jwt_cache.clear()

    def close_connections(self) -> None:
        """Abort every open connection (as if the server restarted)."""
        if self._loop is None:
            return

        async def abort_all() -> None:
            for protocol in list(self._protocols):
                if protocol.transport is not None:
                    protocol.transport.abort()

        asyncio.run_coroutine_threadsafe(abort_all(), self._loop).result(timeout=5)

    # ---- inspection -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> list[ConnectionInfo]:
        """Connections opened since the last reset (plus those still open from before)."""
        with self._lock:
            return sorted(self._connections.values(), key=lambda info: info.id)

    @property
    def handshake_failures(self) -> list[str]:
        """OpenSSL reasons of refused TLS handshakes (e.g. a client certificate from another CA)."""
        with self._lock:
            return list(self._handshake_failures)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least `count` requests were recorded; raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fake APNs saw {len(self._requests)} requests, expected {count}")
                self._changed.wait(remaining)
            return list(self._requests)

    # ---- loop-thread internals ------------------------------------------------------------------

    def _connection_opened(
        self,
        protocol: _ApnsProtocol,
        alpn: str | None,
        tls_version: str | None,
        subject: str | None,
        uid: str | None,
    ) -> ConnectionInfo:
        with self._lock:
            self._next_connection_id += 1
            info = ConnectionInfo(
                id=self._next_connection_id,
                alpn=alpn,
                tls_version=tls_version,
                cert_subject=subject,
                cert_uid=uid,
                opened_at=time.time(),
            )
            self._connections[info.id] = info
            self._stats["connections"] += 1
            self._changed.notify_all()
        return info

    def _handshake_failed(self, exc: ssl.SSLError) -> None:
        with self._lock:
            self._handshake_failures.append(exc.reason or str(exc))
            self._stats["handshake_failures"] += 1
            self._changed.notify_all()

    def _connection_closed(self, protocol: _ApnsProtocol) -> None:
        self._protocols.discard(protocol)
        info = protocol.info
        if info is None:
            return
        with self._lock:
            if info.id in self._connections:
                self._connections[info.id] = replace(info, closed_at=time.time())
            self._changed.notify_all()

    def _verify_jwt(self, token: str) -> _JwtVerdict:
        verdict = self._jwt_cache.get(token)
        if verdict is not None:
            return verdict
        verdict = self._decode_jwt(token)
        if len(self._jwt_cache) > 10_000:
            self._jwt_cache.clear()
        self._jwt_cache[token] = verdict
        return verdict

    def _decode_jwt(self, token: str) -> _JwtVerdict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return _JwtVerdict(None, None, "InvalidProviderToken")
        # APNs only accepts ES256; "none" or HS256 tokens are rejected outright.
        if header.get("alg") != "ES256" or not isinstance(header.get("kid"), str):
            return _JwtVerdict(header, None, "InvalidProviderToken")
        with self._lock:
            key = self._keys.get(header["kid"])
        if key is None:
            return _JwtVerdict(header, None, "InvalidProviderToken")
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=["ES256"],
                options={
                    "require": ["iss", "iat"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                },
            )
        except jwt.PyJWTError:
            return _JwtVerdict(header, None, "InvalidProviderToken")
        if claims.get("iss") != key.team_id or not isinstance(claims.get("iat"), int):
            return _JwtVerdict(header, claims, "InvalidProviderToken")
        return _JwtVerdict(header, claims, None, key.team_id, key.key_id, claims["iat"])

    def _authenticate(
        self, protocol: _ApnsProtocol, headers: dict[str, str]
    ) -> tuple[Literal["certificate", "token"] | None, _JwtVerdict | None, tuple[int, str] | None]:
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return "token", None, (403, "InvalidProviderToken")
            verdict = self._verify_jwt(token.strip())
            if verdict.error is not None:
                return "token", verdict, (403, verdict.error)
            if self.clock() - verdict.issued_at > PROVIDER_TOKEN_MAX_AGE_S:
                return "token", verdict, (403, "ExpiredProviderToken")
            assert verdict.team_id is not None and verdict.key_id is not None
            key = (verdict.team_id, verdict.key_id)
            if protocol.bound_key is None:
                protocol.bound_key = key
            elif protocol.bound_key != key:
                return "token", verdict, (403, "UnrelatedKeyIdInToken")
            if self.enforce_token_renewal_interval:
                previous = self._last_token.get(key)
                if previous is not None and previous[0] != token.strip():
                    if verdict.issued_at - previous[1] < PROVIDER_TOKEN_MIN_RENEWAL_S:
                        return "token", verdict, (429, "TooManyProviderTokenUpdates")
                self._last_token[key] = (token.strip(), verdict.issued_at)
            return "token", verdict, None
        if protocol.info is not None and protocol.info.cert_subject is not None:
            return "certificate", None, None
        return None, None, (403, "MissingProviderToken")

    def _validate(
        self,
        protocol: _ApnsProtocol,
        method: str,
        path: str,
        token: str | None,
        headers: dict[str, str],
        duplicate_headers: bool,
        body: bytes,
    ) -> tuple[int, str] | None:
        if method != "POST":
            return 405, "MethodNotAllowed"
        if token is None:
            return 404, "BadPath"
        if not token:
            return 400, "MissingDeviceToken"
        if duplicate_headers:
            return 400, "DuplicateHeaders"
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic"
        uid = protocol.info.cert_uid if protocol.info is not None else None
        if (
            self.check_cert_topic
            and uid
            and "authorization" not in headers
            and topic != uid
            and not topic.startswith(uid + ".")
        ):
            return 400, "TopicDisallowed"
        push_type = headers.get("apns-push-type")
        if push_type is not None and push_type not in PUSH_TYPES:
            return 400, "InvalidPushType"
        priority = headers.get("apns-priority")
        if priority is not None and priority not in ("1", "5", "10"):
            return 400, "BadPriority"
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return 400, "BadExpirationDate"
        apns_id = headers.get("apns-id")
        if apns_id is not None and not _UUID_RE.match(apns_id):
            return 400, "BadMessageId"
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > 64:
            return 400, "BadCollapseId"
        if not _HEX_RE.match(token) or len(token) % 2:
            return 400, "BadDeviceToken"
        if not body:
            return 400, "PayloadEmpty"
        if len(body) > (VOIP_PAYLOAD_LIMIT if push_type == "voip" else PAYLOAD_LIMIT):
            return 413, "PayloadTooLarge"
        return None

    def _process(
        self,
        protocol: _ApnsProtocol,
        stream_id: int,
        pseudo: dict[str, str],
        headers: dict[str, str],
        duplicate: bool,
        body: bytes,
    ) -> tuple[Answer, str]:
        method = pseudo.get(":method", "")
        path = pseudo.get(":path", "")
        token = path[len("/3/device/") :] if path.startswith("/3/device/") else None

        if method == "POST" and token is not None:
            auth, verdict, auth_error = self._authenticate(protocol, headers)
        else:
            auth, verdict, auth_error = None, None, None
        problem = auth_error or self._validate(protocol, method, path, token, headers, duplicate, body)
        apns_id = headers.get("apns-id") or f"{self._apns_id_prefix}{next(self._apns_id_counter):012X}"
        received_at = time.time()
        info = protocol.info

        with self._lock:
            if problem is not None:
                answer = Answer(status=problem[0], reason=problem[1], delay=self._default.delay)
            elif self._queue:
                answer = self._queue.popleft()
            elif token is not None and token in self._by_token:
                answer = self._by_token[token]
            else:
                answer = self._default
            self._stats[str(answer.status) if answer.action == "respond" else answer.action] += 1
            if self._requests.maxlen == 0:  # counters only (long benchmarks)
                return answer, apns_id
            self._requests.append(
                RecordedRequest(
                    method=method,
                    path=path,
                    token=token,
                    headers=headers,
                    authority=pseudo.get(":authority", ""),
                    raw_body=body,
                    received_at=received_at,
                    auth=auth,
                    cert_subject=info.cert_subject if info is not None else None,
                    jwt_header=verdict.header if verdict is not None else None,
                    jwt_claims=verdict.claims if verdict is not None else None,
                    connection_id=info.id if info is not None else 0,
                    stream_id=stream_id,
                    alpn=info.alpn if info is not None else None,
                    status=answer.status,
                    reason=answer.reason,
                    action=answer.action,
                )
            )
            self._changed.notify_all()
        return answer, apns_id

    def _schedule(self, protocol: _ApnsProtocol, stream_id: int, answer: Answer, apns_id: str) -> None:
        """Answer after `answer.delay`, rounded up to the next millisecond of the loop clock.

        Why one timer per millisecond rather than per answer: at 1000 answers/s a TimerHandle each
        (heap push and pop, a loop iteration, a TLS write per answer) cost more than the answers.
        """
        assert self._loop is not None
        due = math.ceil((self._loop.time() + answer.delay) * 1000)
        batch = self._due.get(due)
        if batch is None:
            batch = self._due[due] = []
            self._loop.call_at(due / 1000, self._answer_due, due)
        batch.append((protocol, stream_id, answer, apns_id))

    def _answer_due(self, due: int) -> None:
        touched: dict[_ApnsProtocol, None] = {}
        for protocol, stream_id, answer, apns_id in self._due.pop(due):
            protocol._finish(stream_id, answer, apns_id)
            touched[protocol] = None
        for protocol in touched:
            protocol._flush()


# ---- standalone ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake APNs server (HTTP/2 + TLS) for tests and benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="latency of every answer")
    parser.add_argument("--bundle-id", default="com.example.pusher", help="UID of the client certificate")
    parser.add_argument("--team-id", default="TEAM123456")
    parser.add_argument("--no-record", action="store_true", help="keep counters only (long benchmarks)")
    args = parser.parse_args(argv)

    fake = FakeApns.start(
        host=args.host,
        port=args.port,
        delay=args.delay_ms / 1000.0,
        max_records=0 if args.no_record else 100_000,
    )
    cert = fake.ca.issue_client_cert(args.bundle_id)
    client_file = os.path.join(fake.ca.directory, "client.pem")
    with open(os.open(client_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(cert.pem)
    key = fake.new_token_key(team_id=args.team_id)
    p8_file = os.path.join(fake.ca.directory, f"AuthKey_{key.key_id}.p8")
    with open(os.open(p8_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(key.key_pem)
    print(
        json.dumps(
            {
                "host": fake.host,
                "port": fake.port,
                "ca_file": fake.ca_file,
                "client_pem_file": client_file,
                "topic": f"{args.bundle_id}.voip",
                "p8_file": p8_file,
                "key_id": key.key_id,
                "team_id": key.team_id,
            }
        ),
        flush=True,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        print(json.dumps({"stats": fake.stats}), flush=True)
        fake.stop()


if __name__ == "__main__":
    main()
