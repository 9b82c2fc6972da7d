"""Every write through one service (issue 12, item 6): each rule holds whatever face a write comes in by.

The faces: the admin (its forms, list_editable, actions, deletes), the REST API, the management
commands and the Kazoo config import (the service, `import_kazoo_config` and the API's import). Each
table below is one rule; each row is one face, driven as an operator or a client drives it."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from core.errors import PusherError, RuleError
from hooks.models import Alert, WebhookDelivery, WebhookSubscription
from kazoo.config import kazoo_config_import
from push import services
from push.models import Credential, CredentialKind, Delivery, Provider, PushApp
from registry import reporting, selectors
from registry.models import Device, PushToken, TokenReporter, UserAgentRule
from registry.reporter import DEFAULT_PARAMETERS, secret_problem
from registry.services import registration_apply
from tests.certs import make_apns_certificate, make_service_account

pytestmark = pytest.mark.django_db

APP = "com.acme.phone.voip.prod"  # the Kamailio sample's Token-App: topic com.acme.phone.voip
FCM_APP = "com.acme.phone"
LEGACY_KEY = "AAAA-legacy-server-key:APA91bOLDKAZOOKEY"


# --- The faces ---------------------------------------------------------------------------------------


@pytest.fixture
def api(staff_api: APIClient) -> APIClient:
    return staff_api


def pem(bundle: str = "com.acme.phone", **kwargs: Any) -> str:
    cert, key = make_apns_certificate(bundle, voip=True, **kwargs)
    return cert + key


def cert_credential(name: str, bundle: str = "com.acme.phone", **kwargs: Any) -> Credential:
    parsed = services.credential_parse(kind=CredentialKind.APNS_CERTIFICATE, data=pem(bundle, **kwargs))
    return services.credential_save(name=name, parsed=parsed)


def service_account_credential(name: str = "acme fcm") -> Credential:
    info = make_service_account("acme-phone", "https://127.0.0.1:9/token")
    parsed = services.credential_parse(kind=CredentialKind.FCM_SERVICE_ACCOUNT, data=json.dumps(info))
    return services.credential_save(name=name, parsed=parsed)


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def form_errors(response: Any) -> dict[str, list[str]]:
    """The admin form's errors when the page came back with them (nothing saved), else {}."""
    if response.status_code != 200 or not response.context or "adminform" not in response.context:
        return {}
    return {name: [str(e) for e in errors] for name, errors in response.context["adminform"].form.errors.items()}


def app_form(app: PushApp | None = None, **changes: Any) -> dict[str, Any]:
    """The push app admin form as the browser posts it (an existing app's current values)."""
    data: dict[str, Any] = {
        "app_id": APP, "provider": "apple", "enabled": "on", "credential": "", "description": "",
        "host": "api.push.apple.com", "port": "443", "topic": "", "push_type": "voip", "priority": "10",
        "expiration": "", "collapse_id": "", "extra_headers": "{}", "project_id": "", "android_priority": "high",
        "ttl_s": "30", "flagged_reason": "",
    }
    if app is not None:
        data.update({
            "app_id": app.app_id, "provider": app.provider, "enabled": "on" if app.enabled else "",
            "credential": app.credential_id or "", "host": app.host, "port": str(app.port), "topic": app.topic,
            "push_type": app.push_type, "priority": str(app.priority), "ttl_s": str(app.ttl_s),
            "extra_headers": json.dumps(app.extra_headers), "android_priority": app.android_priority,
            "flagged_reason": app.flagged_reason,
        })
    data.update(changes)
    return data


def admin_app_save(client: Any, app: PushApp | None = None, **changes: Any) -> Any:
    url = reverse("admin:push_pushapp_change", args=[app.pk]) if app else reverse("admin:push_pushapp_add")
    return client.post(url, app_form(app, **changes), follow=True)


def admin_action(client: Any, model: str, action: str, *objects: Any) -> Any:
    return client.post(reverse(f"admin:{model}_changelist"),
                       {"action": action, ACTION_CHECKBOX_NAME: [str(o.pk) for o in objects]}, follow=True)


def import_through(face: str, document: dict[str, Any], *, api: APIClient, tmp_path: Path) -> list[str]:
    """The Kazoo config import by one of its faces; returns the warnings it reported."""
    if face == "service":
        return kazoo_config_import(document=document).warnings
    if face == "command":
        path = tmp_path / "system_config_pusher.json"
        path.write_text(json.dumps(document))
        return [line.removeprefix("warning: ") for line in command("import_kazoo_config", str(path)).splitlines()
                if line.startswith("warning: ")]
    response = api.post("/api/v1/user-agent-rules/import/", document, format="json")
    assert response.status_code == 200, response.content
    return response.json()["warnings"]


