"""Kazoo's system_config/pusher in and out: kazoo.config against the real database."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from core.errors import PusherError, RuleError
from kazoo.config import kazoo_config_export, kazoo_config_import
from kazoo.uatest import user_agent_test
from push.models import Credential, CredentialKind, Provider, PushApp
from registry.models import UserAgentRule
from tests.certs import make_apns_certificate, make_service_account
from tests.fixtures import sample

pytestmark = pytest.mark.django_db

PROD = "com.acme.phone.voip.prod"
DEV = "com.acme.phone.voip.dev"
ANDROID = "com.acme.phone"


def system_config() -> dict[str, Any]:
    return sample("system_config_pusher_constructed.json")


def with_real_certificate(document: dict[str, Any]) -> tuple[dict[str, Any], str]:
    cert_pem, key_pem = make_apns_certificate("com.acme.phone", voip=True)
    document = copy.deepcopy(document)
    document[PROD]["apple"]["certificate"] = cert_pem + key_pem
    return document, cert_pem + key_pem


def snapshot() -> dict[str, Any]:
    """Every imported row's values, timestamps left out: what "the same rows" means."""
    def rows(queryset: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k not in ("created_at", "updated_at")} for row in queryset.values()]

    return {
        "rules": rows(UserAgentRule.objects.order_by("name")),
        "apps": rows(PushApp.objects.order_by("app_id", "provider")),
        "credentials": rows(Credential.objects.order_by("name")),
    }


def warning_about(summary: Any, *needles: str) -> str:
    found = [w for w in summary.warnings if all(n in w for n in needles)]
    assert found, f"no warning with {needles} in {summary.warnings}"
    return found[0]


# --- Import -------------------------------------------------------------------------------------


