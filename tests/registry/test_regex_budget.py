"""Rule regexes are measured before they compile (registry.regex_budget): a hostile one is refused
with the reason through every face (API, admin, Kazoo import), and compiled rule regexes do not
outlive their rules in the caches."""

from __future__ import annotations

import gc
import html
import json
import os
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.errors import RuleError
from registry import pushobject, regex_budget, selectors, services
from registry.models import UserAgentRule, validate_rule_regex
from registry.pushobject import compile_rule_regex, rule_match
from tests.api.conftest import token_client

HOSTILE = "((a{1000}){1000}){1000}"  # grew the web process to ~24 GB
HOSTILE_REASON = "too complex: its repetition counts expand it to 1,000,000,000 elements (limit 10,000)"
PROPS = {"Token-ID": "pn-tok", "Token-Type": "pn-type", "Token-App": "app-id"}
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "pattern",
    [
        "^Linphone(SDK)?/[0-9.]+",
        r"^(Bria|Zoiper)\b.{0,50}",
        "^AcmePhone",
        "",
        ".*",
        r"(\d{1,3}\.){3}\d{1,3}",
        r"^\p{L}+ [0-9]{1,4}",  # regex-only syntax
        "(?x) ^ Acme \\s Phone",
        "(?i)^(?:groundwire|acrobits)",
        "(?:a{100}){100}",  # exactly the limit
        "a{10000}",
        "a+b*c?" * 50,
        "x" * 1000,
    ],
)
def test_ordinary_patterns_are_within_budget(pattern: str) -> None:
    assert regex_budget.regex_refusal(pattern) is None
    compile_rule_regex(pattern)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a{1000}){1000}", "too complex: its repetition counts expand it to 1,000,000 elements (limit 10,000)"),
        (HOSTILE, HOSTILE_REASON),
        ("(?:a{1000}){1000}", "1,000,000 elements"),
        ("(a{999,1000}){999,1000}", "1,000,000 elements"),
        ("(a{0,1000}){0,1000}", "1,000,000 elements"),  # counted by the upper bound: conservative
        ("(a{1000,}){1000,}", "1,000,000 elements"),
        ("(?x)(a{1 000}){1 000}", "1,000,000 elements"),  # verbose mode: the re module reads these as text
        (r"(\p{L}{1000}){1000}", "1,000,000 elements"),
        ("a{10001}", "10,001 elements"),
        ("(?:a{100}b{100}){51}", "10,200 elements"),
        ("(?:ab|cd){1,5001}", "20,004 elements"),
        ("x" * 1001, "too long: 1,001 characters (limit 1,000)"),
        ("(" * 101 + "a" + ")" * 101, "too deeply nested"),
    ],
)
def test_costly_patterns_are_refused_with_the_reason(pattern: str, reason: str) -> None:
    assert reason in regex_budget.regex_refusal(pattern)
    with pytest.raises(RuleError) as caught:
        compile_rule_regex(pattern)
    assert reason in caught.value.message


def test_the_installed_regex_parser_is_the_one_measuring() -> None:
    """If a regex upgrade breaks its private parser, the budget falls back to a child process;
    this says so loudly instead of letting every save pay for one."""
    assert regex_budget._parser_usable()


@pytest.mark.parametrize("pattern", ["(unclosed", "a{2,1}", "(?P<x"])
def test_syntax_errors_are_left_to_the_compiler(pattern: str) -> None:
    assert regex_budget.regex_refusal(pattern) is None
    with pytest.raises(RuleError, match="invalid User-Agent regex"):
        compile_rule_regex(pattern)


def test_a_regex_of_another_version_is_a_rule_error_not_a_crash() -> None:
    with pytest.raises(RuleError, match="VERSION0 and VERSION1"):
        compile_rule_regex("(?V1)[[a-z]--[b]]")


def test_without_the_parser_a_limited_child_process_compiles(monkeypatch) -> None:
    monkeypatch.setattr(regex_budget, "_parser_usable", lambda: False)
    assert regex_budget.regex_refusal("^Linphone(SDK)?/[0-9.]+") is None
    assert regex_budget.regex_refusal("(unclosed") is None
    refusal = regex_budget.regex_refusal("(a{1000}){1000}")
    assert refusal == "too complex: compiling it needs more than 64 MB or 2 s of CPU"
    assert regex_budget.regex_refusal("x" * 1001).startswith("too long")


def test_a_pattern_the_parser_trips_on_is_compiled_in_the_child(monkeypatch) -> None:
    def broken(pattern: str, flags: int) -> int:
        raise AttributeError("a regex internal that moved")

    monkeypatch.setattr(regex_budget, "regex_size", broken)
    assert regex_budget.regex_refusal("(a{1000}){1000}").startswith("too complex: compiling it needs more than")
    assert regex_budget.regex_refusal("^Linphone") is None


CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
import django
django.setup()
from django.core.exceptions import ValidationError
from registry.models import validate_rule_regex
answers = {}
for pattern in sys.argv[1:]:
    started = time.monotonic()
    try:
        validate_rule_regex(pattern)
        answer = "accepted"
    except ValidationError as exc:
        answer = " ".join(exc.messages)
    answers[pattern] = [answer, time.monotonic() - started]