IMPORT_FACES = ["service", "command", "api"]


# --- A host is a host name or an IP address; host:port is split, anything else refused ---------------

HOSTS = [
    # (typed, stored (host, port) or None when refused)
    ("127.0.0.1:18543", ("127.0.0.1", 18543)),
    ("relay.example.com:8443", ("relay.example.com", 8443)),
    ("[::1]:8443", ("::1", 8443)),
    ("api.sandbox.push.apple.com", ("api.sandbox.push.apple.com", 443)),
    ("10.0.0.7", ("10.0.0.7", 443)),
    ("not a host", None),
    ("https://api.push.apple.com/", None),
    ("relay.example.com:99999", None),
    ("10.0.0.300", None),
]
APP_FACES = ["admin", "api", "command", "import"]


def host_through(face: str, host: str, *, staff_client: Any, api: APIClient, tmp_path: Path) -> str:
    """Create the app with `host` by one face; returns the refusal or warning it showed ("" if none)."""
    if face == "admin":
        response = admin_app_save(staff_client, host=host)
        return " ".join(form_errors(response).get("host", []))
    if face == "api":
        response = api.post("/api/v1/apps/", {"app_id": APP, "provider": "apple", "host": host}, format="json")
        return "" if response.status_code == 201 else response.json()["message"]
    if face == "command":
        path = tmp_path / "cert.pem"
        path.write_text(pem())
        try:
            command("add_apple_app", APP, str(path), host)
        except CommandError as exc:
            return str(exc)
        return ""
    warnings = kazoo_config_import(document={APP: {"apple": {"host": host}}}).warnings
    return " ".join(w for w in warnings if "apple.host" in w)


@pytest.mark.parametrize(("typed", "stored"), HOSTS, ids=[h for h, _ in HOSTS])
@pytest.mark.parametrize("face", APP_FACES)
def test_a_host_is_checked_and_host_port_split_by_every_face(face, typed, stored, staff_client, api, tmp_path):
    refusal = host_through(face, typed, staff_client=staff_client, api=api, tmp_path=tmp_path)

    app = PushApp.objects.filter(app_id=APP).first()
    if stored is not None:
        assert refusal == ""
        assert app is not None and (app.host, app.port) == stored
    else:
        assert "host" in refusal and typed.strip("/") in refusal.replace("'", "")  # names what was refused
        # Nothing with that host is stored: the import keeps the app, with its default host.
        assert app is None or (face == "import" and app.host == "api.push.apple.com")


def test_add_apple_app_takes_the_port_as_an_option(tmp_path):
    path = tmp_path / "cert.pem"
    path.write_text(pem())
    command("add_apple_app", APP, str(path), "relay.example.com", "--port", "8443")
    assert PushApp.objects.values_list("host", "port").get() == ("relay.example.com", 8443)

    # A later run without a port is back on Apple's: no relay port left behind on Apple's host.
    command("add_apple_app", APP, str(path))
    assert PushApp.objects.values_list("host", "port").get() == ("api.push.apple.com", 443)

    with pytest.raises(CommandError, match="port 8443 but the port given is 9443"):
        command("add_apple_app", APP, str(path), "relay.example.com:8443", "--port", "9443")


def test_a_stored_host_port_is_split_by_the_migration():
    """What add_apple_app stored before hosts were checked is repaired on migrate."""
    import importlib

    from django.apps import apps as django_apps

    migration = importlib.import_module("push.migrations.0003_pushapp_host_port_checked")
    broken = PushApp.objects.create(app_id=APP, provider=Provider.APPLE, host="127.0.0.1:18543")
    fine = PushApp.objects.create(app_id="com.fine.app", provider=Provider.APPLE, host="::1", port=8443)

    migration.split_host_ports(django_apps, None)

    broken.refresh_from_db()
    fine.refresh_from_db()
    assert (broken.host, broken.port) == ("127.0.0.1", 18543)
    assert (fine.host, fine.port) == ("::1", 8443)


# --- A certificate that does not cover the app's topic is a warning on every face ---------------------


def topic_warnings_through(face: str, bundle: str, *, staff_client: Any, api: APIClient, tmp_path: Path) -> str:
    """Put a certificate of `bundle` on APP by one face; returns the warnings that face showed."""
    if face == "command":
        path = tmp_path / "cert.pem"
        path.write_text(pem(bundle))
        return command("add_apple_app", APP, str(path))
    if face == "import":
        return " ".join(kazoo_config_import(document={APP: {"apple": {"certificate": pem(bundle)}}}).warnings)
    credential = cert_credential(f"{bundle} cert", bundle)
    if face == "admin":
        response = admin_app_save(staff_client, credential=credential.pk)
        assert response.redirect_chain, form_errors(response)
        return " ".join(messages_of(response))
    response = api.post("/api/v1/apps/", {"app_id": APP, "provider": "apple", "credential": credential.pk},
                        format="json")
    assert response.status_code == 201, response.content
    return " ".join(response.json()["warnings"])


