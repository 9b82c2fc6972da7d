"""One exception handler, one error shape per kind of error, JSON everywhere under /api/v1/."""

import pytest
from django.db import DataError

from core.errors import CredentialError
from pusher_site.api.conventions import exception_handler

pytestmark = pytest.mark.django_db


def test_domain_error_is_400_with_code_and_message() -> None:
    response = exception_handler(CredentialError("the key is bad"), {})
    assert response.status_code == 400 and response.data == {"code": "credential_invalid", "message": "the key is bad"}


def test_database_refusal_is_400_not_500() -> None:
    response = exception_handler(DataError("value too long"), {})
    assert response.status_code == 400 and response.data["code"] == "invalid_data"


def test_validation_error_keeps_drf_shape(seed, admin_api) -> None:
    response = admin_api.post("/api/v1/user-agent-rules/", {"regex": 5}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"name", "regex", "properties"}
    assert all(isinstance(v, list) for v in response.json().values())


def test_not_json_body(seed, admin_api) -> None:
    response = admin_api.post("/api/v1/push/", "{not json", content_type="application/json")
    assert response.status_code == 400 and "detail" in response.json()
    response = admin_api.post("/api/v1/push/", "a=b", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


@pytest.mark.parametrize("path", ["/api/v1/nothing/", "/api/v1/apps/1.5/", "/api/v1/apps//", "/api/v1/apps/abc/"])
def test_unknown_paths_answer_json_404(seed, admin_api, path) -> None:
    for method in ("get", "delete"):
        response = getattr(admin_api, method)(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/json"


def test_missing_trailing_slash_is_explained(seed, admin_api) -> None:
    response = admin_api.post("/api/v1/apps", {}, format="json")
    assert response.status_code == 404
    assert response.json()["detail"] == "Not found. Did you mean /api/v1/apps/ (with a trailing slash)?"


def test_method_not_allowed(seed, admin_api) -> None:
    response = admin_api.put("/api/v1/deliveries/", {}, format="json")
    assert response.status_code == 405 and response.json()["detail"]
