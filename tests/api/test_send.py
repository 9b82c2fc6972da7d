"""/api/v1/send: kazoo-configs-kamailio's push-notifications-role.cfg HTTP push service.

The bodies below are byte for byte what the cfg's NEWCALL_PUSH and MISSED_CALL_PUSH routes build
(string concatenation, `"` stripped from the display name)."""

import base64
import json

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from push.models import Delivery, Provider, PushApp
from push.services import credential_parse, credential_save
from registry.models import Device, PushToken
from tests.api.conftest import AOR, REMOTE_TOKEN, VOIP_TOKEN

pytestmark = pytest.mark.django_db

URL = "/api/v1/send"
CALL_ID = "0ba2cf53-9a78-41de-8fe6-f2e5bb4d8a1f"


def newcall_body(aor: str = AOR) -> str:
    # route[NEWCALL_PUSH], with an Alert-Info header present.
    return ('{"name":"' + aor + '", "app_name":"com.acme.phone", "expiry":20, "type":"incoming_call", '
            '"silent":true, "payload":{"remote_name":"Alice Smith", "remote_number":"+15551234567", '
            '"local_number":"' + aor + '", "inception_number":"", "token_proxy":"sip:203.0.113.10:5060", '
            '"push_id":"' + CALL_ID + '", "ring_tone":"<http://example.com/ring.wav>"}}')


def missed_body(aor: str = AOR) -> str:
    # route[MISSED_CALL_PUSH].
    return ('{"name":"' + aor + '", "app_name":"com.acme.phone", "type":"missed_call", "mutable":true, '
            '"sound":"default", "text":"Missed call from +15551234567", "payload":{"remote_name":"Alice Smith", '
            '"remote_number":"+15551234567", "local_number":"' + aor + '","push_id":"' + CALL_ID + '"}}')


def post(api, body: str):
    return api.post(URL, body, content_type="application/json")


@pytest.fixture
def apple_apps(seed, seed_on_fake_apns):
    """The VoIP app (Kazoo-style app id) and the bundle's own app, both on the fake APNs."""
    fake = seed_on_fake_apns
    PushApp.objects.create(app_id="com.acme.phone", provider=Provider.APPLE,
                           credential=PushApp.objects.get(pk=seed.apple_app.pk).credential, host=fake.host,
                           port=fake.port)
    return fake


def test_incoming_call_is_a_voip_push_to_the_voip_token(apple_apps, admin_api) -> None:
    response = post(admin_api, newcall_body())
    assert response.status_code == 200, response.json()
    answer = response.json()
    assert answer["code"] == "sent" and answer["sent"] == 1 and answer["type"] == "incoming_call"
    (request,) = apple_apps.requests
    assert request.path == f"/3/device/{VOIP_TOKEN}"
    assert request.headers["apns-push-type"] == "voip" and request.headers["apns-topic"] == "com.acme.phone.voip"
    body = request.body
    assert body["push_id"] == CALL_ID and body["call-id"] == CALL_ID and body["type"] == "incoming_call"
    assert body["remote_name"] == "Alice Smith" and body["caller-id-number"] == "+15551234567"
    assert body["proxy"] == "sip:203.0.113.10:5060" and body["ring_tone"] == "<http://example.com/ring.wav>"
    assert body["aps"]["alert"] == {"loc-key": "IC_SIL", "loc-args": ["+15551234567 - Alice Smith"]}
    delivery = Delivery.objects.get(pk=answer["deliveries"][0]["id"])
    assert delivery.source == "http_send" and delivery.call_id == CALL_ID and delivery.push_type == "voip"
    assert delivery.deadline_at and (delivery.deadline_at - delivery.created_at).total_seconds() == 20


def test_missed_call_is_an_alert_to_the_remote_token(apple_apps, admin_api) -> None:
    response = post(admin_api, missed_body())
    assert response.status_code == 200, response.json()
    (request,) = apple_apps.requests
    assert request.path == f"/3/device/{REMOTE_TOKEN}"
    assert request.headers["apns-push-type"] == "alert" and request.headers["apns-topic"] == "com.acme.phone"
    aps = request.body["aps"]
    assert aps["alert"] == "Missed call from +15551234567" and aps["sound"] == "default"
    assert aps["mutable-content"] == 1 and request.body["type"] == "missed_call"
    assert Delivery.objects.get(pk=response.json()["deliveries"][0]["id"]).push_type == "alert"