@pytest.mark.parametrize(("bundle", "warned"), [("com.other.app", True), ("com.acme.phone", False)])
@pytest.mark.parametrize("face", APP_FACES)
def test_a_certificate_not_covering_the_topic_is_a_warning_on_every_face(face, bundle, warned, staff_client, api,
                                                                           tmp_path):
    shown = topic_warnings_through(face, bundle, staff_client=staff_client, api=api, tmp_path=tmp_path)

    assert ("TopicDisallowed" in shown) is warned
    if warned:
        assert "com.acme.phone.voip" in shown  # the topic the app pushes to
    # The app is saved either way: a warning, not a refusal.
    assert PushApp.objects.get(app_id=APP).credential.topics[0] == bundle


def test_the_warning_follows_an_edit_of_the_topic(staff_client, api):
    app = services.push_app_upsert(app_id=APP, provider=Provider.APPLE, credential=cert_credential("acme"))
    assert services.push_app_warnings(app=app) == ()

    shown = api.patch(f"/api/v1/apps/{app.pk}/", {"topic": "com.elsewhere"}, format="json").json()["warnings"]
    assert any("TopicDisallowed" in w for w in shown)
    response = admin_app_save(staff_client, PushApp.objects.get(), topic="com.acme.phone")
    assert not [m for m in messages_of(response) if "TopicDisallowed" in m]
    assert api.get(f"/api/v1/apps/{app.pk}/").json()["warnings"] == []


# --- A credential that can send is never replaced by one that cannot ----------------------------------


@pytest.fixture
def working_apps() -> tuple[PushApp, PushApp]:
    """An FCM app on a service account and a VoIP app on its certificate: both can send."""
    fcm = services.push_app_upsert(app_id=FCM_APP, provider=Provider.FIREBASE, credential=service_account_credential())
    apple = services.push_app_upsert(app_id=APP, provider=Provider.APPLE, credential=cert_credential("acme voip"))
    return fcm, apple


# What an old Kazoo config carries: the legacy FCM key, and an expired certificate.
OLD_KAZOO_CONFIG = {
    FCM_APP: {"firebase": {"api_key": LEGACY_KEY}},
    APP: {"apple": {"certificate": pem(not_after=datetime.now(UTC) - timedelta(days=3),
                                       not_before=datetime.now(UTC) - timedelta(days=400))}},
}


@pytest.mark.parametrize("face", IMPORT_FACES)
def test_reimporting_an_old_kazoo_config_keeps_the_working_credentials(face, working_apps, api, tmp_path):
    fcm, apple = working_apps
    stored = set(Credential.objects.values_list("pk", flat=True))

    warnings = import_through(face, OLD_KAZOO_CONFIG, api=api, tmp_path=tmp_path)

    assert PushApp.objects.get(pk=fcm.pk).credential_id == fcm.credential_id
    assert PushApp.objects.get(pk=apple.pk).credential_id == apple.credential_id
    assert set(Credential.objects.values_list("pk", flat=True)) == stored  # the unusable ones not stored
    kept = [w for w in warnings if "kept credential" in w]
    assert len(kept) == 2, warnings
    assert any(w.startswith(f"{FCM_APP} (firebase)") and "legacy" in w for w in kept)
    assert any(w.startswith(f"{APP} (apple)") and "expired" in w for w in kept)
    assert not [w for w in warnings if "legacy key imported" in w]


def test_add_firebase_app_with_kazoos_legacy_key_keeps_the_service_account(working_apps):
    fcm, _ = working_apps

    out = command("add_firebase_app", FCM_APP, LEGACY_KEY)

    assert PushApp.objects.get(pk=fcm.pk).credential_id == fcm.credential_id
    assert "kept credential" in out and "stored as an FCM legacy server key" not in out
    assert not Credential.objects.filter(kind=CredentialKind.FCM_LEGACY_KEY).exists()


def test_a_credential_that_cannot_send_is_still_replaced_and_a_new_app_gets_one():
    # Kazoo compatibility: an app with nothing better takes the legacy key (marked unusable)...
    added = services.push_app_add(app_id=FCM_APP, provider=Provider.FIREBASE, kind=CredentialKind.FCM_LEGACY_KEY,
                                  data=LEGACY_KEY)
    assert added.credential.kind == CredentialKind.FCM_LEGACY_KEY and not added.credential_kept
    assert any("cannot send" in w for w in added.warnings)
    # ...and a service account then replaces it.
    info = make_service_account("acme-phone", "https://127.0.0.1:9/token")
    added = services.push_app_add(app_id=FCM_APP, provider=Provider.FIREBASE,
                                  kind=CredentialKind.FCM_SERVICE_ACCOUNT, data=json.dumps(info))
    assert PushApp.objects.get().credential.kind == CredentialKind.FCM_SERVICE_ACCOUNT


