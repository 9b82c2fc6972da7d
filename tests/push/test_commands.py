"""The push app's management commands: Kazoo's add_*_app family, add_apple_key and the test `push`."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from push import services
from push.models import Credential, CredentialKind, Delivery, DeliverySource, DeliveryStatus, Provider, PushApp
from registry.models import PushToken
from tests.certs import TEAM_ID, make_apns_certificate, make_p8, make_p12, make_service_account
from tests.fakes.apns import Answer
from tests.fixtures import sample

pytestmark = pytest.mark.django_db

REG = sample("reg_success_kamailio_master.json")["body"]
ACCOUNT = REG["Custom-Channel-Vars"]["Account-ID"]
DEVICE = REG["Custom-Channel-Vars"]["Authorizing-ID"]
APP = "com.acme.phone.voip.prod"
KEY_ID = "ABC123DEFG"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def apple_app_on_fake(apns_trusting_fake, tmp_path):
    fake = apns_trusting_fake
    cert = fake.ca.issue_client_cert("com.acme.phone", voip=True)
    path = tmp_path / "voip.pem"
    path.write_text(cert.pem)
    run("add_apple_app", APP, str(path), fake.host)
    return services.push_app_upsert(app_id=APP, provider=Provider.APPLE, port=fake.port)


# --- add_apple_app ------------------------------------------------------------------------------


def test_add_apple_app_with_a_kazoo_pem(tmp_path):
    cert_pem, key_pem = make_apns_certificate("com.acme.phone", voip=True)
    path = tmp_path / "cert.pem"
    path.write_text(cert_pem + key_pem)

    out = run("add_apple_app", APP, str(path))

    app = PushApp.objects.select_related("credential").get(app_id=APP, provider=Provider.APPLE)
    assert app.host == services.APNS_PRODUCTION_HOST and app.enabled
    assert app.credential.kind == CredentialKind.APNS_CERTIFICATE
    assert "com.acme.phone.voip" in app.credential.topics
    assert "com.acme.phone.voip" in out and "stored" in out
    assert "PRIVATE KEY" not in out

    # Running it again with the same file changes nothing and stores nothing twice.
    run("add_apple_app", APP, str(path))
    assert Credential.objects.count() == 1 and PushApp.objects.count() == 1


def test_add_apple_app_with_a_host_and_a_renewed_certificate(tmp_path):
    first, key = make_apns_certificate("com.acme.phone", voip=True)
    path = tmp_path / "cert.pem"
    path.write_text(first + key)
    run("add_apple_app", APP, str(path), services.APNS_SANDBOX_HOST)
    old = PushApp.objects.get(app_id=APP).credential

    renewed, key = make_apns_certificate("com.acme.phone", voip=True)
    path.write_text(renewed + key)
    run("add_apple_app", APP, str(path), services.APNS_SANDBOX_HOST)

    app = PushApp.objects.select_related("credential").get(app_id=APP)
    assert app.host == services.APNS_SANDBOX_HOST
    # Renewal replaces the secret of the app's credential in place: no orphan left behind.
    assert app.credential.pk == old.pk and app.credential.fingerprint_sha256 != old.fingerprint_sha256
    assert Credential.objects.count() == 1


def test_add_apple_app_with_a_p12(tmp_path):
    cert_pem, key_pem = make_apns_certificate("com.acme.p12", voip=True)
    path = tmp_path / "cert.p12"
    path.write_bytes(make_p12(cert_pem, key_pem, "s3cret"))

    with pytest.raises(CommandError, match="password"):
        run("add_apple_app", "com.acme.p12.prod", str(path))
    assert not PushApp.objects.exists()

    run("add_apple_app", "com.acme.p12.prod", str(path), "--password", "s3cret")
    assert PushApp.objects.get().credential.kind == CredentialKind.APNS_CERTIFICATE


def test_add_apple_app_refuses_unreadable_and_placeholder_files(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        run("add_apple_app", APP, str(tmp_path / "missing.pem"))
    path = tmp_path / "placeholder.pem"
    path.write_text("<PEM cert + unencrypted key>")
    with pytest.raises(CommandError, match="PKCS#12"):
        run("add_apple_app", APP, str(path))
    assert not PushApp.objects.exists() and not Credential.objects.exists()


def test_add_apple_app_warns_when_the_certificate_does_not_cover_the_app(tmp_path):
    cert_pem, key_pem = make_apns_certificate("com.other.app", voip=True)
    path = tmp_path / "cert.pem"
    path.write_text(cert_pem + key_pem)
    out = run("add_apple_app", APP, str(path))
    assert "TopicDisallowed" in out


# --- add_apple_key ------------------------------------------------------------------------------


def test_add_apple_key_is_shared_by_the_apps_of_a_team(tmp_path):
    path = tmp_path / f"AuthKey_{KEY_ID}.p8"
    path.write_text(make_p8("team-key"))

    out = run("add_apple_key", APP, str(path), "--key-id", KEY_ID, "--team-id", TEAM_ID)
    run("add_apple_key", "com.acme.other.voip.dev", str(path), "--key-id", KEY_ID, "--team-id", TEAM_ID,
        "--sandbox", "--topic", "com.acme.other")

    (credential,) = Credential.objects.all()
    assert credential.kind == CredentialKind.APNS_TOKEN
    assert (credential.key_id, credential.team_id) == (KEY_ID, TEAM_ID)
    prod, dev = PushApp.objects.order_by("app_id").reverse()
    assert {prod.credential_id, dev.credential_id} == {credential.pk}
    assert prod.app_id == APP and prod.host == services.APNS_PRODUCTION_HOST
    assert dev.host == services.APNS_SANDBOX_HOST == "api.sandbox.push.apple.com" and dev.topic == "com.acme.other"
    assert KEY_ID in out and "stored" in out


def test_add_apple_key_refuses_a_bad_key_id(tmp_path):
    path = tmp_path / "AuthKey.p8"
    path.write_text(make_p8())
    with pytest.raises(CommandError, match="key id"):
        run("add_apple_key", APP, str(path), "--key-id", "short", "--team-id", TEAM_ID)


# --- add_firebase_app / add_google_app ----------------------------------------------------------


@pytest.mark.parametrize("command", ["add_firebase_app", "add_google_app"])
def test_add_firebase_app_with_a_service_account_file(command, tmp_path):
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(make_service_account("acme-phone", "https://oauth2.googleapis.com/token")))

    out = run(command, "com.acme.phone", str(path))

    app = PushApp.objects.select_related("credential").get(app_id="com.acme.phone", provider=Provider.FIREBASE)
    assert app.credential.kind == CredentialKind.FCM_SERVICE_ACCOUNT and app.credential.usable
    assert app.credential.project_id == "acme-phone" and "acme-phone" in out
    assert "private_key" not in out


@pytest.mark.parametrize("command", ["add_firebase_app", "add_google_app"])
def test_add_firebase_app_with_a_legacy_key_string(command):
    out = run(command, "com.acme.phone", "AAAAx1y2z3:APA91bLegacyServerKey")

    credential = PushApp.objects.get(app_id="com.acme.phone").credential
    assert credential.kind == CredentialKind.FCM_LEGACY_KEY and credential.usable is False
    assert "warning:" in out and "legacy" in out and "cannot send" in out


def test_add_firebase_app_refuses_a_mistyped_path():
    with pytest.raises(CommandError, match="no such file"):
        run("add_firebase_app", "com.acme.phone", "/etc/pusher/missing-service-account.json")
    assert not PushApp.objects.exists()


# --- push (Kazoo 4.3's test push) ---------------------------------------------------------------


@pytest.mark.usefixtures("registered_device", "apple_app_on_fake")
def test_push_sends_kazoo_style_test_push_to_the_device():
    out = run("push", ACCOUNT, DEVICE)

    assert "status: sent" in out and "HTTP status: 200" in out and "apns-id: " in out and "latency: " in out
    delivery = Delivery.objects.get()
    assert delivery.source == DeliverySource.COMMAND and delivery.status == DeliveryStatus.SENT
    assert (delivery.account_id, delivery.device_id) == (ACCOUNT, DEVICE)


@pytest.mark.usefixtures("apple_app_on_fake")
def test_push_request_is_shaped_like_kamailios(registered_device, apns_trusting_fake):
    run("push", ACCOUNT, DEVICE)

    (request,) = apns_trusting_fake.requests
    push = registered_device.push
    assert request.path == f"/3/device/{push['Token-ID']}"
    assert request.headers["apns-topic"] == "com.acme.phone.voip" and request.headers["apns-push-type"] == "voip"
    body: dict[str, Any] = request.body
    assert body["aps"]["alert"] == {"loc-key": "IC_SIL", "loc-args": ["15555555555"]}
    assert body["aps"]["sound"] == "ring.caf" and body["aps"]["call-id"] == body["call-id"]
    assert body["proxy"] == push["Token-Proxy"] == REG["Proxy-Path"]
    assert (body["caller-id-number"], body["caller-id-name"]) == ("15555555555", "this is a push test")
    assert body["registration-token"] and body["utc_unix_timestamp_ms"]


@pytest.mark.usefixtures("apple_app_on_fake")
def test_push_reports_a_dead_token_and_fails(registered_device, apns_trusting_fake):
    apns_trusting_fake.set_default(Answer.unregistered())

    with pytest.raises(CommandError, match="not delivered"):
        run("push", ACCOUNT, DEVICE)

    assert Delivery.objects.get().status == DeliveryStatus.TOKEN_INVALID
    assert not PushToken.objects.get(token=registered_device.push["Token-ID"]).active


def test_push_to_a_device_without_push_object(registered_device):
    registered_device.push = None
    registered_device.save()
    with pytest.raises(CommandError, match="no push object"):
        run("push", ACCOUNT, DEVICE)
    with pytest.raises(CommandError, match="unknown device"):
        run("push", ACCOUNT, "0" * 32)
    assert not Delivery.objects.exists()


def test_add_apple_key_takes_the_port_as_an_option(tmp_path):
    path = tmp_path / "AuthKey.p8"
    path.write_text(make_p8("port"))
    run("add_apple_key", APP, str(path), "--key-id", KEY_ID, "--team-id", TEAM_ID, "--port", "2197")
    assert PushApp.objects.values_list("host", "port").get() == (services.APNS_PRODUCTION_HOST, 2197)
    with pytest.raises(CommandError, match="port"):
        run("add_apple_key", APP, str(path), "--key-id", KEY_ID, "--team-id", TEAM_ID, "--port", "70000")
