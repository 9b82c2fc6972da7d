"""Production settings: a complete environment passes `check --deploy`, a missing secret stops the boot
in one line, a bad encryption key fails clearly, X-Forwarded-Proto is trusted only when declared; the
health and metrics endpoints answer probes; every environment variable read is in the README's table."""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from core import fields
from push import services
from push.models import Credential, CredentialKind
from tests.certs import make_apns_certificate

BASE_DIR = Path(__file__).resolve().parent.parent
# Variables the settings read; the subprocesses start from an environment without any of them, so
# the test process's own (tests/testenv.py) cannot leak in.
_SETTINGS_PREFIXES = ("PUSHER_", "KAZOO_", "SECURE_", "DB_", "DJANGO_")
_SETTINGS_NAMES = {
    "DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DATABASE_URL",
    "AMQP_URL", "REDIS_URL", "LOG_LEVEL", "EMAIL_URL", "DEFAULT_FROM_EMAIL",
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


_QUEUE_SETTINGS = ("PUSHER_QUEUE_DURABLE", "PUSHER_QUEUE_AUTO_DELETE", "PUSHER_QUEUE_MAX_LENGTH",
                   "PUSHER_QUEUE_MESSAGE_TTL_MS")


def test_the_queue_is_declared_as_kazoo_declares_it_unless_told_otherwise(tmp_path: Path, _no_dotenv) -> None:
    assert settings_values(production_env(tmp_path), *_QUEUE_SETTINGS) == {
        "PUSHER_QUEUE_DURABLE": False, "PUSHER_QUEUE_AUTO_DELETE": True,
        "PUSHER_QUEUE_MAX_LENGTH": 100, "PUSHER_QUEUE_MESSAGE_TTL_MS": 60000,
    }
    own = production_env(tmp_path, PUSHER_QUEUE_DURABLE="1", PUSHER_QUEUE_AUTO_DELETE="0",
                         PUSHER_QUEUE_MAX_LENGTH="none", PUSHER_QUEUE_MESSAGE_TTL_MS="None")
    assert settings_values(own, *_QUEUE_SETTINGS) == {
        "PUSHER_QUEUE_DURABLE": True, "PUSHER_QUEUE_AUTO_DELETE": False,
        "PUSHER_QUEUE_MAX_LENGTH": None, "PUSHER_QUEUE_MESSAGE_TTL_MS": None,
    }


_APPS_PROBE = """
import json, os, sys
sys.argv = ["manage.py", sys.argv[1]]
os.environ["DJANGO_SETTINGS_MODULE"] = "pusher_site.settings"
import django
django.setup()
from django.conf import settings
from django.core.management import get_commands
from django.contrib import admin
from push.models import PushApp
print(json.dumps({"daphne_app": "daphne" in settings.INSTALLED_APPS, "twisted": "twisted" in sys.modules,
                  "runserver": get_commands()["runserver"], "admin_pages": "pusher_site.admin" in sys.modules,
                  "push_app_admin": admin.site.is_registered(PushApp)}))
"""


@pytest.mark.parametrize(("command", "web"), [("runconsumer", False), ("runserver", True), ("migrate", True)])
def test_the_consumer_process_goes_without_daphne_and_the_admin_pages(tmp_path: Path, _no_dotenv, command, web) -> None:
    """daphne's app makes `runserver` serve ASGI; the consumer serves no HTTP and does not load it
    (Twisted and autobahn: ~15 MB of a consumer's RSS, measured with bench.push), nor the admin's
    pages (SimpleAdminConfig: no ModelAdmin registered, 1.3 MB); every other process has both."""
    result = subprocess.run([sys.executable, "-c", _APPS_PROBE, command], cwd=BASE_DIR, env=production_env(tmp_path),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "daphne_app": web, "twisted": web, "runserver": "daphne" if web else "django.contrib.staticfiles",
        "admin_pages": web, "push_app_admin": web,
    }


def test_a_malformed_queue_limit_stops_the_boot_in_one_line(tmp_path: Path, _no_dotenv) -> None:
    result = manage(production_env(tmp_path, PUSHER_QUEUE_MAX_LENGTH="unlimited"), "check")

    assert result.returncode == 2
    assert result.stderr == (
        "pusher: PUSHER_QUEUE_MAX_LENGTH must be an integer from 1 to 2147483647, or none (no such argument); "
        "got 'unlimited'\n"
    )


_RETENTION_SETTINGS = ("PUSHER_DELIVERY_RETENTION_DAYS", "PUSHER_DEVICE_RETENTION_DAYS", "PUSHER_PRUNE_INTERVAL_S")


def test_retention_defaults_keep_devices_and_a_month_of_deliveries(tmp_path: Path, _no_dotenv) -> None:
    assert settings_values(production_env(tmp_path), *_RETENTION_SETTINGS) == {
        "PUSHER_DELIVERY_RETENTION_DAYS": 30, "PUSHER_DEVICE_RETENTION_DAYS": 0, "PUSHER_PRUNE_INTERVAL_S": 3600,
    }
    own = production_env(tmp_path, PUSHER_DELIVERY_RETENTION_DAYS="0", PUSHER_DEVICE_RETENTION_DAYS=" 90 ",
                         PUSHER_PRUNE_INTERVAL_S="0")
    assert settings_values(own, *_RETENTION_SETTINGS) == {
        "PUSHER_DELIVERY_RETENTION_DAYS": 0, "PUSHER_DEVICE_RETENTION_DAYS": 90, "PUSHER_PRUNE_INTERVAL_S": 0,
    }


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PUSHER_DELIVERY_RETENTION_DAYS", "-1", "from 0 (keep forever) to 36500; got '-1'"),
        ("PUSHER_DELIVERY_RETENTION_DAYS", "30d", "from 0 (keep forever) to 36500; got '30d'"),
        ("PUSHER_DEVICE_RETENTION_DAYS", "7.5", "from 0 (keep forever) to 36500; got '7.5'"),
        ("PUSHER_DEVICE_RETENTION_DAYS", "99999", "from 0 (keep forever) to 36500; got '99999'"),
        ("PUSHER_PRUNE_INTERVAL_S", "hourly", "from 0 (the consumer never prunes) to 31536000; got 'hourly'"),
    ],
)
def test_a_malformed_retention_setting_stops_the_boot_in_one_line(
    tmp_path: Path, _no_dotenv, name: str, value: str, message: str
) -> None:
    result = manage(production_env(tmp_path, **{name: value}), "check")

    assert result.returncode == 2
    assert result.stderr == f"pusher: {name} must be a whole number {message}\n"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PUSHER_PUSH_DEADLINE_S", "nan", "a number of at least 1; got 'nan'"),
        ("PUSHER_REGEX_TIMEOUT_S", "inf", "a number of at least 0.001; got 'inf'"),
        ("PUSHER_REGEX_TIMEOUT_S", "0", "a number of at least 0.001; got '0'"),
        ("PUSHER_RECONCILE_INTERVAL_S", "-1", "a number of at least 0; got '-1'"),
        ("PUSHER_WORKERS", "many", "a whole number of at least 1; got 'many'"),
        ("PUSHER_PREFETCH", "1e3", "a whole number of at least 1; got '1e3'"),
        ("PUSHER_MAX_MESSAGE_BYTES", "10", "a whole number of at least 1024; got '10'"),
        ("PUSHER_APNS_JWT_MAX_AGE_S", "3000.5", "a whole number of at least 60; got '3000.5'"),
        ("DB_CONN_MAX_AGE", "forever", "a whole number of at least 0; got 'forever'"),
    ],
)
def test_a_malformed_number_stops_the_boot_in_one_line(
    tmp_path: Path, _no_dotenv, name: str, value: str, message: str
) -> None:
    """Not a traceback (django-environ's int("many")), and not NaN or infinity taken as a number."""
    result = manage(production_env(tmp_path, **{name: value}), "check")

    assert result.returncode == 2
    assert result.stderr == f"pusher: {name} must be {message}\n"


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


