"""A service account that cannot be used is refused the same way through every face (API JSON, API
multipart, admin paste, admin upload): a 400 `credential_invalid` or a form error, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from push.models import Credential
from tests.certs import make_service_account

pytestmark = pytest.mark.django_db

URL = "/api/v1/credentials/"
KIND = "fcm_service_account"
DEEP = "[" * 10000 + "]" * 10000


def through(face: str, text: str, *, api: Any, staff_client: Any) -> str:
    """Give `text` (a service account's JSON text) as a new credential by `face`; the refusal shown."""
    if face == "api json":
        response = api.post(URL, json.dumps({"name": "d", "kind": KIND, "data": text}),
                            content_type="application/json")
    elif face == "api multipart":
        upload = SimpleUploadedFile("sa.json", text.encode("utf-8", "surrogatepass"), content_type="application/json")
        response = api.post(URL, {"name": "d", "kind": KIND, "file": upload}, format="multipart")
    else:
        form: dict[str, Any] = {"name": "d", "kind": KIND, "key_id": "", "team_id": "", "password": "", "pasted": ""}
        if face == "admin paste":
            form["pasted"] = text
        else:
            form["upload"] = SimpleUploadedFile("sa.json", text.encode("utf-8", "surrogatepass"))
        response = staff_client.post(reverse("admin:push_credential_add"), form)
        assert response.status_code == 200, "saved"
        return " ".join(str(e) for e in response.context["adminform"].form.non_field_errors())
    assert response.status_code == 400, response.content[:300]
    assert response.json()["code"] == "credential_invalid"
    return response.json()["message"]


FACES = ["api json", "api multipart", "admin paste", "admin upload"]


@pytest.fixture
def api(admin_api):
    return admin_api


@pytest.mark.parametrize("face", FACES)
def test_a_deeply_nested_service_account_is_refused(seed, api, staff_client, face) -> None:
    message = through(face, DEEP, api=api, staff_client=staff_client)
    assert "64" in message
    assert not Credential.objects.filter(name="d").exists()


@pytest.mark.parametrize("field", ["client_email", "private_key_id", "universe_domain"])
@pytest.mark.parametrize("face", FACES)
def test_a_service_account_with_a_lone_surrogate_is_refused(seed, api, staff_client, face, field) -> None:
    account = make_service_account("acme-other", "https://127.0.0.1:9/token")
    account[field] = "firebase\ud800@acme-other.iam.gserviceaccount.com"
    message = through(face, json.dumps(account), api=api, staff_client=staff_client)  # the surrogate escaped
    assert "not valid Unicode" in message
    assert not Credential.objects.filter(name="d").exists()
