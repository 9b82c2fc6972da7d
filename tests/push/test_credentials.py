"""push.credentials: every accepted shape of each credential, and every way an upload can be wrong.

Pure functions, no database: run with `-p no:django` if you like. The credentials are real, made by
tests/certs.py with `cryptography`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from core.errors import CredentialError
from push.credentials import (
    MAX_CREDENTIAL_BYTES,
    CredentialFacts,
    CredentialKind,
    ParsedCredential,
    parse_apns_certificate,
    parse_apns_token_key,
    parse_credential,
    parse_fcm_legacy_key,
    parse_fcm_service_account,
    pem_cert_and_key,
)
from tests.certs import (
    TEAM_ID,
    ec_key,
    key_pem,
    make_apns_certificate,
    make_ca,
    make_p8,
    make_p12,
    make_service_account,
    reencode_key,
    rsa_key,
)

BUNDLE = "com.example.softphone"
KEY_ID = "ABC123DEFG"
LOOPBACK_TOKEN_URI = "http://127.0.0.1:8765/token"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
DAMAGED_PEM_KEY = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"


def secret_lines(secret: str) -> list[str]:
    """The parts of a secret long enough to be recognizable if they leaked."""
    return [line.strip() for line in secret.splitlines() if len(line.strip()) >= 16 and "-----" not in line]


def assert_not_leaked(text: str, secret: str) -> None:
    assert "PRIVATE KEY-----" not in text
    for line in secret_lines(secret):
        assert line not in text


def assert_cert_secret(parsed: ParsedCredential, cert_pem: str) -> None:
    """The stored secret is the same certificate plus an unencrypted PKCS#8 key that matches it."""
    stored_cert, stored_key = pem_cert_and_key(parsed.secret)
    assert stored_key.startswith("-----BEGIN PRIVATE KEY-----")
    expected = x509.load_pem_x509_certificate(cert_pem.encode())
    cert = x509.load_pem_x509_certificate(stored_cert.encode())
    assert cert == expected
    key = serialization.load_pem_private_key(stored_key.encode(), password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == cert.public_key().public_bytes(
        serialization.Encoding.DER, spki
    )
    assert parsed.facts.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()


# --------------------------------------------------------------------------------------------------
# APNs certificate: accepted shapes
# --------------------------------------------------------------------------------------------------


def _pem_variants() -> list[tuple[str, Callable[[str, str], str | bytes]]]:
    ca_pem = make_ca().cert_pem
    return [
        ("cert+pkcs8", lambda c, k: c + k),
        ("cert+pkcs1", lambda c, k: c + reencode_key(k, fmt="pkcs1")),
        ("pkcs8 before cert", lambda c, k: k + c),
        ("pkcs1 before cert", lambda c, k: reencode_key(k, fmt="pkcs1") + c),
        ("bytes", lambda c, k: (c + k).encode()),
        ("CRLF line ends", lambda c, k: (c + k).replace("\n", "\r\n")),
        ("openssl pkcs12 -nodes output", lambda c, k: (
            "Bag Attributes\n    localKeyID: 01 02 03\nsubject=/UID=x/CN=y\nissuer=/CN=z\n" + c
            + "Bag Attributes\n    localKeyID: 01 02 03\nKey Attributes: <No Attributes>\n" + k
        )),
        ("intermediate first", lambda c, k: ca_pem + c + k),
        ("surrounding blank lines", lambda c, k: "\n\n  " + c + "\n" + k + "\n\n"),
    ]


@pytest.mark.parametrize(("label", "build"), _pem_variants(), ids=[v[0] for v in _pem_variants()])
def test_pem_certificate_and_key_in_any_layout(label: str, build: Callable[[str, str], str | bytes]) -> None:
    cert_pem, key = make_apns_certificate(BUNDLE)

    parsed = parse_apns_certificate(build(cert_pem, key))

    facts = parsed.facts
    assert facts.kind is CredentialKind.APNS_CERTIFICATE
    assert f"UID={BUNDLE}" in facts.subject
    assert f"CN=Apple Push Services: {BUNDLE}" in facts.subject
    assert facts.team_id == TEAM_ID
    assert facts.environment == "both"
    assert facts.usable and facts.unusable_reason == ""
    assert facts.warnings == ()
    assert facts.not_after is not None and facts.not_after.tzinfo is not None
    assert facts.not_after.utcoffset() == timedelta(0)
    assert_cert_secret(parsed, cert_pem)


def test_ec_certificate_key_is_accepted() -> None:
    cert_pem, key = make_apns_certificate("com.example.ec", key_type="ec")
    parsed = parse_apns_certificate(reencode_key(key, fmt="pkcs1") + cert_pem)  # SEC1 "EC PRIVATE KEY"
    assert_cert_secret(parsed, cert_pem)


@pytest.mark.parametrize(
    ("p12_password", "given_password", "legacy"),
    [
        ("s3cret-pass", "s3cret-pass", False),
        ("s3cret-pass", "s3cret-pass", True),  # SHA1/3DES as older Keychain exports
        ("pässwörd", "pässwörd", False),
        (None, None, False),
        (None, "", False),
        ("", None, False),
    ],
)
def test_pkcs12_with_and_without_password(
    p12_password: str | None, given_password: str | None, legacy: bool
) -> None:
    cert_pem, key = make_apns_certificate(BUNDLE)
    p12 = make_p12(cert_pem, key, p12_password, legacy=legacy)

    parsed = parse_apns_certificate(p12, password=given_password)

    assert parsed.facts.topics[0] == BUNDLE
    assert_cert_secret(parsed, cert_pem)
    if p12_password:
        assert p12_password not in parsed.secret


def test_pkcs12_base64_text_is_accepted() -> None:
    # JSON APIs carry the .p12 as base64 text.
    cert_pem, key = make_apns_certificate(BUNDLE)
    encoded = base64.encodebytes(make_p12(cert_pem, key, "pw")).decode()
    assert_cert_secret(parse_apns_certificate(encoded, password="pw"), cert_pem)


# --------------------------------------------------------------------------------------------------
# APNs certificate: facts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "topics"),
    [
        ({}, (BUNDLE, f"{BUNDLE}.voip", f"{BUNDLE}.complication")),
        ({"voip": True}, (BUNDLE, f"{BUNDLE}.voip")),
        ({"topics_extension": False}, (BUNDLE,)),
        # The extension lists other topics but not the bundle: the UID is still offered, first.
        ({"topics_extension_der": bytes.fromhex("3009") + b"\x0c\x07other.x"}, (BUNDLE, "other.x")),
    ],
    ids=["universal", "voip", "uid-only", "uid-added"],
)
def test_topics_from_extension_and_uid(kwargs: dict[str, Any], topics: tuple[str, ...]) -> None:
    cert_pem, key = make_apns_certificate(BUNDLE, **kwargs)
    facts = parse_apns_certificate(cert_pem + key).facts
    assert facts.topics == topics
    assert facts.warnings == ()


