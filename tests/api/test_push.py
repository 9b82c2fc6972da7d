"""/api/v1/push/: a push_req over HTTP, handled by push_request_handle exactly as over AMQP."""

import copy

import pytest

from push.models import Delivery, Provider
from tests.fixtures import sample

pytestmark = pytest.mark.django_db

URL = "/api/v1/push/"
PUSH = sample("push_req_kamailio_master.json")["body"]


def test_kamailio_push_req_is_sent(seed_on_fake_apns, admin_api) -> None:
    body = copy.deepcopy(PUSH)
    response = admin_api.post(URL, body, format="json")
    assert response.status_code == 200, response.json()
    delivery = response.json()
    assert delivery["status"] == "sent" and delivery["source"] == "api" and delivery["push_type"] == "voip"
    assert delivery["msg_id"] == PUSH["Msg-ID"] and delivery["call_id"] == PUSH["Call-ID"]
    (request,) = seed_on_fake_apns.requests
    assert request.path == f"/3/device/{PUSH['Token-ID']}"
    assert request.body["caller-id-number"] == PUSH["Payload"]["caller-id-number"]
    # A redelivery (same Msg-ID) is not sent twice.
    again = admin_api.post(URL, body, format="json").json()
    assert again["status"] == "duplicate" and len(seed_on_fake_apns.requests) == 1
    assert Delivery.objects.filter(msg_id=PUSH["Msg-ID"]).count() == 1


def test_unconfigured_app_fails_fast_with_a_reason(seed, admin_api) -> None:
    response = admin_api.post(URL, {"Token-ID": "ab" * 32, "Token-Type": "apple", "Token-App": "com.none"},
                              format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "failed" and "no apple push app" in response.json()["error"]


@pytest.mark.parametrize("body, field", [
    ({"Token-Type": "apple", "Token-App": "a"}, "Token-ID"),
    ({"Token-ID": 5, "Token-Type": "apple", "Token-App": "a"}, "Token-ID"),
    ({"Token-ID": "t", "Token-Type": "apple", "Token-App": "a", "Payload": [1]}, "Payload"),
    ({"Token-ID": "t", "Token-Type": "apple", "Token-App": "a", "Payload": {"k": "a\x00"}}, "Payload"),
    ({"Token-ID": "t", "Token-Type": "apple", "Token-App": "a", "Expires": "20"}, "Expires"),
    ({"Token-ID": " ", "Token-Type": "apple", "Token-App": "a"}, "Token-ID"),
])
def test_invalid_push_req(seed, admin_api, body, field) -> None:
    response = admin_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_firebase_token_type_aliases(seed, admin_api) -> None:
    response = admin_api.post(URL, {"Token-ID": "x", "Token-Type": "android", "Token-App": "com.acme.phone"},
                              format="json")
    assert response.json()["provider"] == Provider.FIREBASE and "disabled" in response.json()["error"]