def test_sample_import_creates_rules_in_kazoo_order_and_the_apps():
    summary = kazoo_config_import(document=system_config())

    assert (summary.rules_created, summary.apps_created, summary.credentials_created) == (2, 3, 1)
    rules = list(UserAgentRule.objects.order_by("position"))
    assert [(r.name, r.position, r.regex, r.enabled) for r in rules] == [
        ("AcmePhone", 10, "^AcmePhone", True),
        ("Linphone", 20, "^Linphone", True),
    ]
    assert rules[0].properties == {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"}

    prod = PushApp.objects.get(app_id=PROD, provider=Provider.APPLE)
    assert prod.host == "api.push.apple.com" and prod.enabled
    # Kazoo's apns4erl header names become the typed fields; nothing left to override them.
    assert (prod.push_type, prod.priority, prod.expiration, prod.extra_headers) == ("voip", 10, 0, {})
    assert prod.credential is None
    dev = PushApp.objects.get(app_id=DEV, provider=Provider.APPLE)
    assert dev.host == "api.development.push.apple.com" and dev.credential is None

    android = PushApp.objects.get(app_id=ANDROID, provider=Provider.FIREBASE)
    assert (android.android_priority, android.ttl_s, android.enabled) == ("high", 0, True)
    assert android.credential.kind == CredentialKind.FCM_LEGACY_KEY
    assert android.credential.usable is False and android.credential.unusable_reason
    assert android.credential.secret == "AAAA...legacy-server-key"


def test_sample_import_warns_about_the_legacy_key_placeholders_and_extra_headers():
    summary = kazoo_config_import(document=system_config())

    assert "unusable" in warning_about(summary, ANDROID, "legacy key imported but unusable")
    # Both placeholder certificates ("-----BEGIN CERTIFICATE-----\n...\n" and "<PEM cert + ...>").
    assert "no credential" in warning_about(summary, PROD, "credential not imported")
    assert "no credential" in warning_about(summary, DEV, "credential not imported")
    assert "kz_endpoint" in warning_about(summary, ANDROID, "extra_headers")
    assert all("PRIVATE KEY" not in w and "legacy-server-key" not in w for w in summary.warnings)
    assert any(line.startswith("warning:") for line in summary.lines())


def test_real_certificate_is_parsed_stored_and_attached():
    document, secret = with_real_certificate(system_config())
    summary = kazoo_config_import(document=document)

    assert summary.credentials_created == 2
    prod = PushApp.objects.select_related("credential").get(app_id=PROD, provider=Provider.APPLE)
    credential = prod.credential
    assert credential is not None and credential.kind == CredentialKind.APNS_CERTIFICATE
    assert "com.acme.phone.voip" in credential.topics and credential.usable
    assert credential.not_after is not None and credential.fingerprint_sha256
    assert "BEGIN CERTIFICATE" in credential.secret
    assert not [w for w in summary.warnings if w.startswith(f"{PROD} ")]


def test_reimport_is_idempotent():
    document, _ = with_real_certificate(system_config())
    kazoo_config_import(document=document)
    before = snapshot()

    again = kazoo_config_import(document=document)

    assert snapshot() == before
    assert (again.rules_created, again.rules_updated, again.rules_unchanged) == (0, 0, 2)
    assert (again.apps_created, again.apps_updated, again.apps_unchanged) == (0, 0, 3)
    assert again.credentials_created == 0 and not again.changed


def test_reimport_updates_in_place():
    kazoo_config_import(document=system_config())
    document = system_config()
    document["default"]["User-Agents"]["AcmePhone"]["regex"] = "^AcmePhone/"
    document[DEV]["apple"]["host"] = "api.sandbox.push.apple.com"

    summary = kazoo_config_import(document=document)

    assert (summary.rules_updated, summary.apps_updated) == (1, 1)
    assert UserAgentRule.objects.get(name="AcmePhone").regex == "^AcmePhone/"
    assert PushApp.objects.get(app_id=DEV).host == "api.sandbox.push.apple.com"
    assert UserAgentRule.objects.count() == 2 and PushApp.objects.count() == 3


def test_placeholder_certificate_keeps_a_credential_the_app_already_has():
    document, _ = with_real_certificate(system_config())
    kazoo_config_import(document=document)
    credential_id = PushApp.objects.get(app_id=PROD).credential_id

    summary = kazoo_config_import(document=system_config())

    assert PushApp.objects.get(app_id=PROD).credential_id == credential_id
    assert "kept its current credential" in warning_about(summary, PROD, "credential not imported")


def test_invalid_regex_fails_the_whole_import_naming_the_rule():
    document = system_config()
    document["default"]["User-Agents"]["Linphone"]["regex"] = "^Linphone("

    with pytest.raises(RuleError, match="Linphone") as caught:
        kazoo_config_import(document=document)

    assert "regex" in caught.value.message
    assert UserAgentRule.objects.count() == 0 and PushApp.objects.count() == 0 and Credential.objects.count() == 0


@pytest.mark.parametrize("properties", [["Token-ID"], {"Token-ID": 1}])
def test_properties_must_map_strings_to_strings(properties):
    with pytest.raises(RuleError, match="Broken"):
        kazoo_config_import(document={"User-Agents": {"Broken": {"regex": "^B", "properties": properties}}})


def test_bare_user_agents_with_kazoo_defaults_for_missing_keys():
    summary = kazoo_config_import(document={"User-Agents": {"NoRegex": {"properties": {"Token-ID": "pn-tok"}},
                                                             "NoProps": {"regex": "^X"}}})
    assert summary.rules_created == 2
    no_regex, no_props = UserAgentRule.objects.order_by("position")
    assert (no_regex.name, no_regex.regex, no_regex.position) == ("NoRegex", "^$", 10)
    assert (no_props.name, no_props.properties, no_props.position) == ("NoProps", {}, 20)


def test_node_section_rules_are_added_after_the_default_ones():
    document = system_config()
    document["kazoo_apps@kz1.example.com"] = {"User-Agents": {
        "Zoiper": {"regex": "^Zoiper", "properties": {"Token-ID": "pn-tok"}},
        "AcmePhone": {"regex": "^Other"},
    }}

    summary = kazoo_config_import(document=document)

    assert list(UserAgentRule.objects.order_by("position").values_list("name", "position")) == [
        ("AcmePhone", 10), ("Linphone", 20), ("Zoiper", 30),
    ]
    assert UserAgentRule.objects.get(name="AcmePhone").regex == "^AcmePhone"
    warning_about(summary, "kazoo_apps@kz1.example.com", "own User-Agents")
    warning_about(summary, "AcmePhone", "differs")


def test_default_apple_certificate_is_not_applied_to_every_app():
    document, _ = with_real_certificate(system_config())
    document["default"]["apple"] = {"certificate": document[PROD]["apple"].pop("certificate")}

    summary = kazoo_config_import(document=document)

    assert "§9.15" in warning_about(summary, "default.apple.certificate")
    assert not PushApp.objects.filter(app_id="default").exists()
    assert not PushApp.objects.filter(credential__isnull=False, provider=Provider.APPLE).exists()
    assert not Credential.objects.filter(kind=CredentialKind.APNS_CERTIFICATE).exists()


def test_default_section_lends_its_non_secret_settings():
    document = system_config()
    document["default"]["apple"] = {"headers": {"apns_push_type": "alert"}, "host": "api.push.apple.com"}

    kazoo_config_import(document=document)

    assert PushApp.objects.get(app_id=DEV).push_type == "alert"  # no headers of its own
    assert PushApp.objects.get(app_id=PROD).push_type == "voip"  # its own headers win


def test_firebase_service_account_is_imported_as_http_v1_credential():
    info = make_service_account("acme-phone", "https://oauth2.googleapis.com/token")
    summary = kazoo_config_import(document={ANDROID: {"firebase": {"service_account": info}}})

    app = PushApp.objects.get(app_id=ANDROID)
    assert app.credential.kind == CredentialKind.FCM_SERVICE_ACCOUNT and app.credential.usable
    assert app.credential.project_id == "acme-phone" and summary.credentials_created == 1


def test_crossbar_envelope_is_unwrapped():
    summary = kazoo_config_import(document={"data": system_config(), "status": "success", "revision": "3-abc"})
    assert summary.rules_created == 2 and summary.apps_created == 3


@pytest.mark.parametrize("document", [[], {"_id": "pusher"}, {"default": {"apple": {"host": "h"}}}])
def test_a_document_with_nothing_to_import_is_refused(document):
    with pytest.raises(PusherError):
        kazoo_config_import(document=document)


# --- Export -------------------------------------------------------------------------------------


def test_export_layout_and_no_secrets():
    document, secret = with_real_certificate(system_config())
    kazoo_config_import(document=document)
    UserAgentRule.objects.create(name="Disabled", regex="^D", position=5, enabled=False)

    exported = kazoo_config_export()

    assert exported["_id"] == "pusher"
    assert list(exported["default"]["User-Agents"]) == ["AcmePhone", "Linphone"]
    assert exported["default"]["User-Agents"]["AcmePhone"] == document["default"]["User-Agents"]["AcmePhone"]
    assert exported[PROD]["apple"] == {
        "host": "api.push.apple.com",
        "headers": {"apns_push_type": "voip", "apns_priority": "10", "apns_expiration": "0"},
        "enabled": True,
    }
    assert exported[ANDROID]["firebase"] == {"headers": {"priority": "high", "time_to_live": 0}, "enabled": True}
    text = json.dumps(exported)
    for forbidden in ("certificate", "api_key", "service_account", "PRIVATE KEY", "legacy-server-key"):
        assert forbidden not in text
    for line in secret.splitlines():
        if len(line) > 16 and "-----" not in line:
            assert line not in text


def test_import_of_the_export_is_a_no_op():
    document, _ = with_real_certificate(system_config())
    kazoo_config_import(document=document)
    app = PushApp.objects.get(app_id=DEV)
    app.topic, app.port, app.collapse_id, app.extra_headers = "com.acme.phone", 8443, "calls", {"x-extra": "1"}
    app.save()
    before = snapshot()

    summary = kazoo_config_import(document=kazoo_config_export())

    assert snapshot() == before
    assert not summary.changed, summary
    assert (summary.rules_unchanged, summary.apps_unchanged) == (2, 3)


# --- Rule order after imports (issue 14) ---------------------------------------------------------

LINPHONE_5_UA = "LinphoneiOS/5.2.3 (iPhone de Alice) LinphoneSDK/5.3.30 (tags/5.3.30)"
APNS_VOIP = "b7e1c2d3a4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff"
LINPHONE_5_CONTACT = (
    f"<sip:alice@198.51.100.20:52000;transport=tls;pn-provider=apns;pn-prid={APNS_VOIP}:voip;"
    "pn-param=ABCD1234.org.linphone.phone.voip>"
)
RFC8599_RULE = {
    "regex": r"LinphoneSDK/[5-9]\.",
    "properties": {"Token-App": "pn-param", "Token-Type": "pn-provider", "Token-ID": "pn-prid"},
}


def positions() -> list[tuple[str, int]]:
    return list(UserAgentRule.objects.order_by("position", "name").values_list("name", "position"))


def test_second_import_puts_its_rules_first_with_unique_positions():
    kazoo_config_import(document=system_config())  # AcmePhone 10, Linphone (^Linphone) 20
    second = {"default": {"User-Agents": {
        "AcmePhone": system_config()["default"]["User-Agents"]["AcmePhone"],
        "LinphoneSDK-RFC8599": RFC8599_RULE,
    }}}

    summary = kazoo_config_import(document=second)

    # Before: LinphoneSDK-RFC8599 took position 20 next to the stale Linphone, whose name won the tie.
    assert positions() == [("AcmePhone", 10), ("LinphoneSDK-RFC8599", 20), ("Linphone", 30)]
    assert (summary.rules_created, summary.rules_unchanged, summary.rules_moved) == (1, 1, 1)
    assert [(p.name, p.position, p.previous, p.in_document) for p in summary.rule_positions] == [
        ("AcmePhone", 10, 10, True), ("LinphoneSDK-RFC8599", 20, None, True), ("Linphone", 30, 20, False),
    ]
    assert ("rule positions (the document's rules in its order, then the others in their previous order): "
            "10 AcmePhone, 20 LinphoneSDK-RFC8599 (new), 30 Linphone (not in the document, was 20)") in summary.lines()
    assert "position 30, was 20" in warning_about(summary, "'Linphone'", "not in the document")
    tested = user_agent_test(user_agent=LINPHONE_5_UA, contact=LINPHONE_5_CONTACT)
    assert (tested.rule, tested.reason) == ("LinphoneSDK-RFC8599", "ok")

    again = kazoo_config_import(document=second)
    assert not again.changed and positions() == [("AcmePhone", 10), ("LinphoneSDK-RFC8599", 20), ("Linphone", 30)]


def test_rules_not_in_the_document_follow_in_their_previous_order_ties_by_name():
    for name, position in (("Zeta", 5), ("Alpha", 5), ("Manual", 1), ("Beta", 100)):
        UserAgentRule.objects.create(name=name, regex=f"^{name}", position=position)

    summary = kazoo_config_import(document={"User-Agents": {"Zoiper": {"regex": "^Z ", "properties": {}},
                                                             "Bria": {"regex": "^Bria"}}})

    assert positions() == [("Zoiper", 10), ("Bria", 20), ("Manual", 30), ("Alpha", 40), ("Zeta", 50), ("Beta", 60)]
    assert summary.rules_moved == 4 and summary.changed
    assert len({p.position for p in summary.rule_positions}) == 6


def test_a_document_without_rules_leaves_their_order_alone():
    UserAgentRule.objects.create(name="Manual", regex="^M", position=7)
    UserAgentRule.objects.create(name="Other", regex="^O", position=7)

    summary = kazoo_config_import(document={ANDROID: {"firebase": {"api_key": "AAAA-key"}}})

    assert positions() == [("Manual", 7), ("Other", 7)]
    assert summary.rule_positions == [] and summary.rules_moved == 0
