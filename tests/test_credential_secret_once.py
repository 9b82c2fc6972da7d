"""A credential's secret comes from one source: a file uploaded and text given together are refused
by the admin as by the API (push.credentials.credential_secret_given), since which one counted was
anyone's guess."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from push.models import Credential
from tests.certs import TEAM_ID, make_p8

pytestmark = pytest.mark.django_db


def fields() -> dict[str, str]:
    return {"name": "p8", "kind": "apns_token", "key_id": "ABCDE12345", "team_id": TEAM_ID, "password": ""}


def test_the_admin_refuses_an_upload_and_pasted_text_together(staff_client) -> None:
    response = staff_client.post(reverse("admin:push_credential_add"), {
        **fields(), "pasted": make_p8("pasted"), "upload": SimpleUploadedFile("key.p8", make_p8("uploaded").encode()),
    })
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.non_field_errors())
    assert "not both" in errors
    assert not Credential.objects.exists()


def test_the_api_refuses_a_file_and_data_together(staff_user) -> None:
    api = APIClient()
    api.force_authenticate(staff_user)
    response = api.post("/api/v1/credentials/", {
        **fields(), "data": make_p8("pasted"), "file": SimpleUploadedFile("key.p8", make_p8("uploaded").encode()),
    }, format="multipart")
    assert response.status_code == 400
    assert "not both" in " ".join(response.json()["non_field_errors"])
    assert not Credential.objects.exists()


def test_the_admin_still_takes_either_alone(staff_client) -> None:
    upload = SimpleUploadedFile("key.p8", make_p8("uploaded").encode())
    response = staff_client.post(reverse("admin:push_credential_add"), {**fields(), "pasted": "", "upload": upload})
    assert response.status_code == 302
    response = staff_client.post(reverse("admin:push_credential_add"),
                                 {**fields(), "name": "p8 pasted", "pasted": make_p8("pasted")})
    assert response.status_code == 302
    assert Credential.objects.count() == 2
