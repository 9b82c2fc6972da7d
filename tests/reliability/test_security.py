"""Security properties of the web faces and of the code: CSRF, production cookie/HSTS settings,
nothing reachable anonymously but login, health and (configurably) metrics, secrets that never
come back out (pages, API, events, logs), provider hosts from configuration with TLS verified."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from django.contrib import admin
from django.contrib.admindocs.views import extract_views_from_urlpatterns, simplify_regex
from django.test import Client
from django.urls import Resolver404, get_resolver, resolve, reverse
from rest_framework.authtoken.models import Token

from kazoo.wire import RawMessage, message_process
from push import services
from push.models import Provider, PushApp
from tests import certs
from tests.fakes.apns import TokenKey
from tests.reliability import strategies as s

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_DIRS = ("push", "registry", "pusher_site")

# --- URL inventory (built from the resolver, so new admin pages and API routes are covered) ---------

SAMPLE_VALUES = {"app_label": "registry", "url": "anything/", "rest": "anything/", "format": "json"}


def url_inventory() -> list[tuple[str, str]]:
    """(concrete path, route) for every URL pattern the project serves."""
    seen: dict[str, str] = {}
    for _view, regex, _namespace, _name in extract_views_from_urlpatterns(get_resolver().url_patterns):
        route = simplify_regex(regex)
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: SAMPLE_VALUES.get(m.group(1), "1"), route)
        path = path.replace("//", "/")
        try:
            resolve(path)
        except Resolver404:
            raise AssertionError(f"could not build a path for the URL pattern {route!r}") from None
        seen.setdefault(path, route)
    return sorted(seen.items())


URLS = url_inventory()
PUBLIC = {"/admin/login/", "/healthz", "/metrics"}
# Routes that answer 404 to everyone (nothing there to protect).
NOT_FOUND_FOR_ALL = {"/api/v1/<rest>"}
# Apps' push token reports (pusher_site.report) carry their reporter's own secret or signature instead of a
# login: without it they are refused (401/403, 404 for a reporter that does not exist), in JSON.
SELF_AUTHENTICATED = ("/report/",)
# SEC-1 (the schema and its UI served to anyone) is fixed: SPECTACULAR_SETTINGS SERVE_PERMISSIONS.
REPORTED_OPEN: dict[str, str] = {}


def url_param(path: str, route: str) -> Any:
    marks = []
    if path in REPORTED_OPEN:
        marks.append(pytest.mark.xfail(reason=f"{REPORTED_OPEN[path]} (reported, not fixed yet)", strict=True))
    return pytest.param(path, route, id=path, marks=marks)


def test_the_inventory_covers_admin_and_api() -> None:
    paths = [path for path, _ in URLS]
    assert sum(p.startswith("/admin/") for p in paths) > 30
    assert any(p.startswith("/api/v1/") for p in paths)
    assert PUBLIC <= set(paths)


@pytest.mark.django_db
@pytest.mark.parametrize("path, route", [url_param(path, route) for path, route in URLS])
def test_nothing_is_reachable_anonymously(client: Client, settings: Any, path: str, route: str) -> None:
    settings.PUSHER_METRICS_PUBLIC = True
    response = client.get(path)
    if path in PUBLIC:
        assert response.status_code == 200
        return
    if route in NOT_FOUND_FOR_ALL:
        assert response.status_code == 404
        return
    if path.startswith("/api/"):
        assert response.status_code in (401, 403), f"{path}: {response.status_code}"
        return
    if path.startswith(SELF_AUTHENTICATED):
        assert response.status_code in (401, 403, 404) and response.json()["code"], f"{path}: {response.status_code}"
        return
    # Admin pages (and the home page, which redirects to them) end at the login form.
    if response.status_code == 405:  # e.g. /admin/logout/ accepts only POST
        return
    assert response.status_code == 302, f"{path}: {response.status_code}"
    final = client.get(path, follow=True)
    assert final.redirect_chain and final.redirect_chain[-1][0].startswith(reverse("admin:login")), path


@pytest.mark.django_db
def test_metrics_are_refused_to_anonymous_users_when_not_public(settings: Any, staff_client: Client) -> None:
    settings.PUSHER_METRICS_PUBLIC = False
    assert Client().get("/metrics").status_code == 403
    assert staff_client.get("/metrics").status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["anonymous", "not staff"])
def test_the_live_feed_websocket_refuses_anonymous_and_non_staff(client: Client, django_user_model: Any,
                                                                 settings: Any, kind: str) -> None:
    from pusher_site.asgi import application
    from pusher_site.consumers import CLOSE_FORBIDDEN

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if kind == "not staff":
        client.force_login(django_user_model.objects.create_user("plain", password="a-long-password-123"))
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))

    async def connect() -> tuple[bool, int | None]:
        communicator = WebsocketCommunicator(application, "/ws/events/", headers=headers)
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    assert async_to_sync(connect)() == (False, CLOSE_FORBIDDEN)


# --- CSRF and production settings -------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_post_without_csrf_token_is_refused(staff_user: Any) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    add_rule = reverse("admin:registry_useragentrule_add")
    assert browser.get(add_rule).status_code == 200
    response = browser.post(add_rule, {"name": "csrf", "regex": "^x", "properties": "{}", "position": 1})
    assert response.status_code == 403
    login = Client(enforce_csrf_checks=True).post(reverse("admin:login"), {"username": "ops", "password": "x"})
    assert login.status_code == 403


def test_production_settings_secure_cookies_and_hsts(tmp_path: Path) -> None:
    names = ("DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY",
             "SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT", "SECURE_CONTENT_TYPE_NOSNIFF", "X_FRAME_OPTIONS")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PUSHER_", "SECURE_", "DJANGO_", "KAZOO_")) and key not in ("DEBUG", "DATABASE_URL")}
    env.update(DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50), FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
               ALLOWED_HOSTS="pusher.example.com", PUSHER_DATA_DIR=str(tmp_path),
               DJANGO_SETTINGS_MODULE="pusher_site.settings",
               # Served over HTTPS, as the README documents it: a TLS proxy that sets X-Forwarded-Proto.
               PUSHER_TRUST_X_FORWARDED_PROTO="1", SECURE_SSL_REDIRECT="1")
    script = ("import json; from django.conf import settings; "
              f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_SECURE"] is True and values["CSRF_COOKIE_SECURE"] is True
    assert values["SESSION_COOKIE_HTTPONLY"] is True
    assert values["SECURE_HSTS_SECONDS"] > 0 and values["SECURE_SSL_REDIRECT"] is True
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] is True and values["X_FRAME_OPTIONS"] == "DENY"


# --- TLS and provider hosts -----------------------------------------------------------------------------

INSECURE = re.compile(r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context")
PROVIDER_HOSTS = re.compile(r"api(?:\.sandbox)?\.push\.apple\.com|fcm\.googleapis\.com|oauth2\.googleapis\.com")
# Where a provider host may be named: the documented defaults an operator overrides (PushApp.host,
# PUSHER_FCM_ENDPOINT), help texts, comments and docstrings.
PROVIDER_HOST_DEFAULTS = {
    "pusher_site/settings.py": re.compile(r"^PUSHER_FCM_ENDPOINT = env\.str\("),
    "push/providers/fcm.py": re.compile(r"^DEFAULT_ENDPOINT = "),
    "push/providers/apns.py": re.compile(r"^(PRODUCTION|SANDBOX)_HOST = "),
    "push/services.py": re.compile(r"^APNS_(PRODUCTION|SANDBOX)_HOST = "),
    "push/models.py": re.compile(r"^\s*default="),
}
DOCUMENTATION = re.compile(r"^\s*(#|help(_text)?=)")


def product_sources() -> Iterator[tuple[str, list[str], set[int]]]:
    """(path, lines, line numbers inside docstrings) of every product module."""
    for directory in PRODUCT_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            text = path.read_text()
            docstrings: set[int] = set()
            for node in ast.walk(ast.parse(text)):
                body = getattr(node, "body", None)
                if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                        and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    docstrings.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
            yield path.relative_to(ROOT).as_posix(), text.splitlines(), docstrings


def test_tls_verification_is_never_disabled_in_product_code() -> None:
    found = [f"{path}:{n}: {line.strip()}" for path, lines, _ in product_sources()
             for n, line in enumerate(lines, 1) if INSECURE.search(line)]
    assert not found, "TLS verification disabled:\n" + "\n".join(found)


def test_provider_hosts_come_from_configuration() -> None:
    """APNs hosts are each app's PushApp.host, FCM is PUSHER_FCM_ENDPOINT, Crossbar is
    KAZOO_CROSSBAR_URL; the production hosts appear only as the defaults of that configuration.
    (test_secrets_never_come_back_out shows pushes going where the configuration says: the fakes.)"""
    found = []
    for path, lines, docstrings in product_sources():
        for n, line in enumerate(lines, 1):
            if not PROVIDER_HOSTS.search(line) or n in docstrings or DOCUMENTATION.match(line):
                continue
            allowed = PROVIDER_HOST_DEFAULTS.get(path)
            if allowed is None or not allowed.match(line):
                found.append(f"{path}:{n}: {line.strip()}")
    assert not found, "provider host named outside its configuration default:\n" + "\n".join(found)


# --- secrets never come back out --------------------------------------------------------------------


def secret_fragments(secret: str) -> list[str]:
    """The secret and every line of it long enough to be recognisable (PEM bodies, JSON lines)."""
    lines = [line.strip() for line in secret.splitlines() if len(line.strip()) >= 16 and "-----" not in line]
    return [secret.strip(), *lines]


class Surfaces:
    """Everything an operator, an API client or a log reader can see, with where it was seen."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        self.seen.append((where, text))

    def leaks(self, seeded: dict[str, str]) -> list[tuple[str, str]]:
        found = {(name, where) for name, secret in seeded.items() for fragment in secret_fragments(secret)
                 for where, text in self.seen if fragment in text}
        return sorted(found)


