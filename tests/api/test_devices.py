"""/api/v1/devices/: read with full tokens, filters, edit, delete, test push and Kazoo sync actions."""

import pytest
from django.utils import timezone

from push.models import Delivery, PushApp
from registry.models import Device, PushToken, SyncStatus
from tests.api.conftest import REMOTE_TOKEN, VOIP_TOKEN

pytestmark = pytest.mark.django_db

URL = "/api/v1/devices/"


def test_retrieve_shows_push_object_and_full_tokens(seed, admin_api) -> None:
    device = admin_api.get(f"{URL}{seed.device.pk}/").json()
    assert device["push"]["Token-ID"] == VOIP_TOKEN and device["in_sync"] is True
    assert {(t["token"], t["kind"]) for t in device["tokens"]} == {(VOIP_TOKEN, "voip"), (REMOTE_TOKEN, "remote")}


def test_filters(seed, admin_api) -> None:
    other = Device.objects.create(account_id="acc2", device_id="dev2", username="bob", realm="Other.Example.com",
                                  sync_status=SyncStatus.FAILED)
    PushToken.objects.create(device=other, token="dead", token_type="apple", app="x", active=False,
                             last_seen_at=timezone.now())

    def ids(**params):
        return [d["device_id"] for d in admin_api.get(URL, params).json()["results"]]

    assert ids(account_id="acc2") == ["dev2"]
    assert ids(username="user_k3j4h5") == [seed.device.device_id]
    assert ids(realm="other.example.COM") == ["dev2"]
    assert ids(token=REMOTE_TOKEN) == [seed.device.device_id]
    assert ids(active="true") == [seed.device.device_id]
    assert ids(active="false") == ["dev2"]
    assert ids(in_sync="false") == ["dev2"]
    assert ids(sync_status="local") == [seed.device.device_id]
    assert admin_api.get(URL, {"in_sync": "maybe"}).status_code == 400


def test_test_push_through_the_real_path(seed, admin_api, apns_trusting_fake) -> None:
    fake_apns = apns_trusting_fake
    cert = fake_apns.ca.issue_client_cert("com.acme.phone", voip=True, topics=["com.acme.phone", "com.acme.phone.voip"])
    response = admin_api.patch(f"/api/v1/credentials/{seed.cert.pk}/", {"data": cert.pem}, format="json")
    assert response.status_code == 200
    PushApp.objects.filter(pk=seed.apple_app.pk).update(enabled=True, host=fake_apns.host, port=fake_apns.port)
    response = admin_api.post(f"{URL}{seed.device.pk}/push/")
    assert response.status_code == 200
    assert response.json()["status"] == "sent" and response.json()["http_status"] == 200
    (request,) = fake_apns.requests
    assert request.path == f"/3/device/{VOIP_TOKEN}" and request.headers["apns-push-type"] == "voip"
    assert Delivery.objects.get(pk=response.json()["id"]).source == "api"


def test_test_push_without_push_object(seed, admin_api) -> None:
    Device.objects.filter(pk=seed.device.pk).update(push=None)
    response = admin_api.post(f"{URL}{seed.device.pk}/push/")
    assert response.status_code == 400 and "no push object" in response.json()["message"]


def test_sync_when_kazoo_is_not_configured(seed, admin_api) -> None:
    response = admin_api.post(f"{URL}{seed.device.pk}/sync/")
    assert response.status_code == 200 and response.json()["sync_status"] == "local"


def test_sync_to_kazoo(seed, admin_api, fake_crossbar, settings) -> None:
    settings.KAZOO_CROSSBAR_URL = fake_crossbar.url
    settings.KAZOO_API_KEY = fake_crossbar.api_key
    response = admin_api.post(f"{URL}{seed.device.pk}/sync/")
    assert response.status_code == 200 and response.json()["sync_status"] == "synced"
    assert fake_crossbar.devices[(seed.device.account_id, seed.device.device_id)]["push"] == seed.device.push


def test_devices_are_created_by_registrations_only(seed, admin_api) -> None:
    assert admin_api.post(URL, {}, format="json").status_code == 405


def test_edit_corrects_username_and_realm_only(seed, admin_api) -> None:
    account = seed.device.account_id
    response = admin_api.patch(f"{URL}{seed.device.pk}/", {"realm": "new.example.com", "account_id": "other"},
                               format="json")
    assert response.status_code == 200 and response.json()["realm"] == "new.example.com"
    device = Device.objects.get(pk=seed.device.pk)
    # Identity is Kazoo's; the digest is cleared so the next REGISTER is written in full again.
    assert device.account_id == account and device.registration_digest == ""
    response = admin_api.put(f"{URL}{seed.device.pk}/", {"realm": "x.example.com"}, format="json")
    assert response.status_code == 400 and "username" in response.json()


def test_delete_forgets_the_device_and_its_tokens(seed, admin_api) -> None:
    assert admin_api.delete(f"{URL}{seed.device.pk}/").status_code == 204
    assert not Device.objects.exists() and not PushToken.objects.exists()
