"""Django's error reports (the DEBUG 500 page, the django.request log record a mail handler renders)
never show a secret posted to the admin or the API: every view that takes one marks it sensitive."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.views.debug import SafeExceptionReporterFilter
from rest_framework.test import APIClient

from push import services as push_services
from pusher_site.admin import hooks_admin, push_admin, registry_admin
from tests.certs import make_p8

pytestmark = pytest.mark.django_db

KEY = make_p8("error-report")
KEY_LINE = [line for line in KEY.splitlines() if line and not line.startswith("-----")][0]
SECRET = f"SECRET-error-report-{secrets.token_hex(8)}"  # made here: the 500 page shows this file's lines


def boom(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("unexpected")


@pytest.fixture
def debug_client(settings, staff_user) -> Client:
    settings.DEBUG = True
    client = Client(raise_request_exception=False)
    client.force_login(staff_user)
    return client


ADMIN_FORMS = [
    ("push_credential", push_admin.services, "credential_parse",
     {"name": "c", "kind": "apns_token", "key_id": "ABCDE12345", "team_id": "TEAM012345", "pasted": KEY,
      "password": SECRET}),
    ("registry_tokenreporter", registry_admin.reporting, "token_reporter_secret_check",
     {"slug": "gw", "enabled": "on", "auth": "url_secret", "new_secret": SECRET, "parameters": "{}", "fixed": "{}",
      "token_encoding": "as_sent", "user_agent_regex": "", "proxy": "", "description": ""}),
    ("hooks_webhooksubscription", hooks_admin.services, "webhook_subscription_problems",
     {"name": "w", "url": "http://127.0.0.1:9/", "new_secret": SECRET, "event_types": ["push.failed"],
      "account_id": "", "enabled": "on"}),
]


@pytest.mark.parametrize(("model", "module", "name", "form"), ADMIN_FORMS, ids=[m for m, *_ in ADMIN_FORMS])
def test_the_admins_debug_500_page_hides_a_posted_secret(debug_client, monkeypatch, model, module, name,
                                                         form) -> None:
    monkeypatch.setattr(module, name, boom)
    response = debug_client.post(reverse(f"admin:{model}_add"), form)
    assert response.status_code == 500
    html = response.content.decode()
    assert "RuntimeError" in html  # Django's debug page, with the request's POST
    assert KEY_LINE not in html and SECRET not in html


API_WRITES = [
    ("/api/v1/credentials/", push_services, "credential_create",
     {"name": "c", "kind": "apns_token", "data": KEY, "key_id": "ABCDE12345", "team_id": "TEAM012345",
      "password": SECRET}),
    # (The token reporter and webhook endpoints take JSON only, which Django's reports never show.)
]


@pytest.mark.parametrize(("path", "module", "name", "body"), API_WRITES, ids=[p for p, *_ in API_WRITES])
def test_the_apis_error_report_hides_a_posted_secret(staff_user, monkeypatch, caplog, path, module, name,
                                                     body) -> None:
    monkeypatch.setattr(module, name, boom)
    client = APIClient()
    client.force_authenticate(staff_user)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.post(path, body, format="multipart")
    assert response.status_code == 500
    [record] = [r for r in caplog.records if r.name == "django.request"]
    shown = SafeExceptionReporterFilter().get_post_parameters(record.request)  # what a mailed report shows
    assert shown and all(KEY_LINE not in str(value) and SECRET not in str(value) for value in shown.values())
