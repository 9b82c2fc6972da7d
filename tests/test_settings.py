"""Production settings: a complete environment passes `check --deploy`, a missing secret stops the boot,
a bad encryption key fails clearly; the health and metrics endpoints answer probes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from push import services
from push.models import Credential, CredentialKind
from pusher_site import fields
from tests.certs import make_apns_certificate

BASE_DIR = Path(__file__).resolve().parent.parent
# Variables the settings read; the subprocesses start from an environment without any of them, so
# the test process's own (tests/testenv.py) cannot leak in.
_SETTINGS_PREFIXES = ("PUSHER_", "KAZOO_", "SECURE_", "DB_", "DJANGO_")
_SETTINGS_NAMES = {
    "DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DATABASE_URL",
    "AMQP_URL", "REDIS_URL", "LOG_LEVEL",
}


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _SETTINGS_NAMES and not key.startswith(_SETTINGS_PREFIXES)
    }
    env.update(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="pusher.example.com",
        PUSHER_DATA_DIR=str(tmp_path),
    )
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def _no_dotenv() -> None:
    # settings.py reads BASE_DIR/.env without overriding the environment; a developer's .env
    # would fill in the secrets the "missing" cases below remove.
    if (BASE_DIR / ".env").exists():
        pytest.skip(f"{BASE_DIR / '.env'} exists and would supply the missing settings")


def test_check_deploy_passes_with_a_complete_production_environment(tmp_path: Path, _no_dotenv) -> None:
    # The README's production set-up: TLS terminated by a proxy that sets X-Forwarded-Proto.
    env = production_env(tmp_path, PUSHER_TRUST_X_FORWARDED_PROTO="1", SECURE_SSL_REDIRECT="1")

    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERRORS" not in output
    assert "WARNINGS" not in output
    assert "System check identified no issues" in output


@pytest.mark.parametrize("name", ["SECRET_KEY", "FIELD_ENCRYPTION_KEY"])
@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_production_secret_stops_the_boot(tmp_path: Path, _no_dotenv, name: str, value: str | None) -> None:
    env = production_env(tmp_path)
    if value is None:
        del env[name]
    else:
        env[name] = value

    result = manage(env, "check", "--deploy")

    assert result.returncode == 2
    assert result.stderr == (
        f"pusher: {name} is required when DEBUG is off (set it in the environment or .env; "
        f"DEBUG=1 for a development run)\n"
    )
    assert result.stdout == ""


@pytest.mark.parametrize("key", ["not-a-fernet-key", "c2hvcnQ=", ","])
def test_a_malformed_field_encryption_key_stops_the_boot_in_one_line(tmp_path: Path, _no_dotenv, key: str) -> None:
    result = manage(production_env(tmp_path, FIELD_ENCRYPTION_KEY=key), "check")

    assert result.returncode == 2
    assert result.stderr == (
        "pusher: FIELD_ENCRYPTION_KEY must be comma-separated Fernet keys (32 url-safe base64-encoded bytes each)\n"
    )


def settings_values(env: dict[str, str], *names: str) -> dict:
    script = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    )
    env = {**env, "DJANGO_SETTINGS_MODULE": "pusher_site.settings"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


_TLS_SETTINGS = ("SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")


def test_production_defaults_serve_plain_http_and_trust_no_forwarded_proto(tmp_path: Path, _no_dotenv) -> None:
    values = settings_values(production_env(tmp_path), *_TLS_SETTINGS)

    assert values == {
        "SECURE_PROXY_SSL_HEADER": None, "SECURE_SSL_REDIRECT": False,
        "SESSION_COOKIE_SECURE": False, "CSRF_COOKIE_SECURE": False,
    }


def test_a_trusted_tls_proxy_is_declared_explicitly(tmp_path: Path, _no_dotenv) -> None:
    trusted = settings_values(production_env(tmp_path, PUSHER_TRUST_X_FORWARDED_PROTO="1"), *_TLS_SETTINGS)
    redirected = settings_values(
        production_env(tmp_path, PUSHER_TRUST_X_FORWARDED_PROTO="1", SECURE_SSL_REDIRECT="1"), *_TLS_SETTINGS
    )

    assert trusted == {
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"], "SECURE_SSL_REDIRECT": False,
        "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True,
    }
    assert redirected == {**trusted, "SECURE_SSL_REDIRECT": True}


def test_development_defaults_apply_only_with_debug_on(tmp_path: Path, _no_dotenv) -> None:
    env = production_env(tmp_path, DEBUG="1")
    del env["SECRET_KEY"], env["FIELD_ENCRYPTION_KEY"], env["ALLOWED_HOSTS"]

    result = manage(env, "check")

    assert result.returncode == 0, result.stdout + result.stderr


# --- A bad encryption key ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [["not-a-fernet-key"], ["c2hvcnQ="], [Fernet.generate_key().decode(), "oops"], []])
def test_an_invalid_field_encryption_key_fails_clearly_on_save(settings, bad: list[str]) -> None:
    cert_pem, key_pem = make_apns_certificate("com.example.badkey")
    parsed = services.credential_parse(kind=CredentialKind.APNS_CERTIFICATE, data=cert_pem + key_pem)
    settings.FIELD_ENCRYPTION_KEY = bad
    fields._fernet.cache_clear()

    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEY must be one or more") as excinfo:
        services.credential_save(name="bad key", parsed=parsed)

    for key in bad:
        assert key not in str(excinfo.value)
    assert not Credential.objects.exists()
    fields._fernet.cache_clear()


# --- Probes --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_reports_the_database(client) -> None:
    response = client.get(reverse("healthz"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db
def test_metrics_are_prometheus_text(client) -> None:
    response = client.get(reverse("metrics"))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "# TYPE pusher_pushes_total counter" in body
    assert "# HELP pusher_pushes_total" in body


@pytest.mark.django_db
def test_probes_answer_plain_http_when_https_is_enforced(client, settings) -> None:
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    response = client.get("/admin/")
    assert response.status_code == 301
    assert response["Location"].startswith("https://")


@pytest.mark.django_db
def test_metrics_can_be_restricted_to_staff(client, staff_client, settings) -> None:
    settings.PUSHER_METRICS_PUBLIC = False

    assert staff_client.get("/metrics").status_code == 200
    client.logout()
    assert client.get("/metrics").status_code == 403