# --- Every variable read is in the README's configuration table ------------------------------------------

# Not product code: their own harnesses, with their own environments.
_NOT_PRODUCT = {"tests", "bench", "soak", "data", "docs", "templates", "migrations"}
# Read by Django itself (createsuperuser --noinput), documented with the ones bin/superuser reads.
_READ_BY_DJANGO = {"DJANGO_SUPERUSER_EMAIL"}


def _env_name(node: ast.AST) -> str | None:
    """NAME when `node` reads the environment variable NAME: env.str("NAME", ...), env("NAME"),
    _required_secret("NAME", ...), os.environ.get("NAME"), os.getenv("NAME"), os.environ["NAME"]."""
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value) == "os.environ":
        key = node.slice
    elif isinstance(node, ast.Call) and node.args:
        func = ast.unparse(node.func)
        reads = func in ("env", "_required_secret", "os.getenv", "os.environ.get", "os.environ.pop")
        if not reads and not (isinstance(node.func, ast.Attribute) and ast.unparse(node.func.value) == "env"):
            return None
        key = node.args[0]
    else:
        return None
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None


def variables_read() -> dict[str, set[str]]:
    """Every environment variable the product reads -> the files reading it: Python modules outside
    the tests and harnesses (settings.py first of all), and the bin/ scripts' ${NAME:-default}."""
    found: dict[str, set[str]] = {}
    for directory, subdirectories, files in os.walk(BASE_DIR):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and d not in _NOT_PRODUCT]
        for file in files:
            if file.endswith(".py"):
                path = Path(directory, file)
                for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                    if name := _env_name(node):
                        found.setdefault(name, set()).add(str(path.relative_to(BASE_DIR)))
    for script in sorted((BASE_DIR / "bin").iterdir()):
        for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*):-", script.read_text()):
            found.setdefault(name, set()).add(f"bin/{script.name}")
    return found


def readme_configuration_table() -> dict[str, list[str]]:
    """`NAME` -> [meaning, default] for every name in the first column of the README's
    configuration table."""
    readme = (BASE_DIR / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith(("| variable", "|---")):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0]):
            rows[name] = cells[1:]
    return rows


def test_every_environment_variable_read_is_in_the_readme_table() -> None:
    read = variables_read()
    documented = readme_configuration_table()

    # The parser still finds what settings.py reads (a parser finding nothing would pass below).
    in_settings = {name for name, files in read.items() if "pusher_site/settings.py" in files}
    assert {"DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DATABASE_URL", "PUSHER_TRUST_X_FORWARDED_PROTO",
            "SECURE_SSL_REDIRECT", "LOG_LEVEL"} <= in_settings
    assert {"HOST", "PORT", "PUSHER_PYTHON", "DJANGO_SUPERUSER_USERNAME"} <= read.keys()
    missing = {name: sorted(files) for name, files in read.items() if name not in documented}
    assert not missing, f"read but not in the README's configuration table: {missing}"
    for name, cells in documented.items():
        assert len(cells) == 2 and all(cells), f"README row of {name}: needs a meaning and a default"
    stale = documented.keys() - read.keys() - _READ_BY_DJANGO
    assert not stale, f"in the README's configuration table but read nowhere: {sorted(stale)}"
