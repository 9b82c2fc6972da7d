"""The permission matrix over every endpoint, and the secret scan over every answer.

Roles: anonymous (401 everywhere: token authentication answers with a challenge), read-only (view
permissions only), operator (view/add/change + push.send_push, no delete), admin (superuser), and
the scoped tokens of tests.api.conftest (owned by the superuser): scoped to the seed's account
without grants, with every grant, scoped to another account (every grant), revoked, expired."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry

from tests.api.conftest import ACCOUNT, ALL_GRANTS, LEGACY_KEY, ROLES, SCOPED_ROLES, Scoped, Seed

# Who may: "auth" any authenticated user, "read" view perms, "write" add/change, "push" send_push,
# "delete" delete perms (admin here).
ALLOWED = {
    "auth": {"readonly", "operator", "admin"},
    "read": {"readonly", "operator", "admin"},
    "write": {"operator", "admin"},
    "push": {"operator", "admin"},
    "delete": {"admin"},
    "superuser": {"admin"},
    "staff": {"admin"},  # staff users with the model's permissions: webhooks
}
# The grants each scoped role holds (tenancy.models.Grant values).
SCOPED_GRANTS = {"scoped": set(), "scoped_granted": set(ALL_GRANTS), "scoped_other": set(ALL_GRANTS)}
RULE_BODY = {"name": "NewPhone", "regex": "^NewPhone", "properties": {"Token-ID": "pn-tok", "Token-App": "app-id",
                                                                     "Token-Type": "pn-type"}}
IMPORT_DOC = {"default": {"User-Agents": {"Imported": {"regex": "^Imported", "properties": {"Token-ID": "pn-tok"}}}}}
REPORTER_BODY = {"slug": "bria", "secret": "bria-SECRET-0123456789abcdefgh", "fixed": {"Token-Type": "firebase"}}
PUSH_REQ = {"Token-ID": "ab" * 32, "Token-Type": "apple", "Token-App": "com.nobody.app", "Call-ID": "c1",
            "Payload": {"call-id": "c1"}}


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    url: str  # formatted with the seed
    who: str
    ok: int  # the status an allowed role gets
    body: Any = None
    logged: bool = False  # an allowed call writes an admin log entry
    grants: tuple[str, ...] = ()  # what a scoped token needs for it
    account_row: bool = False  # it names a row of the seed's account: another account's token gets 404
    scoped: int | None = None  # the status a scoped token of the seed's account gets, when not `ok`
    scoped_denied: bool = False  # global configuration no scoped token manages, whatever its grants

    def path(self, seed: Seed, scoped: Scoped) -> str:
        return self.url.format(
            app=seed.apple_app.pk, cred=seed.cert.pk, unused_cred=seed.p8.pk, delivery=seed.delivery.pk,
            rule=seed.rule.pk, device=seed.device.pk, token=seed.device.tokens.order_by("pk").first().pk,
            scoped_token=scoped.spare.pk,
            webhook=seed.webhook.pk, webhook_delivery=seed.webhook_delivery.pk, alert=seed.alert.pk,
            reporter=seed.reporter.pk,
        )


ROWS = [
    Row("root", "get", "/api/v1/", "auth", 200),
    Row("apps list", "get", "/api/v1/apps/", "read", 200, grants=("apps",)),
    Row("apps retrieve", "get", "/api/v1/apps/{app}/", "read", 200, grants=("apps",)),
    Row("apps create", "post", "/api/v1/apps/", "write", 201, {"app_id": "com.new.app", "provider": "apple"}, True,
        grants=("apps",)),
    Row("apps update", "put", "/api/v1/apps/{app}/", "write", 200,
        {"app_id": "com.acme.phone.voip.prod", "provider": "apple", "description": "put"}, True, grants=("apps",)),
    Row("apps partial update", "patch", "/api/v1/apps/{app}/", "write", 200, {"description": "patched"}, True,
        grants=("apps",)),
    Row("apps delete", "delete", "/api/v1/apps/{app}/", "delete", 204, None, True, grants=("apps",)),
    Row("apps test push", "post", "/api/v1/apps/{app}/push/", "push", 200, {"token": "ab" * 32}, True,
        grants=("apps",), scoped=404),
    Row("credentials list", "get", "/api/v1/credentials/", "read", 200, grants=("credentials",)),
    Row("credentials retrieve", "get", "/api/v1/credentials/{cred}/", "read", 200, grants=("credentials",)),
    Row("credentials create", "post", "/api/v1/credentials/", "write", 201,
        {"name": "new legacy", "kind": "fcm_legacy_key", "data": LEGACY_KEY + "X"}, True, grants=("credentials",)),
    Row("credentials update", "put", "/api/v1/credentials/{cred}/", "write", 200,
        {"name": "renamed", "kind": "apns_certificate"}, True, grants=("credentials",)),
    Row("credentials partial update", "patch", "/api/v1/credentials/{cred}/", "write", 200, {"name": "renamed"}, True,
        grants=("credentials",)),
    Row("credentials delete", "delete", "/api/v1/credentials/{unused_cred}/", "delete", 204, None, True,
        grants=("credentials",)),
    Row("deliveries list", "get", "/api/v1/deliveries/", "read", 200),
    Row("deliveries retrieve", "get", "/api/v1/deliveries/{delivery}/", "read", 200, account_row=True),
    Row("rules list", "get", "/api/v1/user-agent-rules/", "read", 200),
    Row("rules retrieve", "get", "/api/v1/user-agent-rules/{rule}/", "read", 200),
    Row("rules create", "post", "/api/v1/user-agent-rules/", "write", 201, RULE_BODY, True, grants=("rules_write",)),
    Row("rules update", "put", "/api/v1/user-agent-rules/{rule}/", "write", 200, {**RULE_BODY, "name": "AcmePhone"},
        True, grants=("rules_write",)),
    Row("rules partial update", "patch", "/api/v1/user-agent-rules/{rule}/", "write", 200, {"position": 5}, True,
        grants=("rules_write",)),
    Row("rules delete", "delete", "/api/v1/user-agent-rules/{rule}/", "delete", 204, None, True,
        grants=("rules_write",)),
    Row("rules match", "post", "/api/v1/user-agent-rules/match/", "read", 200,
        {"user_agent": "AcmePhone 1.0", "contact": "<sip:u@h;pn-tok=abc;app-id=x;pn-type=apple>"}),
    Row("rules export", "get", "/api/v1/user-agent-rules/export/", "read", 200, grants=("apps",)),
    Row("rules import", "post", "/api/v1/user-agent-rules/import/", "write", 200, IMPORT_DOC, True,
        grants=("rules_write", "apps", "credentials")),
    Row("devices list", "get", "/api/v1/devices/", "read", 200),
    Row("devices retrieve", "get", "/api/v1/devices/{device}/", "read", 200, account_row=True),
    Row("devices test push", "post", "/api/v1/devices/{device}/push/", "push", 200, None, True, account_row=True),
    Row("devices sync", "post", "/api/v1/devices/{device}/sync/", "write", 200, None, True, account_row=True),
    Row("devices update", "put", "/api/v1/devices/{device}/", "write", 200,
        {"username": "user_1001", "realm": "acme.example.com"}, True, account_row=True),
    Row("devices partial update", "patch", "/api/v1/devices/{device}/", "write", 200, {"realm": "b.example.com"},
        True, account_row=True),
    Row("devices delete", "delete", "/api/v1/devices/{device}/", "delete", 204, None, True, account_row=True),
    Row("tokens list", "get", "/api/v1/tokens/", "read", 200),
    Row("tokens retrieve", "get", "/api/v1/tokens/{token}/", "read", 200, account_row=True),
    Row("tokens deactivate", "post", "/api/v1/tokens/{token}/deactivate/", "write", 200, {"reason": "lost phone"},
        True, account_row=True),
    Row("tokens reactivate", "post", "/api/v1/tokens/{token}/reactivate/", "write", 200, None, True, account_row=True),
    Row("push_req", "post", "/api/v1/push/", "push", 200, PUSH_REQ, scoped=404),
    Row("webhooks list", "get", "/api/v1/webhooks/", "staff", 200),
    Row("webhooks retrieve", "get", "/api/v1/webhooks/{webhook}/", "staff", 200),
    Row("webhooks create", "post", "/api/v1/webhooks/", "staff", 201,
        {"name": "new hook", "url": "http://127.0.0.1:9/new", "secret": "s" * 20, "event_types": ["push.failed"]},
        True),
    Row("webhooks update", "put", "/api/v1/webhooks/{webhook}/", "staff", 200,
        {"name": "seed hook", "url": "http://127.0.0.1:9/put", "event_types": ["push.expired"]}, True),
    Row("webhooks partial update", "patch", "/api/v1/webhooks/{webhook}/", "staff", 200, {"enabled": False}, True),
    Row("webhooks delete", "delete", "/api/v1/webhooks/{webhook}/", "staff", 204, None, True),
    Row("webhooks test event", "post", "/api/v1/webhooks/{webhook}/test/", "staff", 200, None, True),
    Row("webhook deliveries list", "get", "/api/v1/webhook-deliveries/", "staff", 200),
    Row("webhook deliveries retrieve", "get", "/api/v1/webhook-deliveries/{webhook_delivery}/", "staff", 200),
    Row("webhook deliveries retry", "post", "/api/v1/webhook-deliveries/{webhook_delivery}/retry/", "staff", 200,
        None, True),
    Row("alerts list", "get", "/api/v1/alerts/", "staff", 200),
    Row("alerts retrieve", "get", "/api/v1/alerts/{alert}/", "staff", 200),
    Row("token reporters list", "get", "/api/v1/token-reporters/", "read", 200, scoped_denied=True),
    Row("token reporters retrieve", "get", "/api/v1/token-reporters/{reporter}/", "read", 200, scoped_denied=True),
    Row("token reporters create", "post", "/api/v1/token-reporters/", "write", 201, REPORTER_BODY, True,
        scoped_denied=True),
    Row("token reporters update", "put", "/api/v1/token-reporters/{reporter}/", "write", 200,
        {"slug": "groundwire", "fixed": {"Token-Type": "apple"}, "description": "put"}, True, scoped_denied=True),
    Row("token reporters partial update", "patch", "/api/v1/token-reporters/{reporter}/", "write", 200,
        {"secret": "another-SECRET-0123456789abcdef"}, True, scoped_denied=True),
    Row("token reporters delete", "delete", "/api/v1/token-reporters/{reporter}/", "delete", 204, None, True,
        scoped_denied=True),
    Row("send", "post", "/api/v1/send", "push", 404,
        {"name": "sip:nobody@nowhere.example.com", "type": "incoming_call", "payload": {"push_id": "c2"}}),
    Row("scoped tokens list", "get", "/api/v1/scoped-tokens/", "superuser", 200),
    Row("scoped tokens retrieve", "get", "/api/v1/scoped-tokens/{scoped_token}/", "superuser", 200),
    Row("scoped tokens create", "post", "/api/v1/scoped-tokens/", "superuser", 201,
        {"name": "reseller two", "owner": "operator", "account_ids": [ACCOUNT], "grant_apps": True}, True),
    Row("scoped tokens revoke", "post", "/api/v1/scoped-tokens/{scoped_token}/revoke/", "superuser", 200, None,
        True),
]


def _expected(row: Row, role: str) -> int:
    if role in ("anonymous", "scoped_revoked", "scoped_expired"):
        return 401
    if role in SCOPED_GRANTS:
        # Managing tokens, webhooks and alerts is never a scoped token's, whatever its owner may do.
        if row.who in ("superuser", "staff") or row.scoped_denied or not set(row.grants) <= SCOPED_GRANTS[role]:
            return 403
        if role == "scoped_other" and row.account_row:
            return 404  # as a row that does not exist
        return row.scoped or row.ok
    return row.ok if role in ALLOWED[row.who] else 403


def call(client, row: Row, seed: Seed, scoped: Scoped):
    return getattr(client, row.method)(row.path(seed, scoped), row.body, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES + SCOPED_ROLES)
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_permission_matrix(row: Row, role: str, seed: Seed, clients, scoped_clients, scoped: Scoped, users) -> None:
    before = LogEntry.objects.count()
    response = call({**clients, **scoped_clients}[role], row, seed, scoped)
    assert response.status_code == _expected(row, role), response.content[:500]
    if response.status_code == 401:
        assert response["WWW-Authenticate"].startswith(("Token", "Basic"))
    body = response.content.decode()
    for secret in seed.secrets:
        assert secret not in body, f"{row.name} answered a secret to {role}"
    if row.logged and response.status_code < 300:
        entry = LogEntry.objects.order_by("-pk").first()
        # A scoped token acts as its owner (the superuser), and the record names the token.
        assert LogEntry.objects.count() == before + 1 and entry.user == users.get(role, users["admin"])
        assert entry.change_message.startswith("[API]")
        if role in SCOPED_ROLES:
            assert f"(scoped token #{scoped.tokens[role].pk} {role!r})" in entry.change_message
        else:
            assert "scoped token #" not in entry.change_message
    elif response.status_code >= 400:
        assert LogEntry.objects.count() == before


def test_every_routed_operation_is_in_the_matrix() -> None:
    """A new endpoint cannot be added without its row here."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = {(method, path) for path, item in schema["paths"].items() for method in item}
    covered = {(row.method, re.sub(r"\{[a-z_]+\}", "{id}", row.url)) for row in ROWS if row.name != "root"}
    assert operations == covered


@pytest.mark.django_db
def test_schema_and_docs_need_a_login(client, django_user_model) -> None:
    assert client.get("/api/schema/").status_code in (401, 403)
    assert client.get("/api/docs/").status_code in (401, 403)
    client.force_login(django_user_model.objects.create_user("reader", password="x-pass-123456"))
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