# --- A credential's kind stays one its apps can send with; an app's credential one of its provider ----


def kind_change_through(face: str, credential: Credential, *, staff_client: Any, api: APIClient) -> str:
    account = json.dumps(make_service_account("acme-phone", "https://127.0.0.1:9/token"))
    if face == "admin":
        response = staff_client.post(reverse("admin:push_credential_change", args=[credential.pk]), {
            "name": credential.name, "kind": CredentialKind.FCM_SERVICE_ACCOUNT, "key_id": "", "team_id": "",
            "pasted": account, "password": "",
        })
        return " ".join(form_errors(response).get("__all__", []))
    response = api.patch(f"/api/v1/credentials/{credential.pk}/",
                         {"kind": CredentialKind.FCM_SERVICE_ACCOUNT, "data": account}, format="json")
    return response.json().get("message", "") if response.status_code == 400 else ""


@pytest.mark.parametrize("face", ["admin", "api"])
def test_a_credential_in_use_cannot_change_to_a_kind_its_apps_cannot_use(face, working_apps, staff_client, api):
    _, apple = working_apps
    credential = apple.credential

    refusal = kind_change_through(face, credential, staff_client=staff_client, api=api)

    assert f"push app {apple}" in refusal and "cannot send" in refusal
    credential.refresh_from_db()
    assert credential.kind == CredentialKind.APNS_CERTIFICATE


@pytest.mark.parametrize("face", ["admin", "api"])
def test_an_app_cannot_take_a_credential_of_the_other_provider(face, working_apps, staff_client, api):
    fcm, apple = working_apps
    if face == "admin":
        response = admin_app_save(staff_client, apple, credential=fcm.credential_id)
        refusal = " ".join(form_errors(response).get("credential", []))
    else:
        response = api.patch(f"/api/v1/apps/{apple.pk}/", {"credential": fcm.credential_id}, format="json")
        refusal = response.json()["message"]
    assert "cannot send for a Apple (APNs) app" in refusal
    assert PushApp.objects.get(pk=apple.pk).credential_id == apple.credential_id


# --- An app change reaches the push path at once (the app cache is cleared) ----------------------------


def disable_through(face: str, app: PushApp, *, staff_client: Any, api: APIClient, tmp_path: Path) -> None:
    if face == "admin":
        response = admin_app_save(staff_client, app, enabled="")
        assert response.redirect_chain, form_errors(response)
    elif face == "api":
        assert api.patch(f"/api/v1/apps/{app.pk}/", {"enabled": False}, format="json").status_code == 200
    elif face == "import":
        kazoo_config_import(document={APP: {"apple": {"enabled": False}}})
    else:  # the commands change the credential: the cache must drop the app as well
        path = tmp_path / "cert.pem"
        path.write_text(pem())
        command("add_apple_app", APP, str(path))


@pytest.mark.parametrize("face", APP_FACES)
def test_an_app_change_reaches_the_push_path_at_once(face, working_apps, staff_client, api, tmp_path):
    _, apple = working_apps
    cached = services.push_app_get(app_id=APP, provider=Provider.APPLE)  # the push path's read, now cached
    assert cached is not None and cached.enabled

    disable_through(face, apple, staff_client=staff_client, api=api, tmp_path=tmp_path)

    seen = services.push_app_get(app_id=APP, provider=Provider.APPLE)
    stored = PushApp.objects.get(pk=apple.pk)
    assert seen is not cached
    assert (seen.enabled, seen.credential_id) == (stored.enabled, stored.credential_id)


# --- A rule change reaches the consumer at once, and a bad regex is refused, on every face -------------


@pytest.fixture
def rule() -> UserAgentRule:
    return UserAgentRule.objects.create(name="AcmePhone", position=10, regex="^AcmePhone",
                                        properties={"Token-ID": "pn-tok"})


def rule_change_through(face: str, rule: UserAgentRule, *, staff_client: Any, api: APIClient) -> None:
    url = reverse("admin:registry_useragentrule_changelist")
    if face == "admin form":
        response = staff_client.post(reverse("admin:registry_useragentrule_change", args=[rule.pk]), {
            "name": rule.name, "position": "10", "regex": rule.regex, "properties": json.dumps(rule.properties),
            "description": "",  # enabled left out: unticked
        })
        assert response.status_code == 302, form_errors(response)
    elif face == "admin list_editable":
        response = staff_client.post(url, {"form-TOTAL_FORMS": "1", "form-INITIAL_FORMS": "1",
                                           "form-0-id": str(rule.pk), "form-0-position": "10", "_save": "Save"})
        assert response.status_code == 302
    elif face == "admin delete":
        response = staff_client.post(url, {"action": "delete_selected", ACTION_CHECKBOX_NAME: [str(rule.pk)],
                                           "post": "yes"})
        assert response.status_code == 302
    elif face == "api":
        response = api.patch(f"/api/v1/user-agent-rules/{rule.pk}/", {"enabled": False}, format="json")
        assert response.status_code == 200
    else:
        kazoo_config_import(document={"User-Agents": {rule.name: {"regex": "^AcmePhone/2"}}})


