"""Generate real push credentials for tests: Apple-like certificates, .p12, .p8, service accounts.

Everything is made with `cryptography` at test time, so no secret (even a test one) is committed
and the fakes (APNs over TLS, FCM OAuth2) can trust exactly what the tests upload.
Key generation is the slow part; keys are cached per process by name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

TEAM_ID = "TEAM123456"
TEAM_NAME = "Example Telecom Ltd"

KeyType = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_OID_APPLE_TOPICS = x509.ObjectIdentifier("1.2.840.113635.100.6.3.6")
_OID_APPLE_DEVELOPMENT = x509.ObjectIdentifier("1.2.840.113635.100.6.3.1")
_OID_APPLE_PRODUCTION = x509.ObjectIdentifier("1.2.840.113635.100.6.3.2")
_DER_NULL = b"\x05\x00"


@dataclass(frozen=True)
class TestCA:
    """A throwaway issuing CA standing in for Apple's WWDR intermediate."""

    __test__ = False  # not a pytest test class despite the name

    cert: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@cache
def rsa_key(name: str = "default") -> rsa.RSAPrivateKey:
    """One RSA-2048 key per name per process (generation costs ~50 ms each)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(name: str = "default", curve: str = "secp256r1") -> ec.EllipticCurvePrivateKey:
    curves: dict[str, ec.EllipticCurve] = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}
    return ec.generate_private_key(curves[curve])


KeyFormat = Literal["pkcs8", "pkcs1", "encrypted", "encrypted-pkcs1"]


def key_pem(key: PrivateKey, *, fmt: KeyFormat = "pkcs8", password: bytes = b"secret") -> str:
    """Serialize a key as PKCS#8, "traditional" (PKCS#1 for RSA, SEC1 for EC) or either one encrypted.

    "encrypted" is `BEGIN ENCRYPTED PRIVATE KEY`; "encrypted-pkcs1" is the OpenSSL
    `Proc-Type: 4,ENCRYPTED` header form that `openssl pkcs12` writes without `-nodes`.
    """
    traditional = fmt in ("pkcs1", "encrypted-pkcs1")
    private_format = (
        serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if fmt.startswith("encrypted")
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, private_format, encryption).decode("ascii")


def reencode_key(pem: str, *, fmt: KeyFormat, password: bytes = b"secret") -> str:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key_pem(key, fmt=fmt, password=password)


@cache
def make_ca(name: str = "Test Worldwide Developer Relations CA") -> TestCA:
    key = rsa_key(f"ca:{name}")
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Test Certification Authority"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pusher Tests"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    ])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TestCA(cert=cert, key=key)


def make_apns_certificate(
    bundle_id: str,
    *,
    voip: bool = False,
    ca: TestCA | None = None,
    not_after: datetime | None = None,
    key_type: KeyType = "rsa",
    not_before: datetime | None = None,
    key: PrivateKey | None = None,
    common_name: str | None = None,
    team_id: str = TEAM_ID,
    topics_extension: bool = True,
    topics_extension_der: bytes | None = None,
) -> tuple[str, str]:
    """An Apple-like APNs client certificate and its key as (cert PEM, PKCS#8 key PEM).

    Mirrors what the Apple developer portal issues: UID = bundle id, CN = "<type>: <bundle>",
    OU = team id, the development/production markers and the topics extension.
    """
    ca = ca or make_ca()
    if key is None:
        key = rsa_key(f"apns:{bundle_id}") if key_type == "rsa" else ec_key(f"apns:{bundle_id}")
    now = datetime.now(UTC)
    not_before = not_before or now - timedelta(days=1)
    not_after = not_after or now + timedelta(days=365)
    if common_name is None:
        common_name = f"{'VoIP Services' if voip else 'Apple Push Services'}: {bundle_id}"
    subject = x509.Name([
        x509.NameAttribute(NameOID.USER_ID, bundle_id),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, team_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEAM_NAME),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
    ])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    # Apple marks which gateway(s) a certificate is good for; universal and VoIP ones carry both.
    markers = []
    if "Production" not in common_name:
        markers.append(_OID_APPLE_DEVELOPMENT)
    if "Development" not in common_name:
        markers.append(_OID_APPLE_PRODUCTION)
    for oid in markers:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, _DER_NULL), critical=False)
    if topics_extension:
        der = apple_topics_der(bundle_id, voip=voip) if topics_extension_der is None else topics_extension_der
        builder = builder.add_extension(x509.UnrecognizedExtension(_OID_APPLE_TOPICS, der), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), key_pem(key)


def apple_topics_der(bundle_id: str, *, voip: bool = False) -> bytes:
    """Apple's topics extension value: SEQUENCE { topic, SEQUENCE { kind }, topic, ... }."""
    pairs = [(bundle_id, "app"), (f"{bundle_id}.voip", "voip")]
    if not voip:
        pairs.append((f"{bundle_id}.complication", "complication"))
    body = b"".join(
        _der(0x0C, topic.encode()) + _der(0x30, _der(0x0C, kind.encode())) for topic, kind in pairs
    )
    return _der(0x30, body)


def make_p12(
    cert_pem: str, key_pem_text: str, password: str | bytes | None, *, legacy: bool = False
) -> bytes:
    """A PKCS#12 bundle; `legacy` uses the SHA1/3DES scheme older Keychain versions export."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    key = serialization.load_pem_private_key(key_pem_text.encode("ascii"), password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    secret = password.encode("utf-8") if isinstance(password, str) else password
    encryption: serialization.KeySerializationEncryption
    if not secret:
        encryption = serialization.NoEncryption()
    elif legacy:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(secret)
        )
    else:
        encryption = serialization.BestAvailableEncryption(secret)
    return pkcs12.serialize_key_and_certificates(b"apns", key, cert, [make_ca().cert], encryption)


def make_p8(name: str = "default") -> str:
    """An APNs auth key as Apple delivers it: PEM PKCS#8 EC P-256."""
    return key_pem(ec_key(f"p8:{name}"))


def make_service_account(project_id: str, token_uri: str) -> dict[str, Any]:
    """A Google service-account key file (as a dict) with a real RSA key."""
    key = rsa_key(f"sa:{project_id}")
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    client_email = f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": hashlib.sha1(public_der).hexdigest(),
        "private_key": key_pem(key),
        "client_email": client_email,
        "client_id": str(int.from_bytes(hashlib.sha256(public_der).digest()[:8], "big")),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{client_email}",
        "universe_domain": "googleapis.com",
    }


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        header = bytes([length])
    else:
        size = (length.bit_length() + 7) // 8
        header = bytes([0x80 | size]) + length.to_bytes(size, "big")
    return bytes([tag]) + header + content