def reported_leak(name: str, where: str) -> bool:
    """Leaks reported and not fixed yet. (SEC-2, API tokens in clear in the admin, is fixed:
    pusher_site/admin.py masks them and pusher_site/apps.py masks Token.__str__.)"""
    return False


@pytest.fixture
def seeded(db: Any, staff_user: Any, apns_trusting_fake: Any, fake_fcm: Any, settings: Any) -> dict[str, Any]:
    """Credentials and apps with known secret values, pushing to the fakes."""
    fake_apns = apns_trusting_fake
    settings.PUSHER_FCM_ENDPOINT = fake_fcm.endpoint
    secret_values: dict[str, str] = {}

    # A certificate the fake APNs trusts (its own CA), and one from tests/certs it does not (a
    # refused TLS handshake: the error path must not leak the key either).
    trusted = fake_apns.ca.issue_client_cert("com.acme.phone", voip=True,
                                             topics=["com.acme.phone", "com.acme.phone.voip"])
    cert_pem, key_pem = certs.make_apns_certificate("com.acme.other", voip=True)
    p8 = certs.make_p8("leak-test")
    key = serialization.load_pem_private_key(p8.encode(), password=None)
    fake_apns.add_token_key(TokenKey(key_id="LEAKKEY001", team_id=certs.TEAM_ID, key_pem=p8,
                                     public_key=key.public_key()))  # type: ignore[arg-type]
    account = certs.make_service_account("acme-leak", fake_fcm.token_uri)
    fake_fcm.register_service_account(account)
    legacy = "AAAA" + secrets.token_urlsafe(100)
    secret_values.update({
        "APNs certificate key": trusted.key_pem, "APNs certificate key (untrusted CA)": key_pem, "APNs .p8": p8,
        "service account private key": account["private_key"], "FCM legacy key": legacy,
    })

    def credential(name: str, kind: str, data: str, **kwargs: str) -> Any:
        return services.credential_save(name=name, parsed=services.credential_parse(kind=kind, data=data, **kwargs))

    apps = {
        "cert": PushApp.objects.create(
            app_id="com.acme.phone.voip.prod", provider=Provider.APPLE, host=fake_apns.host, port=fake_apns.port,
            credential=credential("voip cert", "apns_certificate", trusted.pem)),
        "untrusted": PushApp.objects.create(
            app_id="com.acme.other.voip.prod", provider=Provider.APPLE, host=fake_apns.host, port=fake_apns.port,
            credential=credential("other cert", "apns_certificate", cert_pem + key_pem)),
        "p8": PushApp.objects.create(
            app_id="com.acme.phone.token", provider=Provider.APPLE, host=fake_apns.host, port=fake_apns.port,
            topic="com.acme.phone",
            credential=credential("p8 key", "apns_token", p8, key_id="LEAKKEY001", team_id=certs.TEAM_ID)),
        "fcm": PushApp.objects.create(
            app_id="com.acme.phone", provider=Provider.FIREBASE,
            credential=credential("service account", "fcm_service_account", json.dumps(account))),
        "legacy": PushApp.objects.create(
            app_id="com.acme.legacy", provider=Provider.FIREBASE,
            credential=credential("legacy key", "fcm_legacy_key", legacy)),
    }
    token = Token.objects.create(user=staff_user)
    secret_values["DRF API token"] = token.key
    return {"secrets": secret_values, "apps": apps, "token": token.key}