def test_voip_certificate_lists_voip_topic() -> None:
    cert_pem, key = make_apns_certificate(BUNDLE, voip=True)
    facts = parse_apns_certificate(cert_pem + key).facts
    assert f"{BUNDLE}.voip" in facts.topics
    assert facts.subject.find(f"CN=VoIP Services: {BUNDLE}") >= 0
    assert facts.environment == "both"


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30\x05\x0c\x01", b"\x04\x03abc", b"\x30\x02\x0c\x05", b"\x30\x03\x0c\x01\xff"],
    ids=["empty", "truncated", "not-a-sequence", "inner-overrun", "bad-utf8"],
)
def test_unreadable_topics_extension_falls_back_to_uid(der: bytes) -> None:
    cert_pem, key = make_apns_certificate(BUNDLE, topics_extension_der=der)
    facts = parse_apns_certificate(cert_pem + key).facts
    assert facts.topics == (BUNDLE,)
    assert facts.usable
    assert any("topic list could not be read" in w for w in facts.warnings)


def _plain_certificate(name: x509.Name, *extensions: x509.UnrecognizedExtension) -> str:
    """A non-Apple client certificate plus its key, as PEM."""
    ca, key, now = make_ca(), rsa_key("plain"), datetime.now(UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(7).not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=90))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode() + key_pem(key)


