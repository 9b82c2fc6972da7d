"""The admin as an operator uses it: every page renders, credentials upload and never come back out."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import models
from django.urls import reverse
from django.utils import timezone

from push import services
from push.models import Credential, CredentialKind, Delivery, DeliverySource, DeliveryStatus, Provider, PushApp
from registry.models import Device, PushToken, SyncStatus, TokenReporter, UserAgentRule
from registry.reporting import token_reporter_create
from tests.certs import TEAM_ID, make_apns_certificate, make_p8, make_p12, make_service_account

BUNDLE = "com.example.adminphone"
TOKEN = "5f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
RED = '<strong style="color:#ba2121">'
REPORTER_SECRET = "admin-pages-SECRET-0123456789ab"

pytestmark = pytest.mark.django_db


def secret_lines(secret: str) -> list[str]:
    """Every line of a PEM/JSON secret long enough to be recognisable if it leaked."""
    return [line.strip() for line in secret.splitlines() if len(line.strip()) >= 16 and "-----" not in line]


def assert_no_secret(html: str, *secrets: str) -> None:
    assert "PRIVATE KEY" not in html
    assert "BEGIN CERTIFICATE" not in html
    for secret in secrets:
        for line in secret_lines(secret):
            assert line not in html


def page(response) -> str:
    return response.content.decode()


# --- Factories -------------------------------------------------------------------------------------


def credential_factory(name: str = "voip cert", *, bundle: str = BUNDLE, **cert_kwargs: object) -> Credential:
    cert_pem, key_pem = make_apns_certificate(bundle, voip=True, **cert_kwargs)
    parsed = services.credential_parse(kind=CredentialKind.APNS_CERTIFICATE, data=cert_pem + key_pem)
    return services.credential_save(name=name, parsed=parsed)


def push_app_factory(credential: Credential | None = None, **kwargs: object) -> PushApp:
    values: dict[str, object] = {"app_id": f"{BUNDLE}.prod", "provider": Provider.APPLE, "credential": credential}
    values.update(kwargs)
    return PushApp.objects.create(**values)


def device_factory(**kwargs: object) -> Device:
    values: dict[str, object] = {
        "account_id": "4fd0ba7a2f5e3c4d8e9f0a1b2c3d4e5f",
        "device_id": "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d",
        "username": "user_1001",
        "realm": "acme.sip.example.com",
        "push": {"Token-ID": TOKEN, "Token-Type": "apple", "Token-App": f"{BUNDLE}.prod"},
        "push_changed_at": timezone.now(),
        "rule_name": "Acme softphone",
        "sync_status": SyncStatus.LOCAL,
        "last_user_agent": "AcmePhone/2.1 (iPhone; iOS 17.4)",
        "last_registration_at": timezone.now(),
        "last_seen_at": timezone.now(),
    }
    values.update(kwargs)
    return Device.objects.create(**values)


def push_token_factory(device: Device, **kwargs: object) -> PushToken:
    values: dict[str, object] = {
        "token": TOKEN, "token_type": "apple", "app": f"{BUNDLE}.prod", "kind": "voip", "last_seen_at": timezone.now(),
    }
    values.update(kwargs)
    return PushToken.objects.create(device=device, **values)


def rule_factory(name: str = "Acme softphone", position: int = 100, **kwargs: object) -> UserAgentRule:
    values: dict[str, object] = {
        "regex": "^AcmePhone/",
        "properties": {"Token-ID": "pn-tok", "Token-Type": "pn-type", "Token-App": "app-id"},
    }
    values.update(kwargs)
    return UserAgentRule.objects.create(name=name, position=position, **values)


def delivery_factory(app: PushApp | None = None, **kwargs: object) -> Delivery:
    values: dict[str, object] = {
        "source": DeliverySource.AMQP,
        "msg_id": "msg-0001",
        "call_id": "call-0001@acme",
        "account_id": "4fd0ba7a2f5e3c4d8e9f0a1b2c3d4e5f",
        "device_id": "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d",
        "push_app": app,
        "app_id": f"{BUNDLE}.prod",
        "provider": Provider.APPLE,
        "token": TOKEN,
        "token_type": "apple",
        "push_type": "voip",
        "status": DeliveryStatus.SENT,
        "http_status": 200,
        "attempts": 1,
        "latency_ms": 42.0,
        "finished_at": timezone.now(),
    }
    values.update(kwargs)
    return Delivery.objects.create(**values)


@pytest.fixture
def one_of_each() -> dict[type[models.Model], models.Model]:
    credential = credential_factory()
    app = push_app_factory(credential)
    device = device_factory()
    return {
        Credential: credential,
        PushApp: app,
        Device: device,
        PushToken: push_token_factory(device),
        UserAgentRule: rule_factory(),
        Delivery: delivery_factory(app),
        TokenReporter: token_reporter_create(slug="groundwire", secret=REPORTER_SECRET, fixed={"Token-Type": "apple"}),
    }


def admin_url(model: type[models.Model], view: str, *args: object) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


# --- Every page renders ----------------------------------------------------------------------------


def test_admin_index_renders(staff_client) -> None:
    response = staff_client.get(reverse("admin:index"))
    assert response.status_code == 200
    for model in (Credential, PushApp, Delivery, Device, PushToken, UserAgentRule, TokenReporter):
        assert admin_url(model, "changelist") in page(response)


def test_every_changelist_and_add_page_renders(staff_client, rf, staff_user, one_of_each) -> None:
    assert set(one_of_each) <= set(admin.site._registry)
    for model, model_admin in admin.site._registry.items():
        response = staff_client.get(admin_url(model, "changelist"))
        assert response.status_code == 200, f"{model.__name__} changelist: {response.status_code}"

        request = rf.get("/")
        request.user = staff_user
        if not model_admin.has_add_permission(request):
            continue
        response = staff_client.get(admin_url(model, "add"))
        assert response.status_code == 200, f"{model.__name__} add page: {response.status_code}"


def test_every_change_page_renders(staff_client, one_of_each) -> None:
    for model in admin.site._registry:
        obj = one_of_each.get(model) or model._default_manager.first()
        if obj is None:  # a model of another app with no row here (a token, a group)
            continue
        response = staff_client.get(admin_url(model, "change", obj.pk))
        assert response.status_code == 200, f"{model.__name__} change page: {response.status_code}"
        assert REPORTER_SECRET not in page(response)


def test_changelist_search_and_filters_render(staff_client, one_of_each) -> None:
    for model in one_of_each:
        response = staff_client.get(admin_url(model, "changelist"), {"q": "acme"})
        assert response.status_code == 200, f"{model.__name__} search: {response.status_code}"
    filters = {"status__exact": "sent", "provider__exact": "apple"}
    response = staff_client.get(admin_url(Delivery, "changelist"), filters)
    assert response.status_code == 200
    assert f"{BUNDLE}.prod (apple)" in page(response)


def test_device_change_page_shows_masked_tokens(staff_client, one_of_each) -> None:
    response = staff_client.get(admin_url(Device, "change", one_of_each[Device].pk))

    html = page(response)
    assert "5f1e2d…e1f0" in html
    assert "AcmePhone/2.1" in html


# --- Credentials: upload, parsed facts, no secret back -------------------------------------------


def post_credential(staff_client, data: bytes, *, name: str = "uploaded cert", filename: str = "apns.pem",
                    kind: str = CredentialKind.APNS_CERTIFICATE, **extra: str):
    form = {
        "name": name, "kind": kind, "key_id": "", "team_id": "", "pasted": "", "password": "",
        "upload": SimpleUploadedFile(filename, data, content_type="application/x-pem-file"),
    }
    form.update(extra)
    return staff_client.post(admin_url(Credential, "add"), form)


def test_credential_upload_creates_it_and_shows_facts_not_secret(staff_client) -> None:
    not_after = (datetime.now(UTC) + timedelta(days=200)).replace(microsecond=0)
    cert_pem, key_pem = make_apns_certificate(BUNDLE, voip=True, not_after=not_after)

    response = post_credential(staff_client, (cert_pem + key_pem).encode())

    assert response.status_code == 302, page(response)
    credential = Credential.objects.get(name="uploaded cert")
    assert credential.kind == CredentialKind.APNS_CERTIFICATE
    assert "-----BEGIN PRIVATE KEY-----" in credential.secret

    response = staff_client.get(admin_url(Credential, "change", credential.pk))
    assert response.status_code == 200
    html = page(response)
    assert f"UID={BUNDLE}" in html
    assert f"{BUNDLE}.voip" in html
    assert f"{not_after:%Y-%m-%d}" in html
    assert credential.fingerprint_sha256 in html
    assert_no_secret(html, cert_pem, key_pem)

    # The changelist and the confirmation message do not give it back either.
    assert_no_secret(page(staff_client.get(admin_url(Credential, "changelist"))), cert_pem, key_pem)


def test_credential_paste_of_a_token_key(staff_client) -> None:
    p8 = make_p8("admin")
    response = staff_client.post(admin_url(Credential, "add"), {
        "name": "p8", "kind": CredentialKind.APNS_TOKEN, "key_id": "ABCDE12345", "team_id": TEAM_ID,
        "pasted": p8, "password": "",
    })

    assert response.status_code == 302, page(response)
    credential = Credential.objects.get(name="p8")
    assert (credential.key_id, credential.team_id) == ("ABCDE12345", TEAM_ID)
    assert_no_secret(page(staff_client.get(admin_url(Credential, "change", credential.pk))), p8)


def test_credential_upload_of_a_p12_with_its_password(staff_client) -> None:
    cert_pem, key_pem = make_apns_certificate(BUNDLE, voip=True)
    p12 = make_p12(cert_pem, key_pem, "keychain-pass")

    wrong = post_credential(staff_client, p12, filename="apns.p12", password="nope")
    assert wrong.status_code == 200
    assert "wrong password" in page(wrong)
    assert not Credential.objects.exists()

    response = post_credential(staff_client, p12, filename="apns.p12", password="keychain-pass")

    assert response.status_code == 302, page(response)
    credential = Credential.objects.get()
    assert f"UID={BUNDLE}" in credential.subject
    # Stored as PEM: the sender never needs the .p12 password, so it is not kept.
    assert "keychain-pass" not in credential.secret
    html = page(staff_client.get(admin_url(Credential, "change", credential.pk)))
    assert_no_secret(html, cert_pem, key_pem)
    assert "keychain-pass" not in html


def test_credential_upload_of_a_service_account(staff_client) -> None:
    info = make_service_account("pusher-admin-upload", "https://oauth2.googleapis.com/token")

    response = post_credential(staff_client, json.dumps(info).encode(), name="fcm", filename="sa.json",
                               kind=CredentialKind.FCM_SERVICE_ACCOUNT)

    assert response.status_code == 302, page(response)
    credential = Credential.objects.get(name="fcm")
    html = page(staff_client.get(admin_url(Credential, "change", credential.pk)))
    assert "pusher-admin-upload" in html
    assert info["client_email"] in html
    assert_no_secret(html, info["private_key"])


def test_credential_edit_without_a_new_secret_keeps_the_stored_one(staff_client) -> None:
    credential = credential_factory("before")
    secret = credential.secret

    response = staff_client.post(admin_url(Credential, "change", credential.pk), {
        "name": "after", "kind": CredentialKind.APNS_CERTIFICATE, "key_id": "", "team_id": "", "pasted": "",
        "password": "",
    })

    assert response.status_code == 302, page(response)
    credential.refresh_from_db()
    assert credential.name == "after"
    assert credential.secret == secret


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x01this is not a certificate\xff" * 20, "not a PEM certificate"),
        ("cert-only", "no private key"),
        ("key-only", "no certificate"),
        ("other-key", "does not belong to the certificate"),
    ],
)
def test_broken_upload_shows_an_error_and_creates_nothing(staff_client, data: bytes | str, message: str) -> None:
    cert_pem, key_pem = make_apns_certificate(BUNDLE)
    _, other_key = make_apns_certificate("com.example.other")
    if data == "cert-only":
        data = cert_pem.encode()
    elif data == "key-only":
        data = key_pem.encode()
    elif data == "other-key":
        data = (cert_pem + other_key).encode()

    response = post_credential(staff_client, data)

    assert response.status_code == 200
    html = page(response)
    assert "errornote" in html
    assert message in html
    assert not Credential.objects.exists()
    assert_no_secret(html, cert_pem, key_pem, other_key)


def test_credential_add_without_a_secret_is_refused(staff_client) -> None:
    response = staff_client.post(admin_url(Credential, "add"), {
        "name": "empty", "kind": CredentialKind.APNS_CERTIFICATE, "key_id": "", "team_id": "", "pasted": "",
        "password": "",
    })

    assert response.status_code == 200
    assert "Upload a file or paste the credential." in page(response)
    assert not Credential.objects.exists()


def test_a_certificate_expiring_soon_is_highlighted(staff_client) -> None:
    credential_factory("expiring", bundle="com.example.soon", not_after=datetime.now(UTC) + timedelta(days=10, hours=1))
    credential_factory("fine", bundle="com.example.fine", not_after=datetime.now(UTC) + timedelta(days=300))

    html = page(staff_client.get(admin_url(Credential, "changelist")))

    highlighted = re.findall(re.escape(RED) + r"([^<]*)</strong>", html)
    assert len(highlighted) == 1
    assert "(10 days)" in highlighted[0]
    assert "(299 days)" in html or "(300 days)" in html


def test_credential_changelist_never_shows_secret_material(staff_client) -> None:
    secrets = []
    cert_pem, key_pem = make_apns_certificate(BUNDLE, voip=True)
    services.credential_save(name="cert", parsed=services.credential_parse(
        kind=CredentialKind.APNS_CERTIFICATE, data=cert_pem + key_pem))
    secrets += [cert_pem, key_pem]
    p8 = make_p8("list")
    services.credential_save(name="p8", parsed=services.credential_parse(
        kind=CredentialKind.APNS_TOKEN, data=p8, key_id="ABCDE12345", team_id=TEAM_ID))
    secrets.append(p8)
    info = make_service_account("pusher-admin-test", "https://oauth2.googleapis.com/token")
    services.credential_save(name="sa", parsed=services.credential_parse(
        kind=CredentialKind.FCM_SERVICE_ACCOUNT, data=json.dumps(info)))
    secrets.append(info["private_key"])
    legacy = "AAAAlegacyServerKey0123456789:APA91bHunabcdefghijklmnop"
    services.credential_save(name="legacy", parsed=services.credential_parse(
        kind=CredentialKind.FCM_LEGACY_KEY, data=legacy))

    for query in ({}, {"q": "a"}, {"o": "4"}):
        html = page(staff_client.get(admin_url(Credential, "changelist"), query))
        assert_no_secret(html, *secrets)
        assert legacy not in html
    html = page(staff_client.get(admin_url(Credential, "changelist")))
    for name in ("cert", "p8", "sa", "legacy"):
        assert f">{name}</a>" in html
    for credential in Credential.objects.all():
        html = page(staff_client.get(admin_url(Credential, "change", credential.pk)))
        assert_no_secret(html, *secrets)
        assert legacy not in html


# --- Other admins ----------------------------------------------------------------------------------


def test_user_agent_rules_changelist_lists_in_position_order(staff_client) -> None:
    rule_factory("Zoiper", position=30, regex="^Z")
    rule_factory("Linphone", position=10, regex="^L")
    rule_factory("Bria", position=20, regex="^B")
    rule_factory("Acrobits", position=20, regex="^A")

    html = page(staff_client.get(admin_url(UserAgentRule, "changelist")))

    positions = [html.index(f">{name}</a>") for name in ("Linphone", "Acrobits", "Bria", "Zoiper")]
    assert positions == sorted(positions)


def test_delivery_admin_is_read_only(staff_client, one_of_each) -> None:
    delivery = one_of_each[Delivery]

    assert staff_client.get(admin_url(Delivery, "add")).status_code == 403
    assert staff_client.post(admin_url(Delivery, "add"), {"status": "sent"}).status_code == 403

    response = staff_client.get(admin_url(Delivery, "change", delivery.pk))
    assert response.status_code == 200
    html = page(response)
    assert 'name="_save"' not in html
    assert "5f1e2d…e1f0" in html
    assert TOKEN not in html

    staff_client.post(admin_url(Delivery, "change", delivery.pk), {"status": "failed", "reason": "edited"})
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason) == (DeliveryStatus.SENT, "")


def test_delivery_changelist_masks_tokens(staff_client, one_of_each) -> None:
    html = page(staff_client.get(admin_url(Delivery, "changelist")))
    assert "5f1e2d…e1f0" in html
    assert TOKEN not in html


@pytest.mark.parametrize("path", ["/admin/", "/admin/push/credential/", "/admin/push/delivery/"])
def test_anonymous_user_is_sent_to_login(client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert f"next={path}" in response["Location"]


# --- Rough edges (issue 13) ------------------------------------------------------------------------


def test_push_tokens_cannot_be_added_or_deleted_only_deactivated(staff_client, one_of_each) -> None:
    token = one_of_each[PushToken]
    assert staff_client.get(admin_url(PushToken, "add")).status_code == 403
    assert staff_client.get(admin_url(PushToken, "delete", token.pk)).status_code == 403
    html = page(staff_client.get(admin_url(PushToken, "changelist")))
    assert admin_url(PushToken, "add") not in html and 'value="delete_selected"' not in html
    assert 'value="deactivate"' in html and 'value="reactivate"' in html
    change = page(staff_client.get(admin_url(PushToken, "change", token.pk)))
    assert 'name="_save"' not in change and TOKEN not in change and "5f1e2d…e1f0" in change


def test_the_delivery_log_cannot_be_deleted_from(staff_client, one_of_each) -> None:
    delivery = one_of_each[Delivery]
    assert staff_client.get(admin_url(Delivery, "delete", delivery.pk)).status_code == 403
    html = page(staff_client.get(admin_url(Delivery, "changelist")))
    assert 'value="delete_selected"' not in html
    staff_client.post(admin_url(Delivery, "changelist"), {"action": "delete_selected", "_selected_action": [
        delivery.pk], "post": "yes"})
    assert Delivery.objects.filter(pk=delivery.pk).exists()


def test_a_devices_identity_and_digest_are_read_only(staff_client, one_of_each) -> None:
    html = page(staff_client.get(admin_url(Device, "change", one_of_each[Device].pk)))
    for name in ("account_id", "device_id", "registration_digest"):
        assert f'name="{name}"' not in html
    for name in ("username", "realm"):
        assert f'name="{name}"' in html
    assert staff_client.get(admin_url(Device, "add")).status_code == 403


def test_a_credentials_page_lists_the_apps_using_it(staff_client, one_of_each) -> None:
    credential, app = one_of_each[Credential], one_of_each[PushApp]
    html = page(staff_client.get(admin_url(Credential, "change", credential.pk)))
    assert f'<a href="{admin_url(PushApp, "change", app.pk)}">{app}</a>' in html

    unused = credential_factory("unused")
    assert "no push app" in page(staff_client.get(admin_url(Credential, "change", unused.pk)))


def test_delivery_latency_is_readable_and_the_list_fits(staff_client, one_of_each) -> None:
    delivery_factory(msg_id="msg-slow", latency_ms=18370.654821395874)
    assert admin.site._registry[Delivery].list_display == [
        "created_at", "status", "app_shown", "token_masked", "reason", "latency"]

    html = page(staff_client.get(admin_url(Delivery, "changelist")))
    assert "18.4 s" in html and "42 ms" in html
    assert "18370.6" not in html and "call-0001@acme" not in html  # on the detail page instead
    detail = page(staff_client.get(admin_url(Delivery, "change", one_of_each[Delivery].pk)))
    assert "call-0001@acme" in detail and "42 ms" in detail


def test_the_admin_is_titled_pusher_and_links_the_dashboard(staff_client) -> None:
    assert (admin.site.site_header, admin.site.site_title, admin.site.index_title) == ("pusher",) * 3
    for url in (reverse("admin:index"), admin_url(PushApp, "changelist")):
        html = page(staff_client.get(url))
        assert "Django administration" not in html and "Django site admin" not in html
        assert '<div id="user-tools">' in html
        user_tools = html[html.index('<div id="user-tools">'):]
        assert f'<a href="{reverse("pusher-dashboard")}">Dashboard</a>' in user_tools[:2000]
