"""/api/v1/token-reporters/: the token reporters' CRUD, with a write-only secret."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry

from registry.models import TokenReporter
from registry.reporter import DEFAULT_PARAMETERS
from registry.reporting import token_reporter_secret_matches
from tests.api.conftest import REPORTER_SECRET

pytestmark = pytest.mark.django_db

URL = "/api/v1/token-reporters/"
NEW_SECRET = "bria-NEW-secret-0123456789abcdef"


def test_create_answers_the_reporter_without_its_secret(seed, admin_api) -> None:
    response = admin_api.post(URL, {"slug": "bria", "secret": NEW_SECRET, "fixed": {"Token-Type": "firebase"},
                                    "user_agent_regex": "^Bria"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "secret" not in body and NEW_SECRET not in response.content.decode()
    assert body["parameters"] == DEFAULT_PARAMETERS and body["auth"] == "url_secret"
    assert body["url_template"].startswith("/report/bria/<secret>/?username=%account[username]%")
    reporter = TokenReporter.objects.get(slug="bria")
    assert token_reporter_secret_matches(reporter=reporter, given=NEW_SECRET)
    assert LogEntry.objects.filter(object_id=str(reporter.pk), change_message="[API] added").exists()
    listed = admin_api.get(URL).content.decode() + admin_api.get(f"{URL}{reporter.pk}/").content.decode()
    assert NEW_SECRET not in listed and REPORTER_SECRET not in listed and '"secret"' not in listed


def test_a_secret_is_required_to_create_and_kept_when_an_update_leaves_it_out(seed, admin_api) -> None:
    response = admin_api.post(URL, {"slug": "bria", "fixed": {"Token-Type": "firebase"}}, format="json")
    assert response.status_code == 400 and "secret" in response.json()
    assert admin_api.patch(f"{URL}{seed.reporter.pk}/", {"description": "iOS"}, format="json").status_code == 200
    assert token_reporter_secret_matches(reporter=TokenReporter.objects.get(pk=seed.reporter.pk), given=REPORTER_SECRET)
    response = admin_api.put(f"{URL}{seed.reporter.pk}/", {"slug": "groundwire", "fixed": {"Token-Type": "apple"},
                                                           "secret": NEW_SECRET}, format="json")
    assert response.status_code == 200 and NEW_SECRET not in response.content.decode()
    reporter = TokenReporter.objects.get(pk=seed.reporter.pk)
    assert token_reporter_secret_matches(reporter=reporter, given=NEW_SECRET)
    assert LogEntry.objects.filter(object_id=str(reporter.pk),
                                   change_message="[API] changed fixed, secret, slug").exists()


@pytest.mark.parametrize(("body", "where"), [
    ({"slug": "bria", "secret": "short", "fixed": {"Token-Type": "apple"}}, "code"),
    ({"slug": "bria", "secret": NEW_SECRET + "/..", "fixed": {"Token-Type": "apple"}}, "code"),
    ({"slug": "bria", "secret": NEW_SECRET, "fixed": {}}, "code"),
    ({"slug": "bria", "secret": NEW_SECRET, "fixed": {"Token-Type": "apple"}, "parameters": {"Username": "u"}},
     "code"),
    ({"slug": "bria", "secret": NEW_SECRET, "fixed": {"Token-Type": "apple"}, "user_agent_regex": "(a+)+$x("},
     "code"),
    ({"slug": "groundwire", "secret": NEW_SECRET, "fixed": {"Token-Type": "apple"}}, "code"),
    ({"slug": "../admin", "secret": NEW_SECRET, "fixed": {"Token-Type": "apple"}}, "slug"),
    ({"slug": "bria", "secret": 12345678901234567890123456, "fixed": {"Token-Type": "apple"}}, "secret"),
    ({"slug": "bria", "secret": NEW_SECRET, "fixed": ["Token-Type"]}, "fixed"),
    ({"slug": "bria", "secret": NEW_SECRET, "fixed": {"Token-Type": "apple"}, "auth": "password"}, "auth"),
])
def test_a_reporter_that_cannot_work_is_400(seed, admin_api, body, where) -> None:
    response = admin_api.post(URL, body, format="json")
    assert response.status_code == 400 and where in response.json(), response.json()
    if where == "code":
        assert response.json()["code"] == "reporter_invalid"
    assert TokenReporter.objects.count() == 1
    assert NEW_SECRET not in response.content.decode()


def test_filters_and_delete(seed, admin_api) -> None:
    admin_api.post(URL, {"slug": "off", "secret": NEW_SECRET, "fixed": {"Token-Type": "apple"}, "enabled": False},
                   format="json")
    assert [r["slug"] for r in admin_api.get(URL, {"enabled": "false"}).json()["results"]] == ["off"]
    assert [r["slug"] for r in admin_api.get(URL, {"slug": "groundwire"}).json()["results"]] == ["groundwire"]
    assert admin_api.delete(f"{URL}{seed.reporter.pk}/").status_code == 204
    assert list(TokenReporter.objects.values_list("slug", flat=True)) == ["off"]