def test_certificate_without_any_topic_warns() -> None:
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "just a client cert")])
    facts = parse_apns_certificate(_plain_certificate(name)).facts
    assert facts.topics == ()
    assert facts.environment == ""
    assert facts.team_id == ""
    assert any("no topic" in w for w in facts.warnings)
    assert any("sandbox from production" in w for w in facts.warnings)


def test_malformed_extension_warns_but_parses() -> None:
    # A KeyUsage extension whose value is not DER: cryptography only notices when extensions are read.
    name = x509.Name([
        x509.NameAttribute(x509.oid.NameOID.USER_ID, BUNDLE),
        x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, f"Apple Push Services: {BUNDLE}"),
    ])
    broken = x509.UnrecognizedExtension(x509.oid.ExtensionOID.KEY_USAGE, b"\x01\x02junk")
    facts = parse_apns_certificate(_plain_certificate(name, broken)).facts
    assert facts.topics == (BUNDLE,)
    assert facts.environment == "both"
    assert "the certificate's extensions could not be read" in facts.warnings


@pytest.mark.parametrize(
    ("common_name", "environment"),
    [
        (f"Apple Push Services: {BUNDLE}", "both"),
        (f"VoIP Services: {BUNDLE}", "both"),
        (f"Apple Development IOS Push Services: {BUNDLE}", "sandbox"),
        (f"Apple Production IOS Push Services: {BUNDLE}", "production"),
        (f"Apple Development Mac Push Services: {BUNDLE}", "sandbox"),
        # Unknown name: decided by Apple's development/production marker extensions.
        (f"Something Else: {BUNDLE}", "both"),
    ],
)
def test_environment_from_certificate_type(common_name: str, environment: str) -> None:
    cert_pem, key = make_apns_certificate(BUNDLE, common_name=common_name)
    assert parse_apns_certificate(cert_pem + key).facts.environment == environment


def test_expired_certificate_parses_but_is_unusable() -> None:
    expired_on = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    cert_pem, key = make_apns_certificate(
        BUNDLE, not_before=expired_on - timedelta(days=365), not_after=expired_on
    )
    facts = parse_apns_certificate(cert_pem + key).facts
    assert facts.usable is False
    assert facts.unusable_reason == "certificate expired on 2024-03-01"
    assert facts.not_after == expired_on


def test_not_yet_valid_certificate_warns() -> None:
    starts = datetime.now(UTC) + timedelta(days=3)
    cert_pem, key = make_apns_certificate(BUNDLE, not_before=starts, not_after=starts + timedelta(days=365))
    facts = parse_apns_certificate(cert_pem + key).facts
    assert facts.usable
    assert any("not valid before" in w for w in facts.warnings)


def test_certificate_expiring_soon_warns() -> None:
    cert_pem, key = make_apns_certificate(BUNDLE, not_after=datetime.now(UTC) + timedelta(days=5))
    facts = parse_apns_certificate(cert_pem + key).facts
    assert facts.usable
    assert any("renew it soon" in w for w in facts.warnings)


# --------------------------------------------------------------------------------------------------
# APNs certificate: refusals
# --------------------------------------------------------------------------------------------------


def test_mismatched_key_is_refused() -> None:
    cert_pem, _ = make_apns_certificate(BUNDLE)
    _, other_key = make_apns_certificate("com.example.other")
    with pytest.raises(CredentialError, match="the private key does not belong to the certificate") as info:
        parse_apns_certificate(cert_pem + other_key)
    assert_not_leaked(str(info.value), other_key)


@pytest.mark.parametrize("fmt", ["encrypted", "encrypted-pkcs1"])
def test_encrypted_pem_key_is_refused(fmt: str) -> None:
    cert_pem, key = make_apns_certificate(BUNDLE)
    encrypted = reencode_key(key, fmt=fmt, password=b"hunter2")  # type: ignore[arg-type]
    with pytest.raises(CredentialError, match=r"encrypted; upload an unencrypted key, or the \.p12") as info:
        parse_apns_certificate(cert_pem + encrypted, password="hunter2")
    assert_not_leaked(str(info.value), encrypted)


