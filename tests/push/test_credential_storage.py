"""Credentials at rest: the secret column holds only Fernet ciphertext, keys rotate, facts stay readable.

The raw column is read with SQL, past the ORM, to see what a database dump would show.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from core import fields
from push import services
from push.models import Credential, CredentialKind
from tests.certs import TEAM_ID, make_apns_certificate, make_p8, make_service_account

BUNDLE = "com.example.storage"
KEY_ID = "KEY1234567"
PROJECT_ID = "pusher-storage-test"
TOKEN_URI = "https://oauth2.googleapis.com/token"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_fernet():
    # _fernet is cached per key tuple, so a settings change is picked up anyway; clearing keeps one
    # test's keys from lingering in another's cache.
    fields._fernet.cache_clear()
    yield
    fields._fernet.cache_clear()


def raw_secret(credential: Credential) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM push_credential WHERE id = %s", [credential.pk])
        (value,) = cursor.fetchone()
    return value


def secret_lines(secret: str) -> list[str]:
    """Every line of the secret long enough to be recognisable if it leaked (PEM bodies, JSON members)."""
    return [line.strip() for line in secret.splitlines() if len(line.strip()) >= 16 and "-----" not in line]


def assert_ciphertext_only(raw: str, clear: str) -> None:
    assert raw.startswith(fields.PREFIX)
    assert "PRIVATE KEY" not in raw
    assert "CERTIFICATE" not in raw
    lines = secret_lines(clear)
    assert lines, "the test secret has no lines to look for"
    for line in lines:
        assert line not in raw


def save_certificate(name: str = "voip cert", **cert_kwargs: object) -> tuple[Credential, str, str]:
    cert_pem, key_pem = make_apns_certificate(BUNDLE, voip=True, **cert_kwargs)
    parsed = services.credential_parse(kind=CredentialKind.APNS_CERTIFICATE, data=cert_pem + key_pem)
    return services.credential_save(name=name, parsed=parsed), cert_pem, key_pem


def save_token_key(name: str = "p8 key") -> tuple[Credential, str]:
    p8 = make_p8("storage")
    parsed = services.credential_parse(kind=CredentialKind.APNS_TOKEN, data=p8, key_id=KEY_ID, team_id=TEAM_ID)
    return services.credential_save(name=name, parsed=parsed), p8


def save_service_account(name: str = "fcm sa") -> tuple[Credential, dict]:
    info = make_service_account(PROJECT_ID, TOKEN_URI)
    parsed = services.credential_parse(kind=CredentialKind.FCM_SERVICE_ACCOUNT, data=json.dumps(info))
    return services.credential_save(name=name, parsed=parsed), info


# --- Encryption at rest ----------------------------------------------------------------------------


def test_pem_certificate_and_key_are_encrypted_at_rest() -> None:
    credential, cert_pem, key_pem = save_certificate()

    raw = raw_secret(credential)
    assert_ciphertext_only(raw, key_pem)
    assert_ciphertext_only(raw, cert_pem)

    stored = Credential.objects.get(pk=credential.pk).secret
    assert "-----BEGIN CERTIFICATE-----" in stored
    assert "-----BEGIN PRIVATE KEY-----" in stored
    for line in secret_lines(key_pem) + secret_lines(cert_pem):
        assert line in stored


def test_p8_token_key_is_encrypted_at_rest() -> None:
    credential, p8 = save_token_key()

    raw = raw_secret(credential)
    assert_ciphertext_only(raw, p8)
    assert Credential.objects.get(pk=credential.pk).secret.strip() == p8.strip()


def test_service_account_is_encrypted_at_rest() -> None:
    credential, info = save_service_account()

    raw = raw_secret(credential)
    assert_ciphertext_only(raw, info["private_key"])
    assert info["private_key_id"] not in raw
    assert info["client_email"] not in raw
    assert "service_account" not in raw

    stored = json.loads(Credential.objects.get(pk=credential.pk).secret)
    assert stored["private_key"] == info["private_key"]
    assert stored["private_key_id"] == info["private_key_id"]


def test_the_same_secret_encrypts_differently_each_time() -> None:
    cert_pem, key_pem = make_apns_certificate(BUNDLE, voip=True)
    parsed = services.credential_parse(kind=CredentialKind.APNS_CERTIFICATE, data=cert_pem + key_pem)
    first = services.credential_save(name="first", parsed=parsed)
    second = services.credential_save(name="second", parsed=parsed)

    assert Credential.objects.get(pk=first.pk).secret == Credential.objects.get(pk=second.pk).secret
    assert raw_secret(first) != raw_secret(second)


def test_saving_again_keeps_the_secret_encrypted() -> None:
    credential, _, key_pem = save_certificate()
    credential = Credential.objects.get(pk=credential.pk)
    credential.name = "renamed"
    credential.save()

    raw = raw_secret(credential)
    assert_ciphertext_only(raw, key_pem)
    assert Credential.objects.get(pk=credential.pk).secret.count("-----BEGIN PRIVATE KEY-----") == 1


# --- Key rotation ----------------------------------------------------------------------------------


def test_key_rotation(settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()

    settings.FIELD_ENCRYPTION_KEY = [old]
    credential, _, key_pem = save_certificate()
    clear = Credential.objects.get(pk=credential.pk).secret
    written_with_old = raw_secret(credential)

    # New key first: it encrypts, the old one still decrypts what it wrote.
    settings.FIELD_ENCRYPTION_KEY = [new, old]
    fields._fernet.cache_clear()
    assert Credential.objects.get(pk=credential.pk).secret == clear

    rotated = fields.rotate(written_with_old)
    assert rotated.startswith(fields.PREFIX)
    assert rotated != written_with_old
    assert_ciphertext_only(rotated, key_pem)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE push_credential SET secret = %s WHERE id = %s", [rotated, credential.pk])

    # The old key retired: the rotated row decrypts, a row still under the old key does not.
    settings.FIELD_ENCRYPTION_KEY = [new]
    fields._fernet.cache_clear()
    assert Credential.objects.get(pk=credential.pk).secret == clear
    with pytest.raises(ImproperlyConfigured, match="cannot be decrypted"):
        fields.decrypt(written_with_old)


def test_a_row_written_with_a_retired_key_loads_as_undecryptable(settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [old]
    credential, _, key_pem = save_certificate()
    written_with_old = raw_secret(credential)

    settings.FIELD_ENCRYPTION_KEY = [new]
    fields._fernet.cache_clear()
    loaded = Credential.objects.get(pk=credential.pk)
    assert fields.is_undecryptable(loaded.secret) and not loaded.secret_readable
    assert loaded.cannot_send_reason() == fields.UNDECRYPTABLE_REASON
    assert written_with_old not in loaded.secret and str(loaded.secret) == f"<{fields.UNDECRYPTABLE_REASON}>"
    # The facts stay readable without the key (the admin list and the expiry metric need them).
    assert loaded.subject and loaded.not_after
    # Decrypting it directly still fails clearly.
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEY"):
        fields.decrypt(written_with_old)

    # Saving the row again writes the ciphertext back untouched, so the old key still recovers it.
    loaded.name = "renamed"
    loaded.save()
    assert raw_secret(loaded) == written_with_old
    settings.FIELD_ENCRYPTION_KEY = [new, old]
    fields._fernet.cache_clear()
    recovered = Credential.objects.get(pk=credential.pk)
    assert recovered.secret_readable and recovered.secret.count("-----BEGIN PRIVATE KEY-----") == 1


def test_reencrypt_names_the_secrets_no_key_decrypts(settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [old]
    lost, _, _ = save_certificate("lost cert")
    lost_raw = raw_secret(lost)
    settings.FIELD_ENCRYPTION_KEY = [new]
    fields._fernet.cache_clear()
    kept, _ = save_token_key("kept p8")
    kept_raw = raw_secret(kept)

    out, err = io.StringIO(), io.StringIO()
    call_command("credentials_reencrypt", stdout=out, stderr=err)
    assert "re-encrypted 1 credential(s)" in out.getvalue()
    assert "1 credential(s) cannot be decrypted" in err.getvalue() and "lost cert" in err.getvalue()
    assert raw_secret(lost) == lost_raw  # left as it was
    assert raw_secret(kept) != kept_raw and Credential.objects.get(pk=kept.pk).secret_readable


def test_a_value_not_written_by_the_field_is_refused() -> None:
    credential, _, _ = save_certificate()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE push_credential SET secret = %s WHERE id = %s", ["plain text", credential.pk])

    with pytest.raises(ImproperlyConfigured, match="not written by this field"):
        Credential.objects.get(pk=credential.pk)


# --- Parsed facts ----------------------------------------------------------------------------------


def test_certificate_facts_are_stored_in_clear() -> None:
    not_after = (datetime.now(UTC) + timedelta(days=200)).replace(microsecond=0)
    credential, _, _ = save_certificate(not_after=not_after)

    credential = Credential.objects.get(pk=credential.pk)
    assert credential.kind == CredentialKind.APNS_CERTIFICATE
    assert f"UID={BUNDLE}" in credential.subject
    assert f"CN=VoIP Services: {BUNDLE}" in credential.subject
    assert credential.topics[0] == BUNDLE
    assert f"{BUNDLE}.voip" in credential.topics
    assert credential.not_after == not_after
    assert credential.not_before is not None and credential.not_before < not_after
    assert len(credential.fingerprint_sha256) == 64
    int(credential.fingerprint_sha256, 16)
    assert credential.team_id == TEAM_ID
    assert credential.environment == "both"
    assert credential.usable is True
    assert credential.cannot_send_reason() == ""

    with connection.cursor() as cursor:
        cursor.execute("SELECT subject, fingerprint_sha256 FROM push_credential WHERE id = %s", [credential.pk])
        subject, fingerprint = cursor.fetchone()
    assert BUNDLE in subject
    assert fingerprint == credential.fingerprint_sha256


def test_token_key_facts_are_stored_in_clear() -> None:
    credential, _ = save_token_key()

    credential = Credential.objects.get(pk=credential.pk)
    assert credential.kind == CredentialKind.APNS_TOKEN
    assert credential.key_id == KEY_ID
    assert credential.team_id == TEAM_ID
    assert credential.not_after is None
    assert credential.days_to_expiry is None
    assert len(credential.fingerprint_sha256) == 64
    assert credential.usable is True


def test_service_account_facts_are_stored_in_clear() -> None:
    credential, info = save_service_account()

    credential = Credential.objects.get(pk=credential.pk)
    assert credential.kind == CredentialKind.FCM_SERVICE_ACCOUNT
    assert credential.project_id == PROJECT_ID
    assert credential.client_email == info["client_email"]
    # The key id names the key without revealing it; it is what Google shows in the console.
    assert credential.key_id == info["private_key_id"]
    assert len(credential.fingerprint_sha256) == 64
    assert credential.usable is True
    assert credential.warnings == []


def test_an_expired_certificate_is_stored_unusable() -> None:
    now = datetime.now(UTC)
    credential, _, _ = save_certificate(not_before=now - timedelta(days=400), not_after=now - timedelta(days=2))

    credential = Credential.objects.get(pk=credential.pk)
    assert credential.usable is False
    assert credential.cannot_send_reason().startswith("certificate expired on")