RULE_FACES = ["admin form", "admin list_editable", "admin delete", "api", "import"]


@pytest.mark.parametrize("face", RULE_FACES)
def test_a_rule_change_reaches_the_consumer_at_once(face, rule, staff_client, api):
    before = selectors.user_agent_rules_enabled()  # the consumer's read, now cached
    assert [r.name for r in before] == ["AcmePhone"]

    rule_change_through(face, rule, staff_client=staff_client, api=api)

    seen = selectors.user_agent_rules_enabled()
    assert seen != before
    assert seen == selectors.user_agent_rules_enabled(fresh=True)


@pytest.mark.parametrize("face", ["admin", "api", "import"])
def test_a_regex_that_does_not_compile_is_refused_on_every_face(face, rule, staff_client, api):
    if face == "admin":
        response = staff_client.post(reverse("admin:registry_useragentrule_add"), {
            "name": "Broken", "position": "20", "enabled": "on", "regex": "^Broken(", "properties": "{}",
            "description": ""})
        assert "regex" in form_errors(response)
    elif face == "api":
        response = api.post("/api/v1/user-agent-rules/", {"name": "Broken", "regex": "^Broken(", "properties": {}},
                            format="json")
        assert response.status_code == 400 and response.json()["code"] == "rule_invalid"
    else:
        with pytest.raises(RuleError, match="Broken"):
            kazoo_config_import(document={"User-Agents": {"Broken": {"regex": "^Broken("}}})
    assert not UserAgentRule.objects.filter(name="Broken").exists()


def test_a_kazoo_rule_without_properties_is_stored_through_the_service():
    kazoo_config_import(document={"User-Agents": {"Ignored": {"regex": "^Ignored"}}})
    assert UserAgentRule.objects.get(name="Ignored").properties == {}


def test_the_import_moves_rules_through_the_services(rule):
    """The import's writes (create, update, and moving a rule the document does not name after the
    document's) are the services': the consumer's cached rule set follows at once."""
    rule.name, rule.position = "Local", 5
    rule.save()
    assert [r.name for r in selectors.user_agent_rules_enabled()] == ["Local"]
    document = {"User-Agents": {name: {"regex": f"^{name}", "properties": {"Token-ID": "pn-tok"}}
                                for name in ("zeta", "Alpha", "alpha")}}

    summary = kazoo_config_import(document=document)

    assert [r.name for r in selectors.user_agent_rules_enabled()] == ["zeta", "Alpha", "alpha", "Local"]
    assert selectors.user_agent_rules_enabled() == selectors.user_agent_rules_enabled(fresh=True)
    assert summary.rules_moved == 1
    again = kazoo_config_import(document=document)
    assert (again.rules_created, again.rules_updated, again.rules_unchanged, again.rules_moved) == (0, 0, 3, 0)


# --- Devices: edited (username, realm) and deleted the same way by the admin and the API ---------------


@pytest.mark.parametrize("face", ["admin", "api"])
def test_a_device_edit_changes_what_may_change_and_clears_the_digest(face, registered_device, staff_client, api):
    device = registered_device
    identity = (device.account_id, device.device_id)
    assert device.registration_digest
    if face == "admin":
        response = staff_client.post(reverse("admin:registry_device_change", args=[device.pk]), {
            "account_id": "hijacked", "device_id": "hijacked", "registration_digest": "forged",
            "username": device.username, "realm": "corrected.example.com",
            "tokens-TOTAL_FORMS": "0", "tokens-INITIAL_FORMS": "0",
        })
        assert response.status_code == 302, form_errors(response)
    else:
        response = api.patch(f"/api/v1/devices/{device.pk}/", {"realm": "corrected.example.com",
                                                                "account_id": "hijacked"}, format="json")
        assert response.status_code == 200

    device.refresh_from_db()
    assert device.realm == "corrected.example.com"
    assert (device.account_id, device.device_id) == identity  # Kazoo's, read-only everywhere
    assert device.registration_digest == ""  # the next REGISTER is written in full again


