"""API test fixtures: users of the four roles with their tokens, scoped tokens (tenancy) of five kinds,
and a database seeded with one row of everything, including credentials whose secrets are known so
every answer can be scanned for them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from hooks import services as hooks_services
from hooks.models import Alert, WebhookDelivery, WebhookSubscription
from push import services as push_services
from push.models import Credential, Delivery, Provider, PushApp
from registry.models import Device, PushToken, TokenReporter, UserAgentRule
from registry.reporting import token_reporter_create
from registry.services import registration_apply
from tenancy import services as tenancy_services
from tenancy.models import Grant, ScopedToken
from tests.certs import TEAM_ID, make_apns_certificate, make_p8, make_service_account
from tests.fixtures import sample

REG = sample("reg_success_kamailio_master.json")["body"]
AOR = f"sip:{REG['Username']}@{REG['Realm']}"
ACCOUNT = REG["Custom-Channel-Vars"]["Account-ID"]  # the seed's device's account
OTHER_ACCOUNT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
VOIP_TOKEN = "5e0f4c3a9b8d7e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
REMOTE_TOKEN = "aa11bb22cc33dd44ee55ff6600112233445566778899aabbccddeeff00112233"
LEGACY_KEY = "AAAAlegacy-SECRET-server-key:APA91bLEAKCANARY0123456789abcdefghijklmnop"
WEBHOOK_SECRET = "whsec-LEAKCANARY-webhook-0123456789"
P8_KEY_ID = "ABCDE12345"
MODELS = ["push.pushapp", "push.credential", "push.delivery", "registry.useragentrule", "registry.device",
          "registry.pushtoken", "registry.tokenreporter"]
REPORTER_SECRET = "SECRETreporter-0123456789abcdef"


@dataclass
class Seed:
    cert: Credential
    p8: Credential
    service_account: Credential
    legacy: Credential
    apple_app: PushApp
    firebase_app: PushApp
    rule: UserAgentRule
    device: Device
    delivery: Delivery
    webhook: WebhookSubscription
    webhook_delivery: WebhookDelivery
    alert: Alert
    reporter: TokenReporter
    # Substrings of the secrets that must never appear in any answer.
    secrets: list[str] = field(default_factory=list)


def _key_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM private key (each one alone would betray it)."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")][1:3]


@pytest.fixture(autouse=True)
def _nothing_real(settings, monkeypatch):
    """No push may leave the machine: FCM points at a closed local port, deadlines are short. No
    webhook either (a generated subscription may name any host): every request to a host other
    than this one goes through a "proxy" on a closed local port, and fails at once."""
    settings.PUSHER_FCM_ENDPOINT = "https://127.0.0.1:9"
    settings.KAZOO_CROSSBAR_URL = ""
    settings.KAZOO_API_KEY = ""
    settings.PUSHER_WEBHOOK_TIMEOUT_S = 1.0
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def seed(db, acme_rule) -> Seed:
    cert_pem, cert_key = make_apns_certificate("com.acme.phone", voip=True)
    p8 = make_p8("api-tests")
    account = make_service_account("acme-phone", "https://127.0.0.1:9/token")

    def save(name: str, kind: str, data: str, **kw: str) -> Credential:
        return push_services.credential_save(name=name, parsed=push_services.credential_parse(kind=kind, data=data,
                                                                                              **kw))

    cert = save("acme voip cert", "apns_certificate", cert_pem + cert_key)
    p8_cred = save("acme p8", "apns_token", p8, key_id=P8_KEY_ID, team_id=TEAM_ID)
    sa = save("acme fcm", "fcm_service_account", json.dumps(account))
    legacy = save("acme legacy", "fcm_legacy_key", LEGACY_KEY)
    # Disabled and pointed at a closed local port: a test push through them fails at once.
    apple_app = PushApp.objects.create(app_id="com.acme.phone.voip.prod", provider=Provider.APPLE, credential=cert,
                                       host="127.0.0.1", port=9, enabled=False)
    firebase_app = PushApp.objects.create(app_id="com.acme.phone", provider=Provider.FIREBASE, credential=sa,
                                          enabled=False)
    rule = acme_rule
    device = registration_apply(fields=REG).device
    PushToken.objects.create(device=device, token=REMOTE_TOKEN, token_type="apple", app="com.acme.phone",
                             kind="remote", last_seen_at=timezone.now())
    delivery = push_services.push_request_handle(fields={
        "Token-ID": VOIP_TOKEN, "Token-Type": "apple", "Token-App": "com.unconfigured.app", "Call-ID": "seed-call",
        "Account-ID": device.account_id, "Payload": {"call-id": "seed-call"},
    }, source="amqp")
    # A receiver on a closed local port: a test event or a retry fails at once.
    webhook = hooks_services.webhook_subscription_create(name="seed hook", url="http://127.0.0.1:9/pusher",
                                                         secret=WEBHOOK_SECRET, event_types=["push.failed"])
    hooks_services.webhook_event_record(event=hooks_services.WebhookEvent("push.failed", "push:seed", {"seed": 1}))
    hooks_services.alert_raise(key="consumer.down", event_type="consumer.down", summary="seed outage", data={})
    reporter = token_reporter_create(slug="groundwire", secret=REPORTER_SECRET, fixed={"Token-Type": "apple"},
                                     user_agent_regex="^Groundwire")
    secrets = [*_key_lines(cert_key), *_key_lines(p8), *_key_lines(account["private_key"]), LEGACY_KEY,
               "PRIVATE KEY", WEBHOOK_SECRET, REPORTER_SECRET]
    return Seed(cert=cert, p8=p8_cred, service_account=sa, legacy=legacy, apple_app=apple_app,
                firebase_app=firebase_app, rule=rule, device=device, delivery=delivery, webhook=webhook,
                webhook_delivery=WebhookDelivery.objects.get(subscription=webhook), alert=Alert.objects.get(),
                reporter=reporter,
                secrets=secrets)


@pytest.fixture
def seed_on_fake_apns(seed, apns_trusting_fake):
    """The seed's VoIP app enabled and pointed at the fake APNs, with a certificate the fake trusts."""
    fake = apns_trusting_fake
    cert = fake.ca.issue_client_cert("com.acme.phone", voip=True, topics=["com.acme.phone", "com.acme.phone.voip"])
    credential = push_services.credential_save(
        name="fake", parsed=push_services.credential_parse(kind="apns_certificate", data=cert.pem)
    )
    PushApp.objects.filter(pk=seed.apple_app.pk).update(enabled=True, credential=credential, host=fake.host,
                                                       port=fake.port)
    return fake


