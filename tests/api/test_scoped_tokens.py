"""Scoped API tokens through the API: a token of one Kazoo account never sees another account's rows,
in lists, details, filters, counts, writes and pushes; its management (superusers only), its key
shown once, its owner's permissions as its ceiling, and the OpenAPI schema's account of it.

Two accounts: the seed's (tests.api.conftest: a registered device with a VoIP and a remote token, a
delivery) and another one with the same shape, plus a delivery that names no account."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token

from push import services as push_services
from push.models import Delivery
from registry.models import Device, PushToken
from registry.services import registration_apply
from tenancy.models import ScopedToken
from tests.api.conftest import (
    ACCOUNT,
    AOR,
    OTHER_ACCOUNT,
    REG,
    VOIP_TOKEN,
    Seed,
    bearer_client,
    scoped_token,
    token_client,
)

pytestmark = pytest.mark.django_db

OTHER_TOKEN = "c0ffee" * 10 + "abcd"
OTHER_USER = "user_other_9"
OTHER_DEVICE = "77777777777777777777777777777777"


@dataclass
class TwoAccounts:
    seed: Seed
    other_device: Device
    other_token: PushToken
    other_delivery: Delivery
    orphan_delivery: Delivery  # named no account: in no scope


@pytest.fixture
def two(seed: Seed) -> TwoAccounts:
    reg = copy.deepcopy(REG)
    reg["Custom-Channel-Vars"].update({"Account-ID": OTHER_ACCOUNT, "Authorizing-ID": OTHER_DEVICE,
                                       "Username": OTHER_USER})
    reg["Username"] = reg["From-User"] = reg["To-User"] = OTHER_USER
    reg["Contact"] = reg["Contact"].replace(VOIP_TOKEN, OTHER_TOKEN).replace(REG["Username"], OTHER_USER)
    reg["Msg-ID"] = "other-account-registration"
    device = registration_apply(fields=reg).device
    assert device.account_id == OTHER_ACCOUNT
    token = device.tokens.get(token=OTHER_TOKEN)

    def delivery(call_id: str, token: str, account: str) -> Delivery:
        fields = {"Token-ID": token, "Token-Type": "apple", "Token-App": "com.unconfigured.app",
                  "Call-ID": call_id, "Payload": {"call-id": call_id}}
        if account:
            fields["Account-ID"] = account
        return push_services.push_request_handle(fields=fields, source="amqp")

    # (A push_req that names no account is recorded with the account of the device holding its
    # token: the orphan's token is nobody's.)
    orphan = delivery("orphan", "ee" * 32, "")
    assert orphan.account_id == ""
    return TwoAccounts(seed=seed, other_device=device, other_token=token,
                       other_delivery=delivery("other-call", OTHER_TOKEN, OTHER_ACCOUNT), orphan_delivery=orphan)


@pytest.fixture
def owner(users):
    return users["admin"]


@pytest.fixture
def mine(owner):
    """A token of the seed's account, with every grant (what a grant opens is global, not another account's)."""
    return bearer_client(scoped_token(owner, grants=("apps", "credentials", "rules_write"))[1])


@pytest.fixture
def theirs(owner):
    return bearer_client(scoped_token(owner, accounts=(OTHER_ACCOUNT,))[1])


def _accounts(client, path: str) -> tuple[int, set[str]]:
    body = client.get(path).json()
    accounts = set()
    for row in body["results"]:
        accounts.add(row["account_id"])
    return body["count"], accounts


# --- Reads -----------------------------------------------------------------------------------------------


LISTS = ["/api/v1/devices/", "/api/v1/tokens/", "/api/v1/deliveries/"]


@pytest.mark.parametrize("path", LISTS)
def test_a_list_holds_the_rows_of_the_tokens_accounts_only(two, mine, theirs, admin_api, path) -> None:
    everyone_count, everyone = _accounts(admin_api, path)
    assert {ACCOUNT, OTHER_ACCOUNT} <= everyone  # the rows are there, to the unscoped

    count, accounts = _accounts(mine, path)
    assert accounts == {ACCOUNT} and 0 < count < everyone_count
    count_theirs, accounts = _accounts(theirs, path)
    assert accounts == {OTHER_ACCOUNT}
    # Every row is one account's or none's (the orphan delivery): the two scopes split the rest.
    orphans = 1 if path == "/api/v1/deliveries/" else 0
    assert count + count_theirs + orphans == everyone_count


def test_counts_and_pages_count_the_scope_only(two, mine, admin_api) -> None:
    total = Device.objects.filter(account_id=ACCOUNT).count() + 1
    Device.objects.create(account_id=ACCOUNT, device_id="1" * 32, username="second", realm="acme.sip.example.com")
    first = mine.get("/api/v1/devices/?limit=1").json()
    assert first["count"] == total and len(first["results"]) == 1 and first["next"]
    last = mine.get(f"/api/v1/devices/?limit=1&offset={total - 1}").json()
    assert len(last["results"]) == 1 and last["next"] is None
    assert mine.get(f"/api/v1/devices/?offset={total}").json()["results"] == []
    assert admin_api.get("/api/v1/devices/").json()["count"] == total + 1


@pytest.mark.parametrize("path", [
    f"/api/v1/devices/?account_id={OTHER_ACCOUNT}",
    f"/api/v1/devices/?device_id={OTHER_DEVICE}",
    f"/api/v1/devices/?username={OTHER_USER}",
    f"/api/v1/devices/?token={OTHER_TOKEN}",
    f"/api/v1/tokens/?account_id={OTHER_ACCOUNT}",
    f"/api/v1/tokens/?token={OTHER_TOKEN}",
    f"/api/v1/tokens/?device_id={OTHER_DEVICE}",
    f"/api/v1/deliveries/?account={OTHER_ACCOUNT}",
    "/api/v1/deliveries/?call_id=other-call",
    "/api/v1/deliveries/?call_id=orphan",
    f"/api/v1/deliveries/?token={OTHER_TOKEN}",
    "/api/v1/deliveries/?ordering=-latency_ms",
])
def test_no_filter_reaches_another_accounts_rows(two, mine, admin_api, path) -> None:
    body = mine.get(path).json()
    assert all(row["account_id"] == ACCOUNT for row in body["results"])
    if "ordering" not in path:
        assert body["count"] == 0 and body["results"] == []
        assert admin_api.get(path).json()["count"] >= 1  # the filter does find rows, for the unscoped


def test_the_token_filter_finds_a_device_of_its_own(two, mine) -> None:
    body = mine.get(f"/api/v1/devices/?token={VOIP_TOKEN}").json()
    assert body["count"] == 1 and body["results"][0]["id"] == two.seed.device.pk


def test_another_accounts_row_is_a_404_like_a_row_that_does_not_exist(two, mine) -> None:
    for resource, pk in (("devices", two.other_device.pk), ("tokens", two.other_token.pk),
                         ("deliveries", two.other_delivery.pk), ("deliveries", two.orphan_delivery.pk)):
        missing = mine.get(f"/api/v1/{resource}/999999/")
        response = mine.get(f"/api/v1/{resource}/{pk}/")
        assert response.status_code == missing.status_code == 404, resource
        assert response.json() == missing.json(), resource
    assert mine.get(f"/api/v1/devices/{two.seed.device.pk}/").status_code == 200


# --- Writes ---------------------------------------------------------------------------------------------


def test_no_write_reaches_another_accounts_rows(two, mine) -> None:
    device, token = two.other_device, two.other_token
    before = LogEntry.objects.count()
    calls = [
        ("patch", f"/api/v1/devices/{device.pk}/", {"username": "hijacked"}),
        ("put", f"/api/v1/devices/{device.pk}/", {"username": "hijacked", "realm": "evil.example.com"}),
        ("post", f"/api/v1/devices/{device.pk}/sync/", None),
        ("post", f"/api/v1/devices/{device.pk}/push/", None),
        ("post", f"/api/v1/tokens/{token.pk}/deactivate/", {"reason": "hijacked"}),
        ("post", f"/api/v1/tokens/{token.pk}/reactivate/", None),
        ("delete", f"/api/v1/devices/{device.pk}/", None),
    ]
    deliveries = Delivery.objects.count()
    for method, path, body in calls:
        response = getattr(mine, method)(path, body, format="json")
        assert response.status_code == 404, (method, path, response.content[:200])
    device.refresh_from_db()
    token.refresh_from_db()
    assert device.username == OTHER_USER and token.active
    assert LogEntry.objects.count() == before and Delivery.objects.count() == deliveries


def test_a_write_to_its_own_account_goes_through(two, mine, users) -> None:
    device = two.seed.device
    response = mine.patch(f"/api/v1/devices/{device.pk}/", {"realm": "new.example.com"}, format="json")
    assert response.status_code == 200 and response.json()["realm"] == "new.example.com"
    entry = LogEntry.objects.order_by("-pk").first()
    assert entry.user == users["admin"] and "(scoped token #" in entry.change_message


# --- Pushes ---------------------------------------------------------------------------------------------


def _push_req(token: str, **extra: str) -> dict:
    return {"Token-ID": token, "Token-Type": "apple", "Token-App": "com.acme.phone.voip.prod", "Call-ID": "scoped-1",
            "Payload": {"call-id": "scoped-1"}, **extra}


def test_a_push_req_goes_to_its_own_accounts_token_and_is_logged_there(two, mine, theirs) -> None:
    response = mine.post("/api/v1/push/", _push_req(VOIP_TOKEN), format="json")
    assert response.status_code == 200, response.content
    delivery = response.json()
    # The delivery names the device the token belongs to, so it is in the token's scope.
    assert delivery["account_id"] == ACCOUNT and delivery["device_id"] == two.seed.device.device_id
    assert mine.get(f"/api/v1/deliveries/{delivery['id']}/").status_code == 200
    assert theirs.get(f"/api/v1/deliveries/{delivery['id']}/").status_code == 404


@pytest.mark.parametrize("body", [
    _push_req(OTHER_TOKEN),  # another account's token
    _push_req(OTHER_TOKEN, **{"Account-ID": ACCOUNT}),  # ... claimed to be of its own account
    _push_req(VOIP_TOKEN, **{"Account-ID": OTHER_ACCOUNT}),  # its own token, named as another account's
    _push_req("ab" * 32),  # a token nobody holds
], ids=["other token", "other token, own account named", "own token, other account named", "unknown token"])
def test_a_push_req_outside_the_scope_is_a_404_and_sends_nothing(two, mine, body) -> None:
    deliveries = Delivery.objects.count()
    response = mine.post("/api/v1/push/", body, format="json")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert Delivery.objects.count() == deliveries


def test_send_reaches_the_devices_of_its_own_accounts_only(two, mine, theirs) -> None:
    body = {"type": "incoming_call", "payload": {"push_id": "send-1"}}
    other_aor = f"sip:{OTHER_USER}@{REG['Realm']}"
    deliveries = Delivery.objects.count()
    response = mine.post("/api/v1/send", {**body, "name": other_aor}, format="json")
    assert response.status_code == 404 and response.json()["code"] == "unknown_aor"
    assert Delivery.objects.count() == deliveries

    response = theirs.post("/api/v1/send", {**body, "name": other_aor}, format="json")
    assert response.status_code in (200, 502), response.content  # pushed (the app is not configured: 502)
    assert {d["account_id"] for d in response.json()["deliveries"]} == {OTHER_ACCOUNT}

    response = mine.post("/api/v1/send", {**body, "name": AOR}, format="json")
    assert response.status_code in (200, 502)
    assert {d["account_id"] for d in response.json()["deliveries"]} == {ACCOUNT}


def test_an_apps_test_push_goes_to_its_own_accounts_tokens_only(two, mine) -> None:
    app = two.seed.apple_app
    deliveries = Delivery.objects.count()
    response = mine.post(f"/api/v1/apps/{app.pk}/push/", {"token": OTHER_TOKEN}, format="json")
    assert response.status_code == 404 and Delivery.objects.count() == deliveries
    response = mine.post(f"/api/v1/apps/{app.pk}/push/", {"token": VOIP_TOKEN}, format="json")
    assert response.status_code == 200 and response.json()["account_id"] == ACCOUNT


# --- What a token is ---------------------------------------------------------------------------------


def test_a_token_never_does_more_than_its_owner(two, django_user_model) -> None:
    reader = django_user_model.objects.create_user("reader", "reader@example.com", None)
    reader.user_permissions.add(Permission.objects.get(codename="view_device"))
    token, key = scoped_token(reader, grants=("apps",))
    client = bearer_client(key)
    assert client.get("/api/v1/devices/").status_code == 200
    assert client.patch(f"/api/v1/devices/{two.seed.device.pk}/", {"realm": "x.example.com"},
                        format="json").status_code == 403
    assert client.get("/api/v1/apps/").status_code == 403  # granted, but its owner may not view apps
    reader.is_active = False
    reader.save()
    response = client.get("/api/v1/devices/")
    assert response.status_code == 401 and "inactive" in response.json()["detail"]


def test_plain_tokens_work_unchanged_and_the_schemes_do_not_mix(two, users) -> None:
    plain = Token.objects.get_or_create(user=users["readonly"])[0].key
    _token, key = scoped_token(users["admin"])
    assert token_client(users["readonly"]).get("/api/v1/devices/").status_code == 200
    for header in (f"Bearer {plain}", f"Token {key}", "Bearer", f"Bearer {key} extra", "Bearer pst_nope"):
        client = bearer_client("")
        client.credentials(HTTP_AUTHORIZATION=header)
        assert client.get("/api/v1/devices/").status_code == 401, header


def test_made_through_the_api_the_key_is_shown_once(two, admin_api, caplog) -> None:
    response = admin_api.post("/api/v1/scoped-tokens/", {
        "name": "reseller one", "owner": "admin", "account_ids": [ACCOUNT, ACCOUNT], "grant_rules_write": True,
    }, format="json")
    assert response.status_code == 201, response.content
    made = response.json()
    key = made["key"]
    assert key.startswith("pst_") and made["account_ids"] == [ACCOUNT] and made["state"] == "active"
    assert made["grant_rules_write"] and not made["grant_apps"] and made["owner"] == "admin"
    row = ScopedToken.objects.get(pk=made["id"])
    assert key not in json.dumps([row.key_hash, row.key_prefix, row.name]) and key.startswith(row.key_prefix)
    for path in ("/api/v1/scoped-tokens/", f"/api/v1/scoped-tokens/{made['id']}/"):
        body = admin_api.get(path).content.decode()
        assert key not in body and row.key_hash not in body and '"key"' not in body
    assert key not in caplog.text and key not in "".join(e.change_message for e in LogEntry.objects.all())

    client = bearer_client(key)
    assert client.get("/api/v1/devices/").json()["count"] == 1
    assert ScopedToken.objects.get(pk=made["id"]).last_used_at is not None
    # Revoked through the API: refused from the next request on.
    revoked = admin_api.post(f"/api/v1/scoped-tokens/{made['id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    response = client.get("/api/v1/devices/")
    assert response.status_code == 401 and response.json()["detail"] == "Token revoked."
    assert admin_api.get("/api/v1/scoped-tokens/?state=revoked").json()["count"] == 1
    assert admin_api.get("/api/v1/scoped-tokens/?state=active").json()["count"] == 0


@pytest.mark.parametrize("body, field", [
    ({"account_ids": ["3C0E5F1A9B2D4E6F8A7B6C5D4E3F2A1B"]}, "account_ids"),  # Kazoo's ids are lowercase
    ({"account_ids": ["3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1"]}, "account_ids"),  # 31 digits
    ({"account_ids": ["../3c0e5f1a9b2d4e6f8a7b6c5d4e3f"]}, "account_ids"),
    ({"account_ids": []}, "account_ids"),
    ({"account_ids": ACCOUNT}, "account_ids"),  # one text, not a list
    ({"owner": "nobody"}, "owner"),
    ({"owner": 1}, "owner"),
    ({"name": ""}, "name"),
    ({"grant_apps": "true"}, "grant_apps"),
    ({"expires_at": "2001-01-01T00:00:00Z"}, "code"),
])
def test_a_bad_token_is_refused_with_a_reason(admin_api, users, body, field) -> None:
    base = {"name": "reseller", "owner": "admin", "account_ids": [ACCOUNT]}
    response = admin_api.post("/api/v1/scoped-tokens/", {**base, **body}, format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert not ScopedToken.objects.exists()


def test_no_scoped_token_manages_tokens_even_a_superusers(two, mine) -> None:
    assert mine.get("/api/v1/scoped-tokens/").status_code == 403
    assert mine.post("/api/v1/scoped-tokens/", {"name": "escalate", "owner": "admin",
                                                "account_ids": [OTHER_ACCOUNT]}, format="json").status_code == 403
    assert ScopedToken.objects.count() == 1


# --- The schema ----------------------------------------------------------------------------------------


def test_the_schema_documents_the_scheme_and_shows_no_row(two, mine) -> None:
    response = mine.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    scheme = schema["components"]["securitySchemes"]["scopedTokenAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert {"scopedTokenAuth": []} in schema["paths"]["/api/v1/devices/"]["get"]["security"]
    assert "tokenAuth" in schema["components"]["securitySchemes"]  # the plain token, as before
    text = json.dumps(schema)
    # No example, default or description carries a row of either account.
    for value in (OTHER_ACCOUNT, ACCOUNT, OTHER_DEVICE, two.seed.device.device_id, OTHER_TOKEN, VOIP_TOKEN,
                  OTHER_USER, "other-call"):
        assert value not in text, value


def test_every_view_of_account_rows_keeps_to_the_scope() -> None:
    """A new viewset over devices, tokens or deliveries cannot forget the scope."""
    from pusher_site.api.auth import ScopedAccess
    from pusher_site.api.conventions import AccountRowsMixin
    from pusher_site.api.urls import router

    account_models = {Device, PushToken, Delivery}
    for _prefix, viewset, _basename in router.registry:
        queryset = getattr(viewset, "queryset", None)
        if queryset is not None and queryset.model in account_models:
            assert issubclass(viewset, AccountRowsMixin), viewset
            assert isinstance(getattr(viewset, "scoped_access", None), ScopedAccess), viewset
