"""/api/v1/apps/: push apps through push.services (create via push_app_upsert, update, delete)."""

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

from push.models import PushApp

pytestmark = pytest.mark.django_db

URL = "/api/v1/apps/"


def test_list_filters_by_provider_and_enabled(seed, admin_api) -> None:
    PushApp.objects.create(app_id="com.other.app", provider="apple", enabled=True)
    assert admin_api.get(URL).json()["count"] == 3
    apple = admin_api.get(URL, {"provider": "apple"}).json()["results"]
    assert {a["app_id"] for a in apple} == {"com.acme.phone.voip.prod", "com.other.app"}
    enabled = admin_api.get(URL, {"enabled": "true"}).json()["results"]
    assert [a["app_id"] for a in enabled] == ["com.other.app"]
    assert admin_api.get(URL, {"enabled": "false", "provider": "firebase"}).json()["count"] == 1
    assert admin_api.get(URL, {"app_id": "com.acme.phone"}).json()["count"] == 1


def test_list_is_paginated_and_ordered(seed, admin_api) -> None:
    page = admin_api.get(URL, {"limit": 1, "offset": 1, "ordering": "-app_id"}).json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"] is None
    assert page["results"][0]["app_id"] == "com.acme.phone"


@pytest.mark.parametrize("params", [{"provider": "nokia"}, {"enabled": "perhaps"}, {"limit": "x"},
                                    {"offset": "-1"}, {"credential": "abc"}])
def test_bad_filter_values_are_400(seed, admin_api, params) -> None:
    response = admin_api.get(URL, params)
    assert response.status_code == 400
    assert set(response.json()) == set(params)


def test_create_shows_credential_summary_never_its_secret(seed, admin_api, users) -> None:
    response = admin_api.post(URL, {"app_id": "com.acme.phone", "provider": "apple", "credential": seed.p8.pk,
                                    "host": "api.sandbox.push.apple.com", "priority": 5}, format="json")
    assert response.status_code == 201, response.json()
    app = response.json()
    assert app["credential"] == {"id": seed.p8.pk, "name": "acme p8", "kind": "apns_token", "usable": True,
                                 "not_after": None}
    assert app["effective_topic"] == "com.acme.phone" and app["priority"] == 5
    stored = PushApp.objects.get(pk=app["id"])
    assert stored.credential == seed.p8 and stored.host == "api.sandbox.push.apple.com"
    entry = LogEntry.objects.get(object_id=str(stored.pk), content_type__model="pushapp")
    assert entry.action_flag == ADDITION and entry.user == users["admin"]


def test_create_twice_is_a_validation_error(seed, admin_api) -> None:
    response = admin_api.post(URL, {"app_id": "com.acme.phone", "provider": "firebase"}, format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()


def test_credential_of_the_other_provider_is_a_domain_error(seed, admin_api) -> None:
    response = admin_api.post(URL, {"app_id": "com.x", "provider": "firebase", "credential": seed.cert.pk},
                              format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "credential_invalid"
    assert not PushApp.objects.filter(app_id="com.x").exists()


def test_strict_types(seed, admin_api) -> None:
    response = admin_api.post(URL, {"app_id": 12, "provider": "apple", "priority": "10", "enabled": "yes"},
                              format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"app_id", "priority", "enabled"}


def test_update_and_partial_update(seed, admin_api) -> None:
    url = f"{URL}{seed.apple_app.pk}/"
    response = admin_api.patch(url, {"enabled": True, "topic": "com.acme.phone", "credential": None}, format="json")
    assert response.status_code == 200, response.json()
    seed.apple_app.refresh_from_db()
    assert seed.apple_app.enabled and seed.apple_app.topic == "com.acme.phone" and seed.apple_app.credential is None
    response = admin_api.put(url, {"app_id": "com.acme.renamed", "provider": "apple"}, format="json")
    assert response.status_code == 200
    assert response.json()["app_id"] == "com.acme.renamed"
    assert LogEntry.objects.filter(action_flag=CHANGE, object_id=str(seed.apple_app.pk)).count() == 2


def test_clearing_the_flag_restarts_the_count(seed, admin_api) -> None:
    PushApp.objects.filter(pk=seed.apple_app.pk).update(flagged_reason="5 BadDeviceToken", bad_device_token_count=5)
    response = admin_api.patch(f"{URL}{seed.apple_app.pk}/", {"flagged_reason": ""}, format="json")
    assert response.json()["bad_device_token_count"] == 0 and response.json()["flagged_reason"] == ""


def test_delete(seed, admin_api) -> None:
    response = admin_api.delete(f"{URL}{seed.firebase_app.pk}/")
    assert response.status_code == 204
    assert not PushApp.objects.filter(pk=seed.firebase_app.pk).exists()
    assert LogEntry.objects.filter(action_flag=DELETION, object_repr__contains="com.acme.phone").exists()


def test_test_push_returns_the_delivery(seed, admin_api) -> None:
    response = admin_api.post(f"{URL}{seed.apple_app.pk}/push/", {"token": "ab" * 32}, format="json")
    assert response.status_code == 200
    delivery = response.json()
    assert delivery["status"] == "failed" and "disabled" in delivery["error"] and delivery["source"] == "api"
    assert delivery["token_masked"] == "ababab…abab"