@pytest.mark.parametrize("face", ["admin page", "admin bulk", "api"])
def test_a_device_delete_forgets_it_and_its_tokens(face, registered_device, staff_client, api):
    device = registered_device
    if face == "admin page":
        response = staff_client.post(reverse("admin:registry_device_delete", args=[device.pk]), {"post": "yes"})
        assert response.status_code == 302
    elif face == "admin bulk":
        response = staff_client.post(reverse("admin:registry_device_changelist"), {
            "action": "delete_selected", ACTION_CHECKBOX_NAME: [str(device.pk)], "post": "yes"})
        assert response.status_code == 302
    else:
        assert api.delete(f"/api/v1/devices/{device.pk}/").status_code == 204
    assert not Device.objects.exists() and not PushToken.objects.exists()


def test_device_update_refuses_the_identity():
    device = Device.objects.create(account_id="a", device_id="d")
    with pytest.raises(PusherError, match="not editable: account_id"):
        from registry.services import device_update

        device_update(device=device, account_id="b")


# --- Tokens: deactivated and reactivated the same way by the admin and the API -------------------------


def token_action_through(face: str, action: str, token: PushToken, *, staff_client: Any, api: APIClient) -> None:
    if face == "admin":
        response = admin_action(staff_client, "registry_pushtoken", action, token)
        assert response.status_code == 200 and any("token(s)" in m for m in messages_of(response))
    else:
        response = api.post(f"/api/v1/tokens/{token.pk}/{action}/", {}, format="json")
        assert response.status_code == 200, response.content


@pytest.mark.parametrize("face", ["admin", "api"])
def test_deactivating_a_token_stops_pushes_to_it_and_reactivating_restores_it(face, registered_device, staff_client,
                                                                              api):
    device = registered_device
    token = device.tokens.get(token=device.push["Token-ID"])

    token_action_through(face, "deactivate", token, staff_client=staff_client, api=api)

    token.refresh_from_db()
    device.refresh_from_db()
    assert not token.active and token.deactivated_reason == "deactivated by ops"
    # As for a token a provider declares dead: the push object built on it is cleared.
    assert device.push is None and device.registration_digest == ""

    token_action_through(face, "reactivate", token, staff_client=staff_client, api=api)

    token.refresh_from_db()
    assert token.active and token.deactivated_at is None and token.deactivated_reason == ""


def test_the_api_shows_full_tokens_only_to_users_who_may_view_devices(registered_device, django_user_model):
    from django.contrib.auth.models import Permission

    token = registered_device.tokens.first()
    user = django_user_model.objects.create_user("tokens-only")
    user.user_permissions.add(Permission.objects.get(codename="view_pushtoken"))
    client = APIClient()
    client.force_authenticate(user)

    shown = client.get(f"/api/v1/tokens/{token.pk}/").json()
    assert shown["token"] is None and shown["token_masked"] == token.token_masked
    assert client.get(f"/api/v1/devices/{registered_device.pk}/").status_code == 403

    user.user_permissions.add(Permission.objects.get(codename="view_device"))
    user = django_user_model.objects.get(pk=user.pk)  # permissions are cached on the instance
    client.force_authenticate(user)
    assert client.get(f"/api/v1/tokens/{token.pk}/").json()["token"] == token.token


# --- Token reporters: configured, and their reports stored, the same way by every face --------------------

REPORTER_SECRET = "reporter-SECRET-0123456789abcdef"
GW_VOIP = "9f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"


def reporter_form(**changes: Any) -> dict[str, Any]:
    """The token reporter admin form as the browser posts it."""
    data = {"slug": "groundwire", "enabled": "on", "description": "", "auth": "url_secret",
            "new_secret": REPORTER_SECRET, "parameters": json.dumps(DEFAULT_PARAMETERS),
            "fixed": json.dumps({"Token-Type": "apple"}), "token_encoding": "as_sent",
            "user_agent_regex": "^Groundwire", "proxy": ""}
    data.update(changes)
    return data


def reporter_through(face: str, *, staff_client: Any, api: APIClient, **changes: Any) -> str:
    """Create the Groundwire reporter by one face; returns its refusal ("" if none)."""
    if face == "admin":
        form = reporter_form(**{k: json.dumps(v) if isinstance(v, dict) else v for k, v in changes.items()})
        response = staff_client.post(reverse("admin:registry_tokenreporter_add"), form)
        return "" if response.status_code == 302 else " ".join(" ".join(e) for e in form_errors(response).values())
    values = {"slug": "groundwire", "secret": REPORTER_SECRET, "parameters": DEFAULT_PARAMETERS,
              "fixed": {"Token-Type": "apple"}, "user_agent_regex": "^Groundwire", **changes}
    if face == "api":
        response = api.post("/api/v1/token-reporters/", values, format="json")
        return "" if response.status_code == 201 else response.json()["message"]
    try:
        reporting.token_reporter_create(**values)
    except PusherError as exc:
        return exc.message
    return ""