@pytest.mark.parametrize(
    ("p12_password", "given", "message"),
    [
        ("right-password", "wrong-password", "wrong password for the .p12 file"),
        ("right-password", None, "password protected"),
        ("right-password", "", "password protected"),
        (None, "unexpected", "wrong password for the .p12 file"),
    ],
)
def test_pkcs12_wrong_password(p12_password: str | None, given: str | None, message: str) -> None:
    cert_pem, key = make_apns_certificate(BUNDLE)
    with pytest.raises(CredentialError, match=message) as info:
        parse_apns_certificate(make_p12(cert_pem, key, p12_password), password=given)
    for password in (p12_password, given):
        if password:
            assert password not in str(info.value)


def _garbage_certificates() -> list[tuple[str, object, str]]:
    cert_pem, key = make_apns_certificate(BUNDLE)
    both = cert_pem + key
    der_cert = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    p12 = make_p12(cert_pem, key, "pw")
    damaged_body = cert_pem.replace(cert_pem.splitlines()[3], "A" * 64) + key
    return [
        ("empty bytes", b"", "is empty"),
        ("empty text", "", "is empty"),
        ("whitespace", " \n\t ", "is empty"),
        ("garbage text", "hello, this is not a certificate", "not a PEM certificate and key nor a PKCS#12"),
        ("random bytes", bytes(range(256)) * 4, "not a PEM certificate and key nor a PKCS#12"),
        ("nul bytes", b"\x00" * 100, "not a PEM certificate and key nor a PKCS#12"),
        ("json", '{"certificate": "x"}', "not a PEM certificate and key nor a PKCS#12"),
        ("truncated PEM", both[: len(both) // 2], "truncated"),
        ("truncated PEM key", cert_pem + key[: len(key) - 40], "truncated"),
        ("damaged PEM body", damaged_body, "could not be read"),
        ("only a certificate", cert_pem, "certificate but no private key"),
        ("only a key", key, "private key but no certificate"),
        ("DER certificate", der_cert, "DER .cer"),
        ("PDF", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF document"),
        ("truncated p12", p12[: len(p12) // 2], "truncated or damaged"),
        ("p12 with trailing junk cut", p12[:-1], "truncated or damaged"),
        ("huge", b"-----BEGIN CERTIFICATE-----\n" + b"A" * MAX_CREDENTIAL_BYTES, "too large"),
        ("huge text", "x" * (MAX_CREDENTIAL_BYTES + 1), "too large"),
        ("not bytes", 12345, "must be bytes or text"),
        ("none", None, "must be bytes or text"),
        ("CSR", "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
         r"no PEM certificate or private key found \(found: CERTIFICATE REQUEST\)"),
        ("ssh key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----\n"
         + cert_pem, "could not be read"),
    ]


@pytest.mark.parametrize(
    ("label", "data", "message"), _garbage_certificates(), ids=[g[0] for g in _garbage_certificates()]
)
def test_garbage_certificate_input_is_refused(label: str, data: Any, message: str) -> None:
    with pytest.raises(CredentialError, match=message) as info:
        parse_apns_certificate(data, password="pw")
    assert info.value.code == "credential_invalid"
    assert len(str(info.value)) < 300
    if isinstance(data, str):
        assert_not_leaked(str(info.value), data)


def test_pem_cert_and_key_refuses_incomplete_secret() -> None:
    cert_pem, _ = make_apns_certificate(BUNDLE)
    with pytest.raises(CredentialError, match="incomplete"):
        pem_cert_and_key(cert_pem)


# --------------------------------------------------------------------------------------------------
# APNs token key (.p8)
# --------------------------------------------------------------------------------------------------


def test_p8_is_accepted() -> None:
    pem = make_p8()
    parsed = parse_apns_token_key(pem, key_id=KEY_ID, team_id=TEAM_ID)

    facts = parsed.facts
    assert facts.kind is CredentialKind.APNS_TOKEN
    assert (facts.key_id, facts.team_id, facts.environment, facts.usable) == (KEY_ID, TEAM_ID, "both", True)
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert facts.fingerprint_sha256 == hashlib.sha256(public_der).hexdigest()
    assert parsed.secret.startswith("-----BEGIN PRIVATE KEY-----")
    assert serialization.load_pem_private_key(parsed.secret.encode(), password=None).private_numbers() == (
        key.private_numbers()
    )


@pytest.mark.parametrize(
    "variant",
    [
        lambda pem: pem.encode(),
        lambda pem: pem.replace("\n", "\r\n"),
        lambda pem: reencode_key(pem, fmt="pkcs1"),  # SEC1 "EC PRIVATE KEY"
        lambda pem: f"\n  {pem}\n",
    ],
    ids=["bytes", "crlf", "sec1", "padded"],
)
def test_p8_variants_are_normalized(variant: Callable[[str], str | bytes]) -> None:
    parsed = parse_apns_token_key(variant(make_p8()), key_id=f" {KEY_ID} ", team_id=TEAM_ID)
    assert parsed.secret == parse_apns_token_key(make_p8(), key_id=KEY_ID, team_id=TEAM_ID).secret
    assert parsed.facts.key_id == KEY_ID


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (key_pem(rsa_key("p8-rsa")), "must be an EC P-256 key"),
        (key_pem(ec_key("p8-384", "secp384r1")), "must be an EC P-256 key"),
        (key_pem(ec_key("p8-enc"), fmt="encrypted"), "encrypted"),
        (make_apns_certificate(BUNDLE)[0], "this is a certificate"),
        ("MIGTAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBHkwdwIBAQQg", "expected a PEM private key"),
        ("", "is empty"),
        (b"\x00\x01garbage", "expected a PEM private key"),
        ("-----BEGIN PRIVATE KEY-----\nMIGTAgEAMBMG\n", "truncated"),
        ("-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n-----END PRIVATE KEY-----\n", "could not be read"),
        ("x" * (MAX_CREDENTIAL_BYTES + 1), "too large"),
    ],
    ids=["rsa", "p384", "encrypted", "certificate", "bare-base64", "empty", "binary", "truncated", "damaged",
         "huge"],
)
def test_p8_bad_keys_are_refused(data: str | bytes, message: str) -> None:
    with pytest.raises(CredentialError, match=message) as info:
        parse_apns_token_key(data, key_id=KEY_ID, team_id=TEAM_ID)
    if isinstance(data, str):
        assert_not_leaked(str(info.value), data)


@pytest.mark.parametrize(
    "bad", ["", "ABC", "ABC123DEFGH", "abc123defg", "ABC-23DEFG", "ABC123DEF\u00c9", None]
)
@pytest.mark.parametrize("field", ["key_id", "team_id"])
def test_p8_bad_key_or_team_id_is_refused(field: str, bad: str | None) -> None:
    ids = {"key_id": KEY_ID, "team_id": TEAM_ID, field: bad}
    with pytest.raises(CredentialError, match=f"the {field.replace('_', ' ')} must be 10 uppercase"):
        parse_apns_token_key(make_p8(), **ids)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# FCM service account
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_uri", "warns"),
    [
        (GOOGLE_TOKEN_URI, False),
        (LOOPBACK_TOKEN_URI, False),
        ("http://localhost:9000/token", False),
        ("http://[::1]:9000/token", False),
        ("https://127.0.0.1:9443/token", False),
        ("https://fake-oauth.example.net/token", True),
    ],
)
def test_service_account_is_accepted(token_uri: str, warns: bool) -> None:
    info = make_service_account("pusher-test-1", token_uri)

    parsed = parse_fcm_service_account(json.dumps(info, indent=2))

    facts = parsed.facts
    assert facts.kind is CredentialKind.FCM_SERVICE_ACCOUNT
    assert facts.project_id == "pusher-test-1"
    assert facts.client_email == info["client_email"]
    assert facts.key_id == info["private_key_id"]
    assert facts.usable
    assert bool(facts.warnings) is warns
    assert len(facts.fingerprint_sha256) == 64
    assert json.loads(parsed.secret) == info


@pytest.mark.parametrize(
    "encode",
    [
        lambda info: json.dumps(info).encode(),
        lambda info: "\ufeff" + json.dumps(info),
        lambda info: b"\xef\xbb\xbf" + json.dumps(info).encode(),
        lambda info: info,
        # Newlines escaped twice, as after a trip through a shell variable.
        lambda info: json.dumps({**info, "private_key": info["private_key"].replace("\n", "\\n")}),
    ],
    ids=["bytes", "bom-text", "bom-bytes", "dict", "escaped-newlines"],
)
def test_service_account_input_forms(encode: Callable[[dict[str, Any]], Any]) -> None:
    info = make_service_account("pusher-test-2", LOOPBACK_TOKEN_URI)
    parsed = parse_fcm_service_account(encode(info))
    assert json.loads(parsed.secret) == info


def _broken_service_accounts() -> list[tuple[str, Callable[[dict[str, Any]], Any], str]]:
    def without(name: str) -> Callable[[dict[str, Any]], Any]:
        return lambda info: json.dumps({k: v for k, v in info.items() if k != name})

    def setting(name: str, value: Any) -> Callable[[dict[str, Any]], Any]:
        return lambda info: json.dumps({**info, name: value})

    ec_pem = key_pem(ec_key("sa-ec"))
    return [
        *[(f"missing {name}", without(name), f"missing '{name}'")
          for name in ("type", "project_id", "private_key", "client_email", "token_uri")],
        *[(f"empty {name}", setting(name, " "), f"'{name}' must be a non-empty string")
          for name in ("project_id", "private_key", "client_email", "token_uri")],
        ("numeric project", setting("project_id", 42), "'project_id' must be a non-empty string"),
        ("wrong type", setting("type", "authorized_user"), "expected \"type\": \"service_account\""),
        ("project with slash", setting("project_id", "a/b"), "not a valid Google project id"),
        ("email without at", setting("client_email", "nobody"), "not an e-mail address"),
        ("key not pem", setting("private_key", "c2VjcmV0"), "not a PEM private key"),
        ("key damaged", setting("private_key", DAMAGED_PEM_KEY), "could not be read"),
        ("ec key", setting("private_key", ec_pem), "must be an RSA key"),
        ("encrypted key", setting("private_key", key_pem(rsa_key("sa-enc"), fmt="encrypted")), "encrypted"),
        ("http token_uri", setting("token_uri", "http://oauth2.googleapis.com/token"), "must use https"),
        ("http lookalike", setting("token_uri", "http://127.0.0.1.evil.example/token"), "must use https"),
        ("ftp token_uri", setting("token_uri", "ftp://oauth2.googleapis.com/token"), r"not an http\(s\) URL"),
        ("relative token_uri", setting("token_uri", "/token"), r"not an http\(s\) URL"),
        ("google-services.json", lambda info: json.dumps({"project_info": {"project_id": "x"}, "client": []}),
         "google-services.json"),
        ("json array", lambda info: json.dumps([info]), "must be an object"),
        ("not json", lambda info: "type=service_account", r"not valid JSON \(line 1, column 1\)"),
        ("truncated json", lambda info: json.dumps(info)[:-30], "not valid JSON"),
        ("binary", lambda info: b"\xff\xfe\x00garbage", "not text"),
        ("empty", lambda info: "", "is empty"),
        ("huge", lambda info: " " * MAX_CREDENTIAL_BYTES + json.dumps(info), "too large"),
    ]


@pytest.mark.parametrize(
    ("label", "build", "message"), _broken_service_accounts(), ids=[b[0] for b in _broken_service_accounts()]
)
def test_broken_service_account_is_refused(
    label: str, build: Callable[[dict[str, Any]], Any], message: str
) -> None:
    info = make_service_account("pusher-test-3", LOOPBACK_TOKEN_URI)
    with pytest.raises(CredentialError, match=message) as info_exc:
        parse_fcm_service_account(build(info))
    assert_not_leaked(str(info_exc.value), info["private_key"])
    # JSONDecodeError keeps the whole document; it must not ride along as the cause.
    assert info_exc.value.__cause__ is None


# --------------------------------------------------------------------------------------------------
# FCM legacy server key
# --------------------------------------------------------------------------------------------------


LEGACY_KEY = "AAAAx1y2z3:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338qju59zJMjw2DELjzEvxwYv7hH5Ynpc1ODQ0aT4U4OFEeco8ohsN5PjL1iC2dNtk2BAokeMCg2ZXKqpc8FXKmhX94kIxQ"  # noqa: E501


@pytest.mark.parametrize("data", [LEGACY_KEY, f"  {LEGACY_KEY}\n", LEGACY_KEY.encode()])
def test_legacy_key_is_recorded_but_unusable(data: str | bytes) -> None:
    parsed = parse_fcm_legacy_key(data)
    facts = parsed.facts
    assert parsed.secret == LEGACY_KEY
    assert facts.kind is CredentialKind.FCM_LEGACY_KEY
    assert facts.usable is False
    assert facts.unusable_reason.startswith("the FCM legacy HTTP API was shut down by Google in 2024")
    assert facts.warnings == (facts.unusable_reason,)
    assert LEGACY_KEY not in repr(parsed)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        (f"{LEGACY_KEY} {LEGACY_KEY}", "single line without spaces"),
        (f"{LEGACY_KEY}\n{LEGACY_KEY}", "single line without spaces"),
        ("clé-secrète", "single line without spaces"),
        (b"\xff\xfe", "not text"),
    ],
)
def test_bad_legacy_key_is_refused(data: str | bytes, message: str) -> None:
    with pytest.raises(CredentialError, match=message) as info:
        parse_fcm_legacy_key(data)
    assert LEGACY_KEY not in str(info.value)


