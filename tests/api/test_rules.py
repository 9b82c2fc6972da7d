"""/api/v1/user-agent-rules/: CRUD in match order, the tester, Kazoo config import/export."""

import io
import json

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command

from push.models import PushApp
from registry.models import UserAgentRule
from registry.selectors import user_agent_rules_enabled

pytestmark = pytest.mark.django_db

URL = "/api/v1/user-agent-rules/"
PROPS = {"Token-ID": "pn-tok", "Token-App": "app-id", "Token-Type": "pn-type"}
# An APNs token is 64 hex digits: a shorter one is refused (registry.pushobject.push_token_problem).
TOKEN = "abc123" * 10 + "abcd"
CONTACT = f"<sip:u@192.0.2.1:5060;app-id=com.acme.phone.voip.prod;pn-tok={TOKEN};pn-type=apple>;expires=600"


def test_list_in_match_order(seed, admin_api) -> None:
    UserAgentRule.objects.create(name="First", position=1, regex="^First", properties=PROPS)
    UserAgentRule.objects.create(name="Off", position=50, regex="^Off", properties=PROPS, enabled=False)
    assert [r["name"] for r in admin_api.get(URL).json()["results"]] == ["First", "AcmePhone", "Off"]
    assert [r["name"] for r in admin_api.get(URL, {"enabled": "false"}).json()["results"]] == ["Off"]


def test_create_is_seen_by_the_matcher_at_once(seed, admin_api) -> None:
    user_agent_rules_enabled()  # warm the cache the consumer reads
    response = admin_api.post(URL, {"name": "Linphone", "position": 5, "regex": "^Linphone", "properties": PROPS},
                              format="json")
    assert response.status_code == 201, response.json()
    assert [r.name for r in user_agent_rules_enabled()] == ["Linphone", "AcmePhone"]


@pytest.mark.parametrize("regex", ["(unclosed", "a{2,1}", "(?P<x"])
def test_invalid_regex_is_400_rule_invalid(seed, admin_api, regex) -> None:
    response = admin_api.post(URL, {"name": "Bad", "regex": regex, "properties": PROPS}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "rule_invalid" and regex in response.json()["message"]
    response = admin_api.patch(f"{URL}{seed.rule.pk}/", {"regex": regex}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "rule_invalid"
    seed.rule.refresh_from_db()
    assert seed.rule.regex == "^AcmePhone"


def test_properties_must_map_strings(seed, admin_api) -> None:
    response = admin_api.post(URL, {"name": "P", "regex": "^P", "properties": {"Token-ID": 1}}, format="json")
    assert response.status_code == 400 and "properties" in response.json()
    response = admin_api.post(URL, {"name": "P", "regex": "^P", "properties": {"Token-ID": "a\x00b"}}, format="json")
    assert response.status_code == 400


def test_duplicate_name(seed, admin_api) -> None:
    response = admin_api.post(URL, {"name": "AcmePhone", "regex": "^X", "properties": {}}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "rule_invalid"


def test_update_and_delete(seed, admin_api) -> None:
    response = admin_api.put(f"{URL}{seed.rule.pk}/", {"name": "Acme", "regex": "^Acme", "properties": PROPS,
                                                       "enabled": False}, format="json")
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert user_agent_rules_enabled() == ()
    assert admin_api.delete(f"{URL}{seed.rule.pk}/").status_code == 204
    assert not UserAgentRule.objects.exists()


def test_match_answers_what_the_command_prints(seed, admin_api) -> None:
    response = admin_api.post(f"{URL}match/", {"user_agent": "AcmePhone iOS", "contact": CONTACT,
                                               "fields": {"Proxy-Path": "sip:10.0.0.5"}}, format="json")
    assert response.status_code == 200
    out = io.StringIO()
    call_command("match_user_agent", "--user-agent", "AcmePhone iOS", "--contact", CONTACT,
                 "--field", "Proxy-Path=sip:10.0.0.5", stdout=out)
    assert response.json() == json.loads(out.getvalue())
    assert response.json()["rule"] == "AcmePhone"
    assert response.json()["push"] == {"Token-App": "com.acme.phone.voip.prod", "Token-Type": "apple",
                                       "Token-ID": TOKEN, "Token-Proxy": "sip:10.0.0.5"}
    assert response.json()["tokens"] == [{"token": TOKEN, "type": "apple", "app": "com.acme.phone.voip.prod",
                                          "kind": "voip"}]


def test_match_no_rule_and_bad_contact(seed, admin_api) -> None:
    response = admin_api.post(f"{URL}match/", {"user_agent": "Yealink", "contact": CONTACT}, format="json")
    assert response.json() == {"rule": None, "push": None, "tokens": [], "reason": "no rule matched"}
    response = admin_api.post(f"{URL}match/", {"user_agent": "AcmePhone", "contact": "<<<"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "contact_unparsable"


def test_export_then_import_changes_nothing(seed, admin_api) -> None:
    document = admin_api.get(f"{URL}export/").json()
    assert document["default"]["User-Agents"]["AcmePhone"]["regex"] == "^AcmePhone"
    assert "certificate" not in json.dumps(document)
    response = admin_api.post(f"{URL}import/", document, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["changed"] is False and response.json()["rules_unchanged"] == 1


def test_import_kazoo_document(seed, admin_api, users) -> None:
    document = {"_id": "pusher", "default": {"User-Agents": {
        "Linphone": {"regex": "^Linphone", "properties": PROPS}}},
        "com.example.voip": {"apple": {"host": "api.sandbox.push.apple.com"}}}
    response = admin_api.post(f"{URL}import/", {"data": document, "status": "success"}, format="json")
    assert response.status_code == 200, response.json()
    summary = response.json()
    assert summary["rules_created"] == 1 and summary["apps_created"] == 1 and summary["changed"]
    assert PushApp.objects.get(app_id="com.example.voip").host == "api.sandbox.push.apple.com"
    entry = LogEntry.objects.latest("pk")
    assert entry.user == users["admin"] and "rules: 1 created" in entry.change_message


def test_import_refuses_a_bad_regex_whole(seed, admin_api) -> None:
    document = {"default": {"User-Agents": {"Good": {"regex": "^G"}, "Bad": {"regex": "(("}}}}
    response = admin_api.post(f"{URL}import/", document, format="json")
    assert response.status_code == 400 and response.json()["code"] == "rule_invalid"
    assert not UserAgentRule.objects.filter(name="Good").exists()
    assert admin_api.post(f"{URL}import/", [1, 2], format="json").status_code == 400
