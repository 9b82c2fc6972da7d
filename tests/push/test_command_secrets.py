"""No command or credential error echoes secret input: a service-account JSON, a PEM or a .p8 key
given where a path (or another field) was expected is described, never quoted (issue 13)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.errors import CredentialError
from core.text import path_shown
from push.credentials import parse_credential, parse_fcm_service_account
from push.models import CredentialKind, PushApp
from tests.certs import TEAM_ID, make_apns_certificate, make_p8, make_service_account

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def key_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM: any of them in a message is a leak."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def assert_not_echoed(message: str, secret_pem: str) -> None:
    assert "-----BEGIN" not in message
    for line in key_lines(secret_pem):
        assert line not in message, f"a line of the secret is in {message[:200]!r}"


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as caught:
        run(*args)
    return str(caught.value)


@pytest.mark.django_db
@pytest.mark.parametrize("command", ["add_firebase_app", "add_google_app"])
def test_a_refused_service_account_given_as_text_is_described_not_echoed(command: str) -> None:
    account = make_service_account("acme-phone", GOOGLE_TOKEN_URI)
    del account["client_email"]

    message = refused(command, "com.acme.phone", json.dumps(account, indent=2))

    assert "client_email" in message and "missing" in message
    assert_not_echoed(message, account["private_key"])
    assert not PushApp.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("command", ["add_firebase_app", "add_google_app"])
def test_a_service_account_given_as_text_is_accepted(command: str) -> None:
    account = make_service_account("acme-phone", GOOGLE_TOKEN_URI)

    out = run(command, "com.acme.phone", json.dumps(account))

    credential = PushApp.objects.get(app_id="com.acme.phone").credential
    assert credential.kind == CredentialKind.FCM_SERVICE_ACCOUNT and credential.project_id == "acme-phone"
    assert_not_echoed(out, account["private_key"])


@pytest.mark.django_db
def test_a_certificate_given_instead_of_its_path_is_not_echoed() -> None:
    cert_pem, key_pem = make_apns_certificate("com.acme.phone", voip=True)

    message = refused("add_apple_app", "com.acme.phone.voip.prod", cert_pem + key_pem)

    assert message.startswith("cannot read the argument given as a path") and "content" in message
    assert_not_echoed(message, cert_pem + key_pem)


@pytest.mark.django_db
def test_a_p8_key_given_instead_of_its_path_is_not_echoed() -> None:
    p8 = make_p8("leak")

    message = refused("add_apple_key", "com.acme.phone.voip.prod", p8, "--key-id", "ABC123DEFG",
                      "--team-id", TEAM_ID)

    assert "cannot read" in message
    assert_not_echoed(message, p8)


@pytest.mark.django_db
def test_a_p8_key_given_as_a_firebase_secret_is_not_echoed() -> None:
    p8 = make_p8("leak")

    message = refused("add_firebase_app", "com.acme.phone", p8)

    assert_not_echoed(message, p8)


@pytest.mark.django_db
def test_import_kazoo_config_given_the_document_instead_of_its_path_does_not_echo_it() -> None:
    cert_pem, key_pem = make_apns_certificate("com.acme.phone", voip=True)
    document = json.dumps({"com.acme.phone": {"apple": {"certificate": cert_pem + key_pem}}})

    message = refused("import_kazoo_config", document)

    assert_not_echoed(message, cert_pem + key_pem)


@pytest.mark.django_db
def test_a_nul_in_a_path_is_a_command_error_not_a_crash() -> None:
    assert "not a usable path" in refused("add_apple_app", "com.acme.phone.voip.prod", "/tmp/a\x00b.pem")
    assert "not a usable path" in refused("import_kazoo_config", "/tmp/a\x00b.json")


def test_an_ordinary_path_is_still_shown() -> None:
    assert path_shown("/etc/pusher/voip.pem") == "'/etc/pusher/voip.pem'"
    assert "content" in path_shown("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7")


@pytest.mark.parametrize(
    ("parse", "words"),
    [
        (lambda secret: parse_fcm_service_account(
            {**make_service_account("p-1", GOOGLE_TOKEN_URI), "type": secret}), "expected \"type\""),
        (lambda secret: parse_credential(secret, "data"), "unknown credential kind"),
    ],
)
def test_credential_errors_describe_a_misplaced_secret_without_quoting_it(parse: Any, words: str) -> None:
    secret = make_p8("misplaced")
    with pytest.raises(CredentialError) as caught:
        parse(secret)
    assert words in caught.value.message
    assert_not_echoed(caught.value.message, secret)
    # Short words are still named: they tell which file was uploaded by mistake.
    with pytest.raises(CredentialError, match="'authorized_user'"):
        parse_fcm_service_account({**make_service_account("p-1", GOOGLE_TOKEN_URI), "type": "authorized_user"})