def api_paths(client: Client) -> list[str]:
    """Every GET-able /api/ path with real ids: list endpoints, then each object of each list."""
    routes = [route for _, route in URLS if route.startswith("/api/") and "<rest>" not in route]
    paths = [route for route in routes if "<" not in route]
    for route in routes:
        if "<pk>" not in route:
            continue
        listing = client.get(route.split("<pk>")[0])
        if listing.status_code != 200:
            continue
        payload = listing.json()
        rows = payload.get("results", payload) if isinstance(payload, dict) else payload
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and "id" in row:
                paths.append(route.replace("<pk>", str(row["id"])))
    return paths


def admin_paths() -> list[str]:
    paths = [reverse("admin:index"), reverse("pusher-dashboard"), reverse("pusher-dashboard") + "?fragment=summary"]
    paths += [path for path, route in URLS if route.startswith("/admin/") and "<" not in route]
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        for obj in model._default_manager.all():
            object_id = obj.user_id if info == ("authtoken", "tokenproxy") else obj.pk
            for view in ("change", "history", "delete"):
                paths.append(reverse(f"admin:{info[0]}_{info[1]}_{view}", args=[object_id]))
    # Logout only takes a POST; autocomplete answers 403 without its query parameters.
    return sorted(set(paths) - {reverse("admin:logout"), reverse("admin:autocomplete")})