@pytest.mark.parametrize("face", ["admin", "api", "service"])
def test_a_reporter_that_cannot_work_is_refused_on_every_face(face, staff_client, api):
    refusal = reporter_through(face, staff_client=staff_client, api=api, fixed={})
    assert "Token-Type: map it to a parameter or give a fixed value" in refusal
    refusal = reporter_through(face, staff_client=staff_client, api=api, parameters={"Token-ID": "pushToken"})
    assert "Username is required" in refusal
    assert not TokenReporter.objects.exists()
    assert reporter_through(face, staff_client=staff_client, api=api) == ""
    assert TokenReporter.objects.get().user_agent_regex == "^Groundwire"


@pytest.mark.parametrize("face", ["admin", "api"])
def test_a_reporters_secret_is_never_shown_after_saving(face, staff_client, api):
    if face == "admin":
        add_page = staff_client.get(reverse("admin:registry_tokenreporter_add")).content.decode()
        offered = add_page.split('name="new_secret"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
        assert secret_problem(offered) is None  # a fresh one is offered before saving
    assert reporter_through(face, staff_client=staff_client, api=api) == ""
    reporter = TokenReporter.objects.get()
    shown = "".join(page.content.decode() for page in (
        staff_client.get(reverse("admin:registry_tokenreporter_changelist")),
        staff_client.get(reverse("admin:registry_tokenreporter_change", args=[reporter.pk])),
        api.get("/api/v1/token-reporters/"), api.get(f"/api/v1/token-reporters/{reporter.pk}/"),
    ))
    assert REPORTER_SECRET not in shown and "/report/groundwire/&lt;secret&gt;/" in shown
    # Saving the change form without a new secret keeps the stored one.
    response = staff_client.post(reverse("admin:registry_tokenreporter_change", args=[reporter.pk]),
                                 reporter_form(new_secret="", description="iOS"))
    assert response.status_code == 302, form_errors(response)
    reporter = TokenReporter.objects.get()
    assert reporter.description == "iOS" and reporting.token_reporter_secret_matches(reporter=reporter,
                                                                                      given=REPORTER_SECRET)


@pytest.mark.parametrize("face", ["admin", "api"])
def test_a_reporter_change_reaches_the_registration_path_at_once(face, staff_client, api):
    reporter = reporting.token_reporter_create(slug="groundwire", secret=REPORTER_SECRET,
                                               fixed={"Token-Type": "apple"}, user_agent_regex="^Groundwire")

    def registers(user_agent: str, device: str) -> str:
        return registration_apply(fields={
            "Username": device[:4], "Realm": "acme.example.com", "User-Agent": user_agent, "Expires": 600,
            "Contact": "<sip:u@192.0.2.1>", "Proxy-Path": "sip:10.0.0.1:5060",
            "Custom-Channel-Vars": {"Account-ID": "a" * 32, "Authorizing-ID": device}}).outcome

    assert registers("Groundwire/6", "b" * 32) == "learned"  # the regexes are now cached
    if face == "admin":
        response = staff_client.post(reverse("admin:registry_tokenreporter_change", args=[reporter.pk]),
                                     reporter_form(new_secret="", user_agent_regex="^Acrobits"))
        assert response.status_code == 302, form_errors(response)
    else:
        response = api.patch(f"/api/v1/token-reporters/{reporter.pk}/", {"user_agent_regex": "^Acrobits"},
                             format="json")
        assert response.status_code == 200
    assert registers("Groundwire/6", "c" * 32) == "ignored"
    assert registers("Acrobits Softphone/6", "d" * 32) == "learned"


def report_through(face: str, params: dict[str, str], client: Any) -> None:
    reporter = TokenReporter.objects.get()
    if face == "http":
        response = client.get(f"/report/groundwire/{REPORTER_SECRET}/", params)
        assert response.status_code == 200, response.content
    elif face == "command":
        output = command("token_report", "groundwire", *(f"{k}={v}" for k, v in params.items()))
        assert output.startswith("updated: device ")
    else:
        reporting.token_report_apply(reporter=reporter, params=params)


@pytest.mark.parametrize("face", ["http", "command", "service"])
def test_a_report_stores_the_same_push_object_by_every_face(face, client):
    reporting.token_reporter_create(slug="groundwire", secret=REPORTER_SECRET, fixed={"Token-Type": "apple"},
                                    user_agent_regex="^Groundwire")
    registration_apply(fields={
        "Username": "1001", "Realm": "acme.example.com", "User-Agent": "Groundwire/6", "Expires": 600,
        "Contact": "<sip:1001@192.0.2.1>", "Proxy-Path": "sip:10.0.0.1:5060;transport=udp",
        "Custom-Channel-Vars": {"Account-ID": "a" * 32, "Authorizing-ID": "b" * 32}})

    report_through(face, {"username": "1001", "realm": "acme.example.com", "pushTokenIncomingCall": GW_VOIP,
                          "pushappid_incoming_call": "cz.acrobits.groundwire.voip"}, client)

    device = Device.objects.get()
    assert device.push == {"Token-ID": GW_VOIP, "Token-App": "cz.acrobits.groundwire.voip", "Token-Type": "apple",
                           "Token-Proxy": "sip:10.0.0.1:5060;transport=udp"}
    assert device.rule_name == "token reporter groundwire"
    assert list(device.tokens.values_list("token", "kind", "active")) == [(GW_VOIP, "voip", True)]


def test_the_command_refuses_what_the_endpoint_refuses():
    reporting.token_reporter_create(slug="groundwire", secret=REPORTER_SECRET, fixed={"Token-Type": "apple"})
    with pytest.raises(CommandError, match="no device answers to this account"):
        command("token_report", "groundwire", "username=1001", "realm=acme.example.com", f"pushToken={GW_VOIP}",
                "pushappid=x.y")
    with pytest.raises(CommandError, match="report_invalid"):
        command("token_report", "groundwire", "username=1001", "realm=acme.example.com", "pushappid=x.y")
    with pytest.raises(CommandError, match="no token reporter 'bria'"):
        command("token_report", "bria", "username=1001")
    with pytest.raises(CommandError, match="expected NAME=VALUE"):
        command("token_report", "groundwire", "username")


# --- Every action the admin offers is in the API too -----------------------------------------------------

# Admin action -> the API operation doing the same (method, path with {id}).
ACTION_ROUTES = {
    (PushApp, "send_test_push"): ("post", "/api/v1/apps/{id}/push/"),
    (Device, "sync_to_kazoo"): ("post", "/api/v1/devices/{id}/sync/"),
    (Device, "send_test_push"): ("post", "/api/v1/devices/{id}/push/"),
    (PushToken, "deactivate"): ("post", "/api/v1/tokens/{id}/deactivate/"),
    (PushToken, "reactivate"): ("post", "/api/v1/tokens/{id}/reactivate/"),
    (WebhookSubscription, "send_test_event"): ("post", "/api/v1/webhooks/{id}/test/"),
    (WebhookDelivery, "retry_now"): ("post", "/api/v1/webhook-deliveries/{id}/retry/"),
}
RESOURCES = {PushApp: "apps", Credential: "credentials", Delivery: "deliveries", UserAgentRule: "user-agent-rules",
             Device: "devices", PushToken: "tokens", WebhookSubscription: "webhooks",
             WebhookDelivery: "webhook-deliveries", Alert: "alerts",
             TokenReporter: "token-reporters"}


@dataclass(frozen=True)
class Offer:
    model: type
    what: str
    route: tuple[str, str]


def admin_offers(superuser: Any) -> list[Offer]:
    """What the admin lets a superuser do to each of pusher's models."""
    request = RequestFactory().get("/admin/")
    request.user = superuser
    offers = []
    for model, resource in RESOURCES.items():
        model_admin = admin.site._registry[model]
        base, item = f"/api/v1/{resource}/", f"/api/v1/{resource}/{{id}}/"
        offers.append(Offer(model, "view", ("get", item)))
        if model_admin.has_add_permission(request):
            offers.append(Offer(model, "add", ("post", base)))
        obj = model.objects.first()
        editable = [f for f in model_admin.get_fields(request, obj)
                    if f not in model_admin.get_readonly_fields(request, obj)]
        if model_admin.has_change_permission(request, obj) and editable:
            offers.append(Offer(model, "change", ("patch", item)))
        if model_admin.has_delete_permission(request):
            offers.append(Offer(model, "delete", ("delete", item)))
        for action in model_admin.get_actions(request):
            if action != "delete_selected":
                offers.append(Offer(model, action, ACTION_ROUTES[(model, action)]))
    return offers


def test_every_admin_action_has_its_api_operation(staff_user, registered_device, working_apps):
    from drf_spectacular.generators import SchemaGenerator

    Delivery.objects.create(source="amqp", status="sent")
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = {(method, path) for path, item in schema["paths"].items() for method in item}

    offers = admin_offers(staff_user)

    missing = [o for o in offers if o.route not in operations]
    assert not missing, f"offered by the admin, absent from the API: {missing}"
    # And the admin offers no write on what is written by the system alone.
    assert not [o for o in offers if o.model is Delivery and o.what != "view"]
    assert {o.what for o in offers if o.model is PushToken} == {"view", "deactivate", "reactivate"}
    assert {o.what for o in offers if o.model is Device} == {"view", "change", "delete", "sync_to_kazoo",
                                                             "send_test_push"}
