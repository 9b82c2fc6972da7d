"""The admin's JSON fields (a rule's properties, a push app's extra headers, a token reporter's
parameters and fixed values) hold what the API holds: the same rules refuse the same values, as a
form error, and nothing unusable is ever stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from push.models import PushApp
from registry.models import TokenReporter, UserAgentRule
from registry.reporter import DEFAULT_PARAMETERS
from tests.test_admin_pages import credential_factory

pytestmark = pytest.mark.django_db

SURROGATE = "\ud800"
APP = "com.acme.phone.voip.prod"


@pytest.fixture
def api(staff_api: APIClient) -> APIClient:
    return staff_api


def api_post(api: APIClient, path: str, body: Any) -> Any:
    """JSON text with surrogates escaped, as a client sends them (the test client's renderer cannot)."""
    return api.post(path, json.dumps(body), content_type="application/json")


def form_errors(response: Any) -> dict[str, list[str]]:
    """The admin form's errors when the page came back with them (nothing saved), else {}."""
    if response.status_code != 200 or not response.context or "adminform" not in response.context:
        return {}
    return {name: [str(e) for e in errors] for name, errors in response.context["adminform"].form.errors.items()}


def rule_form(**changes: str) -> dict[str, str]:
    return {"name": "AcmePhone", "position": "10", "enabled": "on", "regex": "^AcmePhone",
            "properties": '{"Token-ID": "pn-tok"}', "description": "", **changes}


def app_form(**changes: str) -> dict[str, str]:
    return {"app_id": APP, "provider": "apple", "enabled": "on", "credential": "", "description": "",
            "host": "api.push.apple.com", "port": "443", "topic": "", "push_type": "voip", "priority": "10",
            "expiration": "", "collapse_id": "", "extra_headers": "{}", "project_id": "", "android_priority": "high",
            "ttl_s": "30", "flagged_reason": "", **changes}


def reporter_form(**changes: str) -> dict[str, str]:
    return {"slug": "groundwire", "enabled": "on", "description": "", "auth": "url_secret",
            "new_secret": "reporter-SECRET-0123456789abcdef", "parameters": json.dumps(DEFAULT_PARAMETERS),
            "fixed": json.dumps({"Token-Type": "apple"}), "token_encoding": "as_sent",
            "user_agent_regex": "^Groundwire", "proxy": "", **changes}


def admin_add(client: Any, model: str, form: dict[str, str]) -> dict[str, list[str]]:
    """Post the admin's add form; the form's errors (a redirect, i.e. saved, is {"saved": []})."""
    response = client.post(reverse(f"admin:{model}_add"), form)
    assert response.status_code in (200, 302)
    return {"saved": []} if response.status_code == 302 else form_errors(response)


# --- A lone surrogate, as a value or as a key -----------------------------------------------------

UNSTORABLE_PROPERTIES = [{"Token-ID": SURROGATE}, {SURROGATE: "x"}]


@pytest.mark.parametrize("properties", UNSTORABLE_PROPERTIES, ids=["value", "key"])
def test_a_rule_with_a_lone_surrogate_is_refused_by_admin_and_api(staff_client, api, properties) -> None:
    errors = admin_add(staff_client, "registry_useragentrule", rule_form(properties=json.dumps(properties)))
    assert "properties" in errors
    response = api_post(api, "/api/v1/user-agent-rules/", {"name": "AcmePhone", "regex": "^A",
                                                           "properties": properties})
    assert response.status_code == 400
    assert not UserAgentRule.objects.exists()
    # The pages that broke while such a row stood still render.
    assert staff_client.get(reverse("admin:registry_useragentrule_changelist")).status_code == 200
    assert api.get("/api/v1/user-agent-rules/").status_code == 200


@pytest.mark.parametrize("headers", [{"apns-collapse-id": SURROGATE}, {SURROGATE: "x"}], ids=["value", "key"])
def test_an_app_with_a_lone_surrogate_in_its_headers_is_refused_by_admin_and_api(staff_client, api, headers) -> None:
    errors = admin_add(staff_client, "push_pushapp", app_form(extra_headers=json.dumps(headers)))
    assert "extra_headers" in errors
    response = api_post(api, "/api/v1/apps/", {"app_id": APP, "provider": "apple", "extra_headers": headers})
    assert response.status_code == 400
    assert not PushApp.objects.exists()


@pytest.mark.parametrize("field", ["parameters", "fixed"])
def test_a_reporter_with_a_lone_surrogate_is_refused_by_admin_and_api(staff_client, api, field) -> None:
    value = {"Token-Type": "apple", "Realm": SURROGATE}
    errors = admin_add(staff_client, "registry_tokenreporter", reporter_form(**{field: json.dumps(value)}))
    assert errors and "saved" not in errors
    response = api_post(api, "/api/v1/token-reporters/", {"slug": "groundwire", "secret": "s" * 30, field: value})
    assert response.status_code == 400
    assert not TokenReporter.objects.exists()


def test_the_user_agent_tester_refuses_a_lone_surrogate_as_the_api_does(staff_client, api) -> None:
    fields = {"Proxy-Path": SURROGATE}
    response = staff_client.post(reverse("admin:registry_useragentrule_test"), {
        "user_agent": "AcmePhone/1", "contact": "<sip:1001@10.0.0.1:5060>", "extra_fields": json.dumps(fields)})
    assert response.status_code == 200
    assert "extra_fields" in response.context["form"].errors
    response = api_post(api, "/api/v1/user-agent-rules/match/", {"user_agent": "AcmePhone/1",
                                                                  "contact": "<sip:1001@10.0.0.1:5060>",
                                                                  "fields": fields})
    assert response.status_code == 400 and "fields" in response.json()


# --- Nesting deeper than the API's limit ------------------------------------------------------------

DEEP = "[" * 10000 + "]" * 10000

DEEP_FORMS = [
    ("registry_useragentrule", "properties", rule_form),
    ("push_pushapp", "extra_headers", app_form),
    ("registry_tokenreporter", "parameters", reporter_form),
    ("registry_tokenreporter", "fixed", reporter_form),
]


@pytest.mark.parametrize(("model", "field", "form"), DEEP_FORMS, ids=[f"{m}.{f}" for m, f, _ in DEEP_FORMS])
def test_deep_json_in_an_admin_field_is_a_form_error_as_in_the_api(staff_client, api, model, field, form) -> None:
    errors = admin_add(staff_client, model, form(**{field: DEEP}))
    assert any("64" in message for message in errors[field])
    path = {"registry_useragentrule": "/api/v1/user-agent-rules/", "push_pushapp": "/api/v1/apps/",
            "registry_tokenreporter": "/api/v1/token-reporters/"}[model]
    response = api.post(path, f'{{"{field}": {DEEP}}}', content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "json_too_deep"


def test_deep_json_in_the_user_agent_testers_fields_is_a_form_error(staff_client) -> None:
    response = staff_client.post(reverse("admin:registry_useragentrule_test"), {
        "user_agent": "AcmePhone/1", "contact": "<sip:1001@10.0.0.1:5060>", "extra_fields": DEEP})
    assert response.status_code == 200
    assert any("64" in message for message in response.context["form"].errors["extra_fields"])


# --- Not an object: null, a list, a string ----------------------------------------------------------

NOT_OBJECTS = ["null", "[]", '"s"', "[1]", ""]
OBJECT_FORMS = [
    ("registry_useragentrule", "properties", rule_form, "/api/v1/user-agent-rules/",
     {"name": "AcmePhone", "regex": "^A"}),
    ("push_pushapp", "extra_headers", app_form, "/api/v1/apps/", {"app_id": APP, "provider": "apple"}),
    ("registry_tokenreporter", "parameters", reporter_form, "/api/v1/token-reporters/",
     {"slug": "groundwire", "secret": "s" * 30}),
    ("registry_tokenreporter", "fixed", reporter_form, "/api/v1/token-reporters/",
     {"slug": "groundwire", "secret": "s" * 30}),
]


@pytest.mark.parametrize("text", NOT_OBJECTS)
@pytest.mark.parametrize(("model", "field", "form", "path", "body"), OBJECT_FORMS,
                         ids=[f"{m}.{f}" for m, f, *_ in OBJECT_FORMS])
def test_a_json_field_that_is_not_an_object_is_refused_by_admin_and_api(staff_client, api, model, field, form, path,
                                                                        body, text) -> None:
    errors = admin_add(staff_client, model, form(**{field: text}))
    assert field in errors
    if text:  # (JSON has no empty value)
        response = api_post(api, path, {**body, field: json.loads(text)})
        assert response.status_code == 400 and field in response.json()
    assert not (UserAgentRule.objects.exists() or PushApp.objects.exists() or TokenReporter.objects.exists())


def test_an_app_stored_with_headers_that_are_no_object_still_renders(staff_client, api) -> None:
    """A row written before the models refused it: its pages and answers render, so it can be fixed."""
    app = PushApp.objects.create(app_id=APP, provider="apple", credential=credential_factory())
    PushApp.objects.filter(pk=app.pk).update(extra_headers="s")
    assert staff_client.get(reverse("admin:push_pushapp_change", args=[app.pk])).status_code == 200
    assert api.get(f"/api/v1/apps/{app.pk}/").status_code == 200
    assert api.get("/api/v1/apps/").status_code == 200

