"""FIELD_ENCRYPTION_KEY replaced without keeping the key the secrets were written with (the dev key
swapped for a production one, say): every page and list still answers, the credentials show as
unusable with the reason, a push through them fails as app_unusable, and a new secret replaces an
undecryptable one normally."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.urls import reverse

from core import fields
from push import services
from push.models import Credential, DeliveryStatus, PushApp
from tests.certs import make_service_account

pytestmark = pytest.mark.django_db

REASON = ("stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY "
          "(was the key changed without keeping the old one?)")
KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def keys(settings, *new: str) -> None:
    settings.FIELD_ENCRYPTION_KEY = list(new)
    fields._fernet.cache_clear()
    services.push_app_cache_clear()


@pytest.fixture
def key_changed(request, settings):
    """The seed's credentials (and the fake-APNs one) written under key A; then key B only."""
    keys(settings, KEY_A)
    seed = request.getfixturevalue("seed")
    fake = request.getfixturevalue("seed_on_fake_apns")
    keys(settings, KEY_B)
    yield seed, fake
    fields._fernet.cache_clear()


def test_pages_and_lists_still_answer(key_changed, admin_api, staff_client, client) -> None:
    seed, _ = key_changed
    app = PushApp.objects.get(pk=seed.apple_app.pk)
    for path in ("/api/v1/apps/", f"/api/v1/apps/{app.pk}/", "/api/v1/credentials/",
                 f"/api/v1/credentials/{app.credential_id}/", "/api/v1/deliveries/"):
        response = admin_api.get(path)
        assert response.status_code == 200, (path, response.content[:300])
    assert client.get("/metrics").status_code == 200
    assert 'pusher_credential_expiry_days{app="com.acme.phone.voip.prod"' in client.get("/metrics").content.decode()
    for url in (
        reverse("admin:index"),
        reverse("pusher-dashboard"),
        reverse("pusher-dashboard") + "?fragment=summary",
        reverse("admin:push_credential_changelist"),
        reverse("admin:push_credential_change", args=[seed.cert.pk]),
        reverse("admin:push_pushapp_changelist"),
        reverse("admin:push_pushapp_change", args=[app.pk]),
        reverse("admin:push_delivery_changelist"),
    ):
        response = staff_client.get(url)
        assert response.status_code == 200, (url, response.status_code)


def test_credentials_show_as_unusable_with_the_reason(key_changed, admin_api, staff_client) -> None:
    seed, _ = key_changed
    credential = Credential.objects.get(pk=seed.cert.pk)
    assert not credential.secret_readable and credential.cannot_send_reason() == REASON
    assert seed.cert.name not in credential.secret and "fernet:" not in credential.secret  # a placeholder only

    listed = {c["name"]: c for c in admin_api.get("/api/v1/credentials/").json()["results"]}
    assert set(listed) >= {"acme voip cert", "acme p8", "acme fcm", "fake"}
    for answer in listed.values():
        assert answer["usable"] is False and answer["unusable_reason"] == REASON
    app = admin_api.get(f"/api/v1/apps/{seed.apple_app.pk}/").json()
    assert app["credential"]["usable"] is False

    html = staff_client.get(reverse("admin:push_credential_change", args=[seed.cert.pk])).content.decode()
    assert REASON in html and "PRIVATE KEY" not in html
    changelist = staff_client.get(reverse("admin:push_credential_changelist")).content.decode()
    assert 'alt="False"' in changelist and 'alt="True"' not in changelist


def test_a_push_through_an_undecryptable_credential_is_app_unusable(key_changed, admin_api) -> None:
    seed, fake = key_changed
    fields_ = {"Token-ID": "ab" * 32, "Token-Type": "apple", "Token-App": seed.apple_app.app_id,
               "Call-ID": "after-key-change", "Msg-ID": "after-key-change-1"}
    delivery = services.push_request_handle(fields=fields_, source="api")
    assert delivery.status == DeliveryStatus.FAILED and delivery.reason == "app_unusable"
    assert delivery.error == REASON

    answer = admin_api.post("/api/v1/push/", {**fields_, "Msg-ID": "after-key-change-2"}, format="json").json()
    assert answer["status"] == "failed" and answer["reason"] == "app_unusable" and answer["error"] == REASON
    assert fake.requests == []


def test_a_new_secret_replaces_an_undecryptable_one(key_changed, admin_api, settings) -> None:
    seed, _ = key_changed
    account = make_service_account("acme-phone", "https://127.0.0.1:9/token")
    response = admin_api.patch(f"/api/v1/credentials/{seed.service_account.pk}/",
                               {"kind": "fcm_service_account", "data": account}, format="json")
    assert response.status_code == 200 and response.json()["usable"] is True
    credential = Credential.objects.get(pk=seed.service_account.pk)
    assert credential.secret_readable and credential.cannot_send_reason() == ""
    assert '"private_key"' in credential.secret  # written under key B, read back with it

    # Renaming one that stays undecryptable keeps its ciphertext: the old key still recovers it.
    assert admin_api.patch(f"/api/v1/credentials/{seed.p8.pk}/", {"name": "renamed p8"},
                           format="json").status_code == 200
    keys(settings, KEY_B, KEY_A)
    recovered = Credential.objects.get(pk=seed.p8.pk)
    assert recovered.name == "renamed p8" and recovered.secret_readable and "PRIVATE KEY" in recovered.secret


def test_changing_a_token_keys_ids_needs_the_key_again(key_changed, admin_api) -> None:
    seed, _ = key_changed
    response = admin_api.patch(f"/api/v1/credentials/{seed.p8.pk}/", {"key_id": "ZYXWV98765"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "credential_invalid"
    assert REASON in response.json()["message"]