def _user(django_user_model, name: str, perms: list[str], *, superuser: bool = False):
    if superuser:
        return django_user_model.objects.create_superuser(name, f"{name}@example.com", None)
    user = django_user_model.objects.create_user(name, f"{name}@example.com", None)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def _perms(*actions: str) -> list[str]:
    return [f"{m.split('.')[0]}.{a}_{m.split('.')[1]}" for m in MODELS for a in actions]


ROLES = ("anonymous", "readonly", "operator", "admin")


@pytest.fixture
def users(db, django_user_model) -> dict:
    return {
        "readonly": _user(django_user_model, "readonly", _perms("view")),
        "operator": _user(django_user_model, "operator", [*_perms("view", "add", "change"), "push.send_push"]),
        "admin": _user(django_user_model, "admin", [], superuser=True),
    }


def token_client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def clients(users) -> dict[str, APIClient]:
    return {"anonymous": token_client(), **{role: token_client(user) for role, user in users.items()}}


@pytest.fixture
def admin_api(clients) -> APIClient:
    return clients["admin"]


# Scoped tokens (tenancy), all owned by the superuser so that what each may do is its scope and
# grants alone: "scoped" (the seed's account, no grant), "scoped_granted" (the seed's account, every
# grant), "scoped_other" (another account, every grant), "scoped_revoked" and "scoped_expired" (the
# seed's account, every grant, refused).
SCOPED_ROLES = ("scoped", "scoped_granted", "scoped_other", "scoped_revoked", "scoped_expired")
ALL_GRANTS = tuple(Grant.values)


@dataclass
class Scoped:
    tokens: dict[str, ScopedToken]
    keys: dict[str, str]
    spare: ScopedToken  # one no client uses (to revoke)


def scoped_token(owner, *, accounts=(ACCOUNT,), grants=(), name="reseller") -> tuple[ScopedToken, str]:
    created = tenancy_services.scoped_token_create(name=name, owner=owner, account_ids=accounts, grants=grants)
    return created.token, created.key


@pytest.fixture
def scoped(users) -> Scoped:
    owner = users["admin"]
    specs = {
        "scoped": ((ACCOUNT,), ()),
        "scoped_granted": ((ACCOUNT,), ALL_GRANTS),
        "scoped_other": ((OTHER_ACCOUNT,), ALL_GRANTS),
        "scoped_revoked": ((ACCOUNT,), ALL_GRANTS),
        "scoped_expired": ((ACCOUNT,), ALL_GRANTS),
    }
    tokens, keys = {}, {}
    for role, (accounts, grants) in specs.items():
        tokens[role], keys[role] = scoped_token(owner, accounts=accounts, grants=grants, name=role)
    tenancy_services.scoped_token_revoke(token=tokens["scoped_revoked"])
    # The service refuses an expiry in the past; this one has come and gone.
    ScopedToken.objects.filter(pk=tokens["scoped_expired"].pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    spare, _ = scoped_token(owner, name="spare")
    return Scoped(tokens=tokens, keys=keys, spare=spare)


def bearer_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def scoped_clients(scoped) -> dict[str, APIClient]:
    return {role: bearer_client(key) for role, key in scoped.keys.items()}
