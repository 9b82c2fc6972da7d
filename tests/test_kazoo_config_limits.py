"""import_kazoo_config and kazoo_config_import refuse what they cannot take in one line, exit non-zero:
a document too big, too many rules, nested too deep, text no store accepts, a name too long to quote."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.errors import PusherError, RuleError
from kazoo.config import MAX_IMPORT_RULES, MAX_KAZOO_CONFIG_BYTES, kazoo_config_import
from push.models import PushApp
from registry.models import UserAgentRule
from tests.deadline import within

pytestmark = pytest.mark.django_db

PROPERTIES = {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"}


def refused(path: str) -> str:
    with within(10), pytest.raises(CommandError) as caught:
        call_command("import_kazoo_config", path, stdout=io.StringIO(), stderr=io.StringIO())
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def rules(count: int) -> dict[str, Any]:
    return {"default": {"User-Agents": {
        f"Rule{i}": {"regex": f"^Rule{i}/", "properties": PROPERTIES} for i in range(count)
    }}}


def written(tmp_path: Path, document: Any = None, *, text: str | None = None) -> str:
    path = tmp_path / "pusher.json"
    path.write_text(text if text is not None else json.dumps(document), encoding="utf-8")
    return str(path)


# --- 2: size and count ---------------------------------------------------------------------------


def test_a_document_with_more_rules_than_the_cap_is_refused_whole():
    with pytest.raises(RuleError, match=f"at most {MAX_IMPORT_RULES}"):
        kazoo_config_import(document=rules(MAX_IMPORT_RULES + 1))
    assert not UserAgentRule.objects.exists()


def test_rules_across_sections_count_together():
    document = rules(MAX_IMPORT_RULES)
    document["node1"] = {"User-Agents": {"Extra": {"regex": "^Extra", "properties": PROPERTIES}}}
    with pytest.raises(RuleError, match=f"{MAX_IMPORT_RULES + 1} User-Agent rules"):
        kazoo_config_import(document=document)


def test_the_command_refuses_too_many_rules_in_one_line(tmp_path):
    message = refused(written(tmp_path, rules(MAX_IMPORT_RULES + 1)))
    assert f"at most {MAX_IMPORT_RULES}" in message
    assert not UserAgentRule.objects.exists()


def test_the_command_refuses_a_file_over_the_byte_limit(tmp_path):
    padding = " " * (MAX_KAZOO_CONFIG_BYTES + 1)
    assert "too large" in refused(written(tmp_path, text='{"User-Agents": {}}' + padding))


def test_the_command_refuses_a_directory(tmp_path):
    assert "is a directory" in refused(str(tmp_path))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_the_command_refuses_dev_zero_at_once():
    assert "not a regular file" in refused("/dev/zero")


def test_stdin_is_read_bounded_too(monkeypatch):
    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            buffer[:] = b" " * len(buffer)
            return len(buffer)

    class Stdin:
        buffer = io.BufferedReader(Endless())

    monkeypatch.setattr("sys.stdin", Stdin())
    assert "too large" in refused("-")


# --- 3: nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [100_000, 65])
def test_deeply_nested_json_is_refused_in_one_line(tmp_path, depth):
    message = refused(written(tmp_path, text='{"a":' * depth + "1" + "}" * depth))
    assert "nested deeper than 64 levels" in message


def test_nesting_at_the_limit_still_reads(tmp_path):
    # 64 levels is the API's limit too; Kazoo's document is 4 deep.
    document = '{"User-Agents": {"R": {"regex": "^R", "properties": ' + '{"a":' * 61 + "1" + "}" * 61 + "}}}"
    message = refused(written(tmp_path, text=document))
    assert "nested" not in message  # refused for its properties, by the rule's own validator


# --- 4: text no store accepts -------------------------------------------------------------------


AUDIT_DOCUMENT = json.dumps({"default": {"User-Agents": {"Y\u0000": {"regex": "^Y\ud800", "properties": PROPERTIES}}}})


@pytest.mark.parametrize(("document", "field", "problem"), [
    ({"User-Agents": {"Y\u0000": {"regex": "^Y", "properties": PROPERTIES}}}, "'Y\\x00'", "NUL"),
    ({"User-Agents": {"Y": {"regex": "^Y\ud800", "properties": PROPERTIES}}}, "'regex'", "lone surrogate"),
    ({"User-Agents": {"Y": {"regex": "^Y", "properties": {"Token-ID": "pn\u0000"}}}}, "'Token-ID'", "NUL"),
    ({"com.acme.phone": {"apple": {"apns_topic": "com.acme\ud800"}}}, "'apns_topic'", "lone surrogate"),
    ({"com.acme\u0000": {"firebase": {"api_key": "AAAA"}}}, "'com.acme\\x00'", "NUL"),
    ({"com.acme.phone": {"firebase": {"headers": {"collapse_key": ["x\u0000"]}}}}, "0", "NUL"),
])
def test_unstorable_text_is_refused_naming_its_field(document, field, problem):
    with pytest.raises(PusherError) as caught:
        kazoo_config_import(document=document)
    message = caught.value.message
    assert field in message and problem in message, message
    message.encode("utf-8")  # printable: the lone surrogate is quoted as an escape
    assert not UserAgentRule.objects.exists() and not PushApp.objects.exists()


def test_the_command_refuses_the_audit_document_in_one_line(tmp_path):
    message = refused(written(tmp_path, text=AUDIT_DOCUMENT))
    assert "'Y\\x00'" in message and "NUL" in message


# --- 8: names quoted short ----------------------------------------------------------------------


def test_a_long_rule_name_is_cut_in_the_message(tmp_path):
    name = "N" * 5000
    message = refused(written(tmp_path, {"User-Agents": {name: {"regex": "^N", "properties": PROPERTIES}}}))
    assert "1 to 200 characters" in message and "..." in message and len(message) < 300


@pytest.mark.parametrize("document", [
    {"User-Agents": {"S" * 5000: "not an object"}},
    {"sect" * 2000: {"User-Agents": []}},
    {"User-Agents": {"K\u0000" * 3000: {}}},
])
def test_long_names_are_cut_in_every_refusal(document):
    with pytest.raises(PusherError) as caught:
        kazoo_config_import(document=document)
    assert len(caught.value.message) < 300, caught.value.message[:300]


def test_long_names_are_cut_in_warnings():
    summary = kazoo_config_import(document={"User-Agents": {"R": {"regex": "^R"}}, "x" * 5000: "not a section"})
    assert summary.warnings and all(len(warning) < 300 for warning in summary.warnings)
