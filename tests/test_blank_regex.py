"""A regex of spaces only is no regex: a User-Agent rule's and a token reporter's are refused through
the admin and the API alike (registry.models.validate_rule_regex, the one check)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from registry.models import TokenReporter, UserAgentRule
from tests.test_admin_json_fields import admin_add, api, reporter_form, rule_form

pytestmark = pytest.mark.django_db

__all__ = ["api"]  # a fixture

BLANKS = ["   ", "\t", " \n "]


@pytest.mark.parametrize("regex", BLANKS)
def test_a_blank_rule_regex_is_refused_by_admin_and_api(staff_client, api, regex) -> None:
    assert "regex" in admin_add(staff_client, "registry_useragentrule", rule_form(regex=regex))
    response = api.post("/api/v1/user-agent-rules/", {"name": "AcmePhone", "regex": regex, "properties": {}},
                        format="json")
    assert response.status_code == 400, response.json()
    assert not UserAgentRule.objects.exists()


@pytest.mark.parametrize("regex", BLANKS)
def test_a_blank_reporter_regex_is_refused_by_admin_and_api(staff_client, api, regex) -> None:
    assert "user_agent_regex" in admin_add(staff_client, "registry_tokenreporter",
                                           reporter_form(user_agent_regex=regex))
    response = api.post("/api/v1/token-reporters/", {"slug": "groundwire", "secret": "s" * 30,
                                                     "fixed": {"Token-Type": "apple"}, "user_agent_regex": regex},
                        format="json")
    assert response.status_code == 400, response.json()
    assert not TokenReporter.objects.exists()


def test_an_empty_reporter_regex_still_means_any_device(staff_client) -> None:
    assert admin_add(staff_client, "registry_tokenreporter", reporter_form(user_agent_regex="")) == {"saved": []}
    assert TokenReporter.objects.get().user_agent_regex == ""
    assert staff_client.get(reverse("admin:registry_tokenreporter_changelist")).status_code == 200
