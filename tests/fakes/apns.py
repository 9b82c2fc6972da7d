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

Why asyncio protocols and call_later rather than a task or a thread per request: benchmarks push
1000+ requests/s with a simulated 30 ms latency, and many streams must be in flight at once on one
connection without blocking the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
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

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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

    def issue_server_cert(self, hosts: Iterable[str] = ("127.0.0.1", "::1", "localhost")) -> tuple[str, str]:
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
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.push.apple.com (fake)")]))
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
    # Parsed JSON body, None when empty or not JSON.
    body: Any
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


class _Stream:
    __slots__ = ("headers", "body", "handle")

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers
        self.body: list[bytes] = []
        self.handle: asyncio.TimerHandle | None = None


class _ApnsProtocol(asyncio.Protocol):
    """One TCP connection: TLS (driven here over memory BIOs) carrying HTTP/2 (server side).

    Why TLS by hand instead of `create_server(ssl=...)`: asyncio aborts the transport when a
    handshake fails without flushing the TLS alert, so a client could not tell "certificate
    refused" from a network blip. A real TLS server sends the alert, and so does this one.
    """

    def __init__(self, server: FakeApns) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.handshake_done = False
        self.h2: h2.connection.H2Connection | None = None
        self.info: ConnectionInfo | None = None
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        # APNs binds a token-auth connection to the (team, key) of its first push.
        self.bound_key: tuple[str, str] | None = None

    # -- connection lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._protocols.add(self)
        self.tls = self.server._server_context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for stream in self.streams.values():
            if stream.handle is not None:
                stream.handle.cancel()
        self.streams.clear()
        self.server._connection_closed(self)

    def eof_received(self) -> bool:
        return False  # close our side too

    def _tls_flush(self) -> None:
        data = self._outgoing.read()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _flush(self) -> None:
        if self.h2 is None or self.tls is None or self.closed:
            return
        data = self.h2.data_to_send()
        if data:
            self.tls.write(data)
            self._tls_flush()

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
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 8000,
            },
        )
        self.h2.initiate_connection()
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
        if chunks and self.h2 is not None:
            self._h2_received(b"".join(chunks))
        else:
            self._tls_flush()  # e.g. TLS 1.3 session tickets, key updates

    def _h2_received(self, data: bytes) -> None:
        assert self.h2 is not None and self.transport is not None
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()  # h2 queued a GOAWAY describing the error
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = _Stream(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None and event.data:
                    stream.body.append(event.data)
                # Keep both windows open; bodies are small but many streams share the connection.
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._request_complete(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None and stream.handle is not None:
                    stream.handle.cancel()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._flush()
                self.transport.close()
                return
        self._flush()

    def _request_complete(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        answer, apns_id = self.server._process(self, stream_id, stream.headers, b"".join(stream.body))
        if answer.action == "stall":
            return
        if answer.delay > 0:
            loop = asyncio.get_running_loop()
            stream.handle = loop.call_later(answer.delay, self._finish, stream_id, answer, apns_id, True)
        else:
            self._finish(stream_id, answer, apns_id, False)

    def _finish(self, stream_id: int, answer: Answer, apns_id: str, flush: bool) -> None:
        if self.closed or self.h2 is None or self.transport is None:
            return
        if self.streams.pop(stream_id, None) is None:
            return
        if answer.action == "reset":
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 turns the close into a TCP RST, like a crashed peer or a middlebox.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            return
        if answer.action == "goaway":
            data = json.dumps({"reason": answer.reason}).encode() if answer.reason is not None else None
            self.h2.close_connection(error_code=0, additional_data=data)
            self._flush()
            self.transport.close()
            return
        headers = [(":status", str(answer.status)), ("apns-id", apns_id)]
        try:
            if answer.status == 200:
                self.h2.send_headers(stream_id, headers, end_stream=True)
            else:
                payload: dict[str, Any] = {"reason": answer.reason or ""}
                if answer.status == 410:
                    payload["timestamp"] = (
                        answer.timestamp_ms if answer.timestamp_ms is not None else int(time.time() * 1000)
                    )
                body = json.dumps(payload, separators=(",", ":")).encode()
                headers += [("content-type", "application/json"), ("content-length", str(len(body)))]
                self.h2.send_headers(stream_id, headers)
                self.h2.send_data(stream_id, body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client gave up on the stream meanwhile
        if flush:
            self._flush()


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
        # Loop-thread-only state.
        self._jwt_cache: dict[str, _JwtVerdict] = {}
        self._last_token: dict[tuple[str, str], tuple[str, int]] = {}
        self._protocols: set[_ApnsProtocol] = set()
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
        self, protocol: _ApnsProtocol, stream_id: int, raw_headers: list[tuple[str, str]], body: bytes
    ) -> tuple[Answer, str]:
        pseudo: dict[str, str] = {}
        headers: dict[str, str] = {}
        duplicate = False
        for name, value in raw_headers:
            if name.startswith(":"):
                pseudo[name] = value
            else:
                duplicate = duplicate or name in headers
                headers[name] = value
        method = pseudo.get(":method", "")
        path = pseudo.get(":path", "")
        token = path[len("/3/device/") :] if path.startswith("/3/device/") else None

        if method == "POST" and token is not None:
            auth, verdict, auth_error = self._authenticate(protocol, headers)
        else:
            auth, verdict, auth_error = None, None, None
        problem = auth_error or self._validate(protocol, method, path, token, headers, duplicate, body)

        with self._lock:
            if problem is not None:
                answer = Answer(status=problem[0], reason=problem[1], delay=self._default.delay)
            elif self._queue:
                answer = self._queue.popleft()
            elif token is not None and token in self._by_token:
                answer = self._by_token[token]
            else:
                answer = self._default

        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        stat = str(answer.status) if answer.action == "respond" else answer.action
        if self._requests.maxlen == 0:  # counters only (long benchmarks)
            with self._lock:
                self._stats[stat] += 1
            return answer, apns_id
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        info = protocol.info
        record = RecordedRequest(
            method=method,
            path=path,
            token=token,
            headers=headers,
            authority=pseudo.get(":authority", ""),
            raw_body=body,
            body=parsed,
            received_at=time.time(),
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
        with self._lock:
            self._requests.append(record)
            self._stats[stat] += 1
            self._changed.notify_all()
        return answer, apns_id


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
