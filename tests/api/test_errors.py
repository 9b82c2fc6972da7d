"""One exception handler, one error shape per kind of error, JSON everywhere under /api/v1/."""

import base64
import io
import json

import pytest
from django.conf import settings
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


# --- Every error is JSON: nesting depth, body size, unexpected exceptions (issue 13) -------------

DEEP = "[" * 1000 + "]" * 1000
TEN_MB = 10 * 1024 * 1024
JSON_ENDPOINTS = ["/api/v1/push/", "/api/v1/send", "/api/v1/user-agent-rules/", "/api/v1/apps/", "/api/v1/credentials/"]


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:200]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code and body["detail"]
    assert "Traceback" not in response.content.decode()
    return body


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
def test_a_deeply_nested_body_is_a_400_not_a_recursion_error(seed, admin_api, path) -> None:
    response = admin_api.post(path, DEEP, content_type="application/json")
    body = assert_json_error(response, 400, "json_too_deep")
    assert "64" in body["detail"]


def test_kamailio_send_with_basic_auth_gets_json_for_a_deep_body(seed, users) -> None:
    from rest_framework.test import APIClient

    users["operator"].set_password("op-password-123")
    users["operator"].save()
    kamailio = APIClient()
    kamailio.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"operator:op-password-123").decode())
    nested = '{"a": ' * 500 + "1" + "}" * 500
    payload = '{"name": "sip:user@realm", "type": "incoming_call", "payload": ' + nested + "}"
    assert_json_error(kamailio.post("/api/v1/send", payload, content_type="application/json"), 400, "json_too_deep")


def test_nesting_up_to_the_limit_and_brackets_inside_strings_are_fine(seed, admin_api) -> None:
    # 64 levels (the body's object and 63 in its Payload) are taken: the push is handled (and fails:
    # no app "x" is configured).
    nested = '{"a": ' * 63 + "1" + "}" * 63
    at_limit = '{"Token-ID": "t", "Token-Type": "apple", "Token-App": "x", "Payload": ' + nested + "}"
    response = admin_api.post("/api/v1/push/", at_limit, content_type="application/json")
    assert response.status_code == 200 and response.json()["reason"] == "app_unusable"
    response = admin_api.post("/api/v1/push/", at_limit.replace('{"a": ', '{"a": {"a": ', 1) + "}",
                              content_type="application/json")
    assert_json_error(response, 400, "json_too_deep")
    # Brackets in a string are text, however many.
    response = admin_api.post("/api/v1/user-agent-rules/", json.dumps({"name": "[" * 5000, "regex": "{" * 100}),
                              content_type="application/json")
    assert response.status_code == 400 and "name" in response.json()


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        ("[" * 65 + "]" * 65, True),
        ("[" * 64 + "]" * 64, False),
        ('{"a": "' + "[" * 100 + '"}', False),
        ('["\\"' + "[" * 100 + '"]', False),  # an escaped quote does not end the string
        ('["\\\\", ' + "[" * 65 + "]" * 65 + "]", True),  # an escaped backslash does
        ('"' + "[" * 100, False),  # an unterminated string runs to the end
        ("[]" * 1000, False),
        ("]" * 100 + "[" * 64, False),
        ('{"a": [' * 40 + "1" + "]}" * 40, True),
    ],
)
def test_json_depth_scan(text: str, deep: bool) -> None:
    from core.jsonlimits import json_depth_exceeds

    assert json_depth_exceeds(text, 64) is deep


def test_a_10_mb_body_is_a_413_in_json(seed, admin_api) -> None:
    big = json.dumps({"name": "x" * TEN_MB, "regex": "^x"})
    body = assert_json_error(admin_api.post("/api/v1/user-agent-rules/", big, content_type="application/json"),
                             413, "body_too_large")
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in body["detail"]
    assert_json_error(admin_api.post("/api/v1/send", big, content_type="application/json"), 413, "body_too_large")
    # A form body (credentials/ takes forms too) is read by Django, which raises RequestDataTooBig.
    form = "name=x&kind=fcm_legacy_key&data=" + "x" * TEN_MB
    response = admin_api.post("/api/v1/credentials/", form, content_type="application/x-www-form-urlencoded")
    assert_json_error(response, 413, "body_too_large")


def test_the_parser_refuses_a_body_over_the_limit_itself(settings) -> None:
    """Without Django's own check (DRF reads request.body for its JSON parser today; a future DRF
    may hand the parser the stream), the parser still reads no more than the limit."""
    from pusher_site.api.parsers import BodyTooLarge, JSONParser

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    stream = io.BytesIO(b'{"a": "' + b"x" * 10_000 + b'"}')
    with pytest.raises(BodyTooLarge) as excinfo:
        JSONParser().parse(stream)
    assert excinfo.value.status_code == 413
    assert stream.tell() == 101
    assert JSONParser().parse(io.BytesIO(b'{"a": [1, 2]}')) == {"a": [1, 2]}


def test_an_unexpected_exception_is_a_json_500_without_the_traceback(seed, admin_api, monkeypatch, caplog) -> None:
    from push import services

    def fail(**kwargs):
        raise RuntimeError("unexpected failure 0xC0FFEE in the service")

    monkeypatch.setattr(services, "push_request_handle_in_scope", fail)
    admin_api.raise_request_exception = True  # DRF answers it: nothing reaches Django's handler
    response = admin_api.post("/api/v1/push/", {"Token-ID": "t", "Token-Type": "apple", "Token-App": "x"},
                              format="json")
    assert response.json() == {"detail": "Internal server error.", "code": "server_error"}
    assert response.status_code == 500 and "0xC0FFEE" not in response.content.decode()
    # The operator finds it in the log, traceback included.
    logged = [r for r in caplog.records if r.name == "pusher_site.api.errors" and r.exc_info]
    assert logged and "0xC0FFEE" in str(logged[0].exc_info[1]) and "POST /api/v1/push/" in logged[0].getMessage()


@pytest.mark.urls("tests.api.urls_errors")
def test_django_answers_json_under_api_and_html_elsewhere(db, client) -> None:
    from tests.api.urls_errors import CANARY

    client.raise_request_exception = False
    response = client.get("/api/test-only/boom")
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Internal server error.", "code": "server_error"}
    assert CANARY not in response.content.decode()

    response = client.post("/api/test-only/body", "x" * TEN_MB, content_type="text/plain")
    assert_json_error(response, 413, "body_too_large")

    response = client.get("/test-only/boom")
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")
    assert CANARY not in response.content.decode()
    response = client.post("/test-only/body", "x" * TEN_MB, content_type="text/plain")
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")


def test_non_api_pages_keep_html_errors(db, client) -> None:
    response = client.post("/admin/login/", "username=x&password=" + "x" * TEN_MB,
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")