def test_secrets_never_come_back_out(seeded: dict[str, Any], staff_client: Client, rules: None, caplog: Any,
                                     monkeypatch: Any, django_capture_on_commit_callbacks: Any, fake_apns: Any,
                                     fake_fcm: Any) -> None:
    surfaces = Surfaces()
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    monkeypatch.setattr("core.events._send", lambda event: surfaces.add("event", json.dumps(event)))

    outcomes: dict[str, str] = {}
    with django_capture_on_commit_callbacks(execute=True):
        # The bus: a registration and pushes through every app (sent, refused, unusable).
        message_process(RawMessage(body=s.encode(s.REG), exchange="registrar", received_at=time.time()))
        for app in seeded["apps"].values():
            token_type = "apple" if app.provider == Provider.APPLE else "firebase"
            fields = {**s.PUSH, "Msg-ID": uuid.uuid4().hex, "Token-App": app.app_id, "Token-Type": token_type,
                      "Expires": 3}
            delivery = services.push_request_handle(fields=fields, source="api")
            outcomes[app.app_id] = delivery.status
            surfaces.add(f"delivery {app.app_id}", f"{delivery.status} {delivery.reason} {delivery.error}")
        # The admin, every page of every object.
        for path in admin_paths():
            response = staff_client.get(path)
            # 403: pages the model admin refuses to everyone (e.g. adding a delivery by hand).
            assert response.status_code in (200, 302, 403), f"{path}: {response.status_code}"
            surfaces.add(path, response.content.decode(errors="replace"))
        # The API, with the seeded API token.
        api = Client(HTTP_AUTHORIZATION=f"Token {seeded['token']}")
        for path in api_paths(api):
            response = api.get(path)
            surfaces.add(path, response.content.decode(errors="replace"))

    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        surfaces.add(f"log {record.name}", text)

    # The session did what it claims: pushes sent through each usable credential (to the fakes, at the
    # hosts the apps and PUSHER_FCM_ENDPOINT name), refused ones recorded, events, API and admin pages.
    assert outcomes == {"com.acme.phone.voip.prod": "sent", "com.acme.other.voip.prod": "failed",
                        "com.acme.phone.token": "sent", "com.acme.phone": "sent", "com.acme.legacy": "failed"}
    assert fake_apns.requests and fake_fcm.requests
    assert any(where == "event" for where, _ in surfaces.seen), "no event captured"
    assert sum(where.startswith("/api/") for where, _ in surfaces.seen) >= 5
    assert sum(where.startswith("/admin/") for where, _ in surfaces.seen) >= 30
    leaks = [leak for leak in surfaces.leaks(seeded["secrets"]) if not reported_leak(*leak)]
    assert not leaks, "secrets seen:\n" + "\n".join(f"{name} in {where}" for name, where in leaks)


@pytest.mark.parametrize("page", ["admin:authtoken_tokenproxy_changelist", "admin:auth_user_delete"])
def test_api_tokens_are_not_shown_in_the_admin(seeded: dict[str, Any], staff_client: Client, staff_user: Any,
                                               page: str) -> None:
    args = [staff_user.pk] if page.endswith("_delete") else []
    response = staff_client.get(reverse(page, args=args))
    assert response.status_code == 200
    assert seeded["token"] not in response.content.decode()
