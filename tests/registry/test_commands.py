"""The registry's management commands: Kazoo config import/export and match_user_agent."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from kazoo.config import PLACEHOLDER_ACCOUNT_ID, kazoo_config_import
from kazoo.management.commands.match_user_agent import Command as MatchCommand
from push.models import PushApp
from registry.models import Device, UserAgentRule
from tests.fixtures import sample

pytestmark = pytest.mark.django_db

def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def kazoo_rules(db):
    kazoo_config_import(document=sample("system_config_pusher_constructed.json"))


# --- import_kazoo_config / export_kazoo_config --------------------------------------------------


def test_import_prints_the_summary(tmp_path):
    path = tmp_path / "pusher.json"
    path.write_text(json.dumps(sample("system_config_pusher_constructed.json")))

    out = run("import_kazoo_config", str(path))

    assert "User-Agent rules: 2 created, 0 updated, 0 unchanged" in out
    assert "push apps: 3 created" in out and "credentials: 1 created" in out
    assert "legacy key imported but unusable" in out
    assert UserAgentRule.objects.count() == 2 and PushApp.objects.count() == 3

    assert "2 unchanged" in run("import_kazoo_config", str(path))


def test_import_refuses_an_invalid_regex_and_bad_files(tmp_path):
    document = sample("system_config_pusher_constructed.json")
    document["default"]["User-Agents"]["AcmePhone"]["regex"] = "[unclosed"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(CommandError, match="AcmePhone"):
        run("import_kazoo_config", str(path))
    assert not UserAgentRule.objects.exists()

    path.write_text("{not json")
    with pytest.raises(CommandError, match="not JSON"):
        run("import_kazoo_config", str(path))
    with pytest.raises(CommandError, match="cannot read"):
        run("import_kazoo_config", str(tmp_path / "missing.json"))


def test_export_to_stdout_and_to_a_file(kazoo_rules, tmp_path):
    exported = json.loads(run("export_kazoo_config"))
    assert list(exported["default"]["User-Agents"]) == ["AcmePhone", "Linphone"]
    assert "certificate" not in json.dumps(exported) and "api_key" not in json.dumps(exported)

    path = tmp_path / "out.json"
    run("export_kazoo_config", str(path))
    assert json.loads(path.read_text()) == exported


# --- match_user_agent ---------------------------------------------------------------------------


def test_match_user_agent_on_the_kazoo_sample_gives_the_sample_push_object(kazoo_rules):
    body = sample("reg_success_kamailio_master.json")["body"]
    ccvs = body["Custom-Channel-Vars"]

    out = run(
        "match_user_agent", "--user-agent", body["User-Agent"], "--contact", body["Contact"],
        "--field", f"Proxy-Path={body['Proxy-Path']}",
        "--field", f"Custom-Channel-Vars.Account-ID={ccvs['Account-ID']}",
        "--field", f"Custom-Channel-Vars.Authorizing-ID={ccvs['Authorizing-ID']}",
    )

    result = json.loads(out)
    assert result["rule"] == "AcmePhone"
    assert result["push"] == sample("device_push_object.json")["doc"]["push"]
    assert result["tokens"] == [{
        "token": result["push"]["Token-ID"], "type": "apple", "app": "com.acme.phone.voip.prod", "kind": "voip",
    }]
    assert not Device.objects.exists()  # a test, not a registration


def test_match_user_agent_uses_placeholder_ids_by_default(kazoo_rules):
    body = sample("reg_success_kamailio_master.json")["body"]
    result = json.loads(run("match_user_agent", "--user-agent", body["User-Agent"], "--contact", body["Contact"]))

    assert result["push"]["Token-ID"] and result["reason"] == "ok"
    assert "Token-Proxy" not in result["push"]  # no Proxy-Path given
    assert PLACEHOLDER_ACCOUNT_ID in MatchCommand.help  # the placeholders are documented


def test_match_user_agent_without_a_matching_rule(kazoo_rules):
    result = json.loads(run("match_user_agent", "--user-agent", "Yealink T46", "--contact", "<sip:1@192.0.2.1>"))
    assert result == {"rule": None, "push": None, "tokens": [], "reason": "no rule matched"}


def test_match_user_agent_with_an_unparsable_contact(kazoo_rules):
    with pytest.raises(CommandError, match="Contact does not parse: unbalanced '<'"):
        run("match_user_agent", "--user-agent", "AcmePhone iOS 3.2.1", "--contact", "<sip:broken")


def test_match_user_agent_refuses_a_field_without_equals(kazoo_rules):
    with pytest.raises(CommandError, match="KEY=VALUE"):
        run("match_user_agent", "--user-agent", "AcmePhone", "--contact", "<sip:a@b>", "--field", "Proxy-Path")