import regex
try:  # the control: the same regex compiled without the budget does not fit in 1 GiB
    regex.compile(sys.argv[1], cache_pattern=False)
    answers["control"] = "compiled"
except MemoryError:
    answers["control"] = "MemoryError"
print(json.dumps(answers))
"""


def test_validation_under_a_1_gib_address_space_refuses_promptly() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "pusher_site.settings"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, HOSTILE, "(a{1000}){1000}", "^Linphone(SDK)?/[0-9.]+"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert HOSTILE_REASON in answers[HOSTILE][0]
    assert "1,000,000 elements (limit 10,000)" in answers["(a{1000}){1000}"][0]
    assert answers["^Linphone(SDK)?/[0-9.]+"][0] == "accepted"
    assert all(seconds < 1.0 for _, seconds in (answers[HOSTILE], answers["(a{1000}){1000}"]))
    assert answers["control"] == "MemoryError"
    assert time.monotonic() - started < 60


# --- Every face refuses the hostile regex, saying why, and stores nothing -------------------------


@pytest.mark.django_db
def test_api_refuses_the_hostile_regex(staff_user, acme_rule) -> None:
    api = token_client(staff_user)
    response = api.post("/api/v1/user-agent-rules/", {"name": "Hostile", "regex": HOSTILE, "properties": PROPS},
                        format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "rule_invalid"
    assert HOSTILE_REASON in response.json()["message"]
    assert not UserAgentRule.objects.filter(name="Hostile").exists()

    response = api.patch(f"/api/v1/user-agent-rules/{acme_rule.pk}/", {"regex": HOSTILE}, format="json")
    assert response.status_code == 400 and HOSTILE_REASON in response.json()["message"]
    acme_rule.refresh_from_db()
    assert acme_rule.regex == "^AcmePhone"


@pytest.mark.django_db
def test_admin_add_form_refuses_the_hostile_regex(staff_client) -> None:
    url = reverse("admin:registry_useragentrule_add")
    form = {"name": "Hostile", "position": "100", "enabled": "on", "properties": json.dumps(PROPS),
            "description": ""}

    response = staff_client.post(url, {**form, "regex": HOSTILE})

    assert response.status_code == 200  # the form again, with the error
    assert HOSTILE_REASON in html.unescape(response.content.decode())
    assert not UserAgentRule.objects.exists()
    # The same form with an ordinary regex is saved: the refusal was the regex's.
    assert staff_client.post(url, {**form, "regex": "^Linphone"}).status_code == 302
    assert UserAgentRule.objects.get(name="Hostile").regex == "^Linphone"


@pytest.mark.django_db
def test_kazoo_config_import_refuses_the_hostile_regex_whole() -> None:
    from kazoo.config import kazoo_config_import

    document = {"User-Agents": {"Good": {"regex": "^Good", "properties": PROPS},
                                "Hostile": {"regex": HOSTILE, "properties": PROPS}}}

    with pytest.raises(RuleError) as caught:
        kazoo_config_import(document=document)

    assert "'Hostile'" in caught.value.message and HOSTILE_REASON in caught.value.message
    assert not UserAgentRule.objects.exists()


# --- The compiled-regex cache forgets rules that are gone -----------------------------------------


def _compiled_ref(pattern: str) -> weakref.ref:
    return weakref.ref(compile_rule_regex(pattern))


def _gone(ref: weakref.ref) -> bool:
    gc.collect()
    return ref() is None


@pytest.mark.django_db
def test_a_deleted_rules_compiled_regex_is_forgotten() -> None:
    rule = services.user_agent_rule_create(name="Forget", regex="^ForgetMe/[0-9]{1,3}", properties=PROPS)
    assert rule_match(selectors.user_agent_rules_enabled(), "ForgetMe/12").name == "Forget"
    ref = _compiled_ref(rule.regex)
    assert ref() is not None

    services.user_agent_rule_delete(rule=rule)

    assert _gone(ref)  # neither our cache nor the regex module's own keeps it


@pytest.mark.django_db
def test_a_rule_deleted_by_another_process_is_forgotten_at_the_next_read() -> None:
    """The consumer hears of no _rules_changed: it notices the rule set changed when it reads it."""
    rule = UserAgentRule.objects.create(name="Elsewhere", regex="^Elsewhere", properties=PROPS)
    assert rule_match(selectors.user_agent_rules_enabled(), "Elsewhere 1").name == "Elsewhere"
    kept = _compiled_ref("^Elsewhere")
    selectors.user_agent_rules_enabled(fresh=True)  # the same rules again: the cache stays
    assert not _gone(kept)

    UserAgentRule.objects.filter(pk=rule.pk).delete()  # not through the services: no hook runs here
    selectors.user_agent_rules_enabled(fresh=True)  # the read after RULES_TTL_S

    assert _gone(kept)


@pytest.mark.django_db
def test_validating_a_regex_does_not_cache_it() -> None:
    before = compile_rule_regex.cache_info().currsize
    validate_rule_regex("^OnlyValidated")
    with pytest.raises(ValidationError):
        validate_rule_regex(HOSTILE)
    assert compile_rule_regex.cache_info().currsize == before


def test_the_caches_are_bounded() -> None:
    assert compile_rule_regex.cache_info().maxsize == 128
    assert pushobject._rule_found.cache_info().maxsize == 4096