def test_missed_call_never_goes_to_a_voip_token(apple_apps, seed, admin_api) -> None:
    PushToken.objects.filter(token=REMOTE_TOKEN).delete()
    response = post(admin_api, missed_body())
    assert response.status_code == 404 and response.json()["code"] == "no_token"
    assert apple_apps.requests == []


def test_missed_call_on_android_is_a_visible_fcm_notification(seed, admin_api, fake_fcm, settings) -> None:
    settings.PUSHER_FCM_ENDPOINT = fake_fcm.endpoint
    info = fake_fcm.service_account("acme-phone")
    credential = credential_save(name="fake fcm", parsed=credential_parse(kind="fcm_service_account",
                                                                          data=json.dumps(info)))
    PushApp.objects.filter(pk=seed.firebase_app.pk).update(enabled=True, credential=credential)
    device = Device.objects.create(account_id="acc", device_id="droid", username="bob", realm="acme.example.com")
    PushToken.objects.create(device=device, token="fcm:token", token_type="firebase", app="com.acme.phone",
                             last_seen_at=timezone.now())
    response = post(admin_api, missed_body("sip:bob@ACME.example.com"))
    assert response.status_code == 200, response.json()
    (request,) = [r for r in fake_fcm.requests if r.path.endswith("messages:send")]
    message = request.body["message"]
    assert message["token"] == "fcm:token"
    assert message["notification"] == {"body": "Missed call from +15551234567"}
    assert message["data"]["type"] == "missed_call" and message["data"]["push_id"] == CALL_ID


def test_every_push_failing_is_502(seed, admin_api) -> None:
    response = post(admin_api, newcall_body())
    assert response.status_code == 502
    answer = response.json()
    assert answer["code"] == "push_failed" and answer["sent"] == 0
    assert "disabled" in answer["deliveries"][0]["error"]


@pytest.mark.parametrize("aor, status, code", [
    ("sip:nobody@acme.sip.example.com", 404, "unknown_aor"),
    ("not-an-aor", 400, "aor_invalid"),
])
def test_unknown_or_bad_aor(seed, admin_api, aor, status, code) -> None:
    response = post(admin_api, newcall_body(aor))
    assert response.status_code == status and response.json()["code"] == code


def test_aor_forms(seed, admin_api) -> None:
    for aor in (AOR, AOR.removeprefix("sip:"), f"<{AOR};transport=tls>", "sips:user_k3j4h5@ACME.SIP.EXAMPLE.COM"):
        assert post(admin_api, newcall_body(aor)).status_code == 502  # found: the apps are disabled


def test_broken_json_from_string_concatenation_is_400(seed, admin_api) -> None:
    # A backslash in the caller's display name breaks the cfg's hand-built JSON.
    body = newcall_body().replace("Alice Smith", "Alice \\ Smith")
    response = post(admin_api, body)
    assert response.status_code == 400


def test_kamailio_authenticates_with_basic(seed, django_user_model, client) -> None:
    user = django_user_model.objects.create_user("kamailio", password="kamailio-secret-1")
    user.user_permissions.add(Permission.objects.get(codename="send_push"))
    anonymous = client.post(URL, newcall_body(), content_type="application/json")
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Basic")
    auth = "Basic " + base64.b64encode(b"kamailio:kamailio-secret-1").decode()
    response = client.post(URL, newcall_body(), content_type="application/json", HTTP_AUTHORIZATION=auth)
    assert response.status_code == 502  # authenticated and allowed; the seeded apps are disabled
    wrong = "Basic " + base64.b64encode(b"kamailio:nope").decode()
    assert client.post(URL, newcall_body(), content_type="application/json",
                       HTTP_AUTHORIZATION=wrong).status_code == 401


def test_trailing_slash_variant_is_a_json_404(seed, admin_api) -> None:
    response = admin_api.post(URL + "/", newcall_body(), content_type="application/json")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
