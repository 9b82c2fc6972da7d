"""/api/v1/credentials/: upload as multipart or JSON; answers carry parsed facts, never the secret."""

import base64
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from push.models import Credential
from tests.certs import TEAM_ID, make_apns_certificate, make_p8, make_p12, make_service_account

pytestmark = pytest.mark.django_db

URL = "/api/v1/credentials/"
FACTS = {"id", "name", "kind", "subject", "topics", "environment", "not_before", "not_after", "days_to_expiry",
         "fingerprint_sha256", "key_id", "team_id", "project_id", "client_email", "usable", "unusable_reason",
         "warnings", "apps", "created_at", "updated_at"}


def test_multipart_pem_upload(seed, admin_api) -> None:
    cert, key = make_apns_certificate("com.example.upload", voip=True)
    upload = SimpleUploadedFile("voip.pem", (cert + key).encode(), content_type="application/x-pem-file")
    response = admin_api.post(URL, {"name": "upload", "kind": "apns_certificate", "file": upload}, format="multipart")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == FACTS
    assert "com.example.upload" in body["subject"] and "com.example.upload.voip" in body["topics"]
    assert body["days_to_expiry"] >= 363 and body["usable"] and len(body["fingerprint_sha256"]) == 64
    assert "PRIVATE KEY" not in response.content.decode()
    assert Credential.objects.get(pk=body["id"]).secret.count("PRIVATE KEY") == 2


def test_json_p8_with_key_and_team_id(seed, admin_api) -> None:
    response = admin_api.post(URL, {"name": "p8", "kind": "apns_token", "data": make_p8("other"),
                                    "key_id": "KEY0000001", "team_id": TEAM_ID}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["key_id"] == "KEY0000001" and response.json()["team_id"] == TEAM_ID


def test_base64_p12_in_json(seed, admin_api) -> None:
    cert, key = make_apns_certificate("com.example.p12")
    p12 = make_p12(cert, key, "s3cret")
    response = admin_api.post(URL, {"name": "p12", "kind": "apns_certificate", "password": "s3cret",
                                    "data": base64.b64encode(p12).decode()}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["topics"][0] == "com.example.p12"


def test_service_account_as_object(seed, admin_api) -> None:
    account = make_service_account("other-project", "https://127.0.0.1:9/token")
    response = admin_api.post(URL, {"name": "sa", "kind": "fcm_service_account", "data": account}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["project_id"] == "other-project" and body["client_email"] == account["client_email"]
    assert account["private_key"].splitlines()[1] not in response.content.decode()


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "kind": "apns_token"}, "non_field_errors"),  # no secret
    ({"name": "x", "kind": "nope", "data": "x"}, "kind"),
    ({"name": "x", "kind": "fcm_legacy_key", "data": 12}, "data"),
    ({"name": "acme p8", "kind": "fcm_legacy_key", "data": "AAAA"}, "code"),  # name taken: domain error
])
def test_invalid_input(seed, admin_api, body, field) -> None:
    response = admin_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_unparsable_secret_is_a_domain_error(seed, admin_api) -> None:
    response = admin_api.post(URL, {"name": "bad", "kind": "apns_certificate", "data": "not a pem"}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "credential_invalid" and response.json()["message"]
    assert not Credential.objects.filter(name="bad").exists()


def test_rename_and_replace_secret(seed, admin_api) -> None:
    url = f"{URL}{seed.cert.pk}/"
    assert admin_api.patch(url, {"name": "renamed"}, format="json").json()["name"] == "renamed"
    old = seed.cert.fingerprint_sha256
    cert, key = make_apns_certificate("com.acme.phone", voip=True, key_type="ec")
    response = admin_api.patch(url, {"data": cert + key}, format="json")
    assert response.status_code == 200
    assert response.json()["fingerprint_sha256"] != old and response.json()["apps"] == [seed.apple_app.pk]


def test_key_id_change_reparses_the_stored_key(seed, admin_api) -> None:
    url = f"{URL}{seed.p8.pk}/"
    assert admin_api.patch(url, {"key_id": "NEWKEY0001"}, format="json").json()["key_id"] == "NEWKEY0001"
    response = admin_api.patch(url, {"key_id": "bad"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "credential_invalid"
    response = admin_api.patch(f"{URL}{seed.cert.pk}/", {"key_id": "NEWKEY0001"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "credential_invalid"


def test_kind_change_needs_a_secret_its_apps_can_use(seed, admin_api) -> None:
    response = admin_api.patch(f"{URL}{seed.cert.pk}/", {"kind": "fcm_legacy_key", "data": "AAAA"}, format="json")
    assert response.status_code == 400 and "cannot send" in response.json()["message"]


def test_delete_in_use_is_refused(seed, admin_api) -> None:
    response = admin_api.delete(f"{URL}{seed.cert.pk}/")
    assert response.status_code == 400 and response.json()["code"] == "credential_in_use"
    assert admin_api.delete(f"{URL}{seed.legacy.pk}/").status_code == 204


def test_filters(seed, admin_api) -> None:
    assert admin_api.get(URL, {"kind": "apns_token"}).json()["count"] == 1
    assert [c["name"] for c in admin_api.get(URL, {"usable": "false"}).json()["results"]] == ["acme legacy"]
    assert admin_api.get(URL, {"expires_before": "2100-01-01T00:00:00Z"}).json()["count"] == 1


def test_no_secret_in_any_credential_answer(seed, admin_api) -> None:
    bodies = [admin_api.get(URL).content.decode()]
    for credential in (seed.cert, seed.p8, seed.service_account, seed.legacy):
        bodies.append(admin_api.get(f"{URL}{credential.pk}/").content.decode())
    text = "\n".join(bodies) + json.dumps(admin_api.get("/api/v1/apps/").json())
    for secret in seed.secrets:
        assert secret not in text