# --------------------------------------------------------------------------------------------------
# Dispatcher, repr, serialization
# --------------------------------------------------------------------------------------------------


def _one_of_each() -> list[tuple[CredentialKind | str, Callable[[], dict[str, Any]]]]:
    def certificate() -> dict[str, Any]:
        cert_pem, key = make_apns_certificate(BUNDLE)
        return {"data": make_p12(cert_pem, key, "pw"), "password": "pw"}

    return [
        (CredentialKind.APNS_CERTIFICATE, certificate),
        ("apns_token", lambda: {"data": make_p8(), "key_id": KEY_ID, "team_id": TEAM_ID}),
        ("fcm_service_account", lambda: {"data": json.dumps(make_service_account("p-1", GOOGLE_TOKEN_URI))}),
        (CredentialKind.FCM_LEGACY_KEY, lambda: {"data": LEGACY_KEY}),
    ]


@pytest.mark.parametrize(("kind", "build"), _one_of_each(), ids=[str(k) for k, _ in _one_of_each()])
def test_dispatcher_and_secret_hygiene(
    kind: CredentialKind | str, build: Callable[[], dict[str, Any]]
) -> None:
    parsed = parse_credential(kind, **build())

    assert parsed.facts.kind == kind
    text = repr(parsed) + str(parsed) + repr(parsed.facts) + json.dumps(parsed.facts.as_dict())
    assert "secret=" not in repr(parsed)
    assert_not_leaked(text, parsed.secret)
    assert parsed.secret not in text


def test_dispatcher_refuses_unknown_kind() -> None:
    with pytest.raises(CredentialError, match="unknown credential kind 'gcm'"):
        parse_credential("gcm", "x")


def test_facts_as_dict_is_json_ready() -> None:
    cert_pem, key = make_apns_certificate(BUNDLE)
    facts = parse_apns_certificate(cert_pem + key).facts
    data = json.loads(json.dumps(facts.as_dict()))
    assert data["kind"] == "apns_certificate"
    assert data["topics"][0] == BUNDLE
    assert datetime.fromisoformat(data["not_after"]) == facts.not_after
    assert isinstance(facts, CredentialFacts)


def test_generated_keys_have_the_expected_types() -> None:
    # Guards the helpers other test modules rely on.
    assert isinstance(rsa_key(), rsa.RSAPrivateKey)
    p8 = serialization.load_pem_private_key(make_p8().encode(), None)
    assert isinstance(p8, ec.EllipticCurvePrivateKey)
