"""The webhook and alert settings: read from the environment, a bad value stops the boot in one line,
Django's mail settings from EMAIL_URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_settings import _no_dotenv, manage, production_env, settings_values  # noqa: F401 - _no_dotenv: a fixture

pytestmark = pytest.mark.usefixtures("_no_dotenv")

MAIL = ("EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_USE_TLS", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD",
        "EMAIL_TIMEOUT", "DEFAULT_FROM_EMAIL")


def test_defaults_and_values(tmp_path: Path) -> None:
    names = ("PUSHER_WEBHOOK_INTERVAL_S", "PUSHER_WEBHOOK_MAX_ATTEMPTS", "PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS",
             "PUSHER_ALERT_EMAILS", "PUSHER_CONSUMER_DOWN_AFTER_S")
    assert settings_values(production_env(tmp_path), *names) == {
        "PUSHER_WEBHOOK_INTERVAL_S": 5.0, "PUSHER_WEBHOOK_MAX_ATTEMPTS": 12,
        "PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS": [30, 7, 1], "PUSHER_ALERT_EMAILS": [],
        "PUSHER_CONSUMER_DOWN_AFTER_S": 60.0,
    }
    env = production_env(tmp_path, PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS="14, 60,3",
                         PUSHER_ALERT_EMAILS="a@x.example,b@y.example")
    assert settings_values(env, "PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS", "PUSHER_ALERT_EMAILS") == {
        "PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS": [60, 14, 3], "PUSHER_ALERT_EMAILS": ["a@x.example", "b@y.example"],
    }


def test_mail_settings_come_from_email_url(tmp_path: Path) -> None:
    env = production_env(tmp_path, EMAIL_URL="smtp+tls://alerts:pa55@mail.example.com:587",
                         DEFAULT_FROM_EMAIL="pusher@example.com")
    assert settings_values(env, *MAIL) == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "mail.example.com",
        "EMAIL_PORT": 587, "EMAIL_USE_TLS": True, "EMAIL_HOST_USER": "alerts", "EMAIL_HOST_PASSWORD": "pa55",
        "EMAIL_TIMEOUT": 10, "DEFAULT_FROM_EMAIL": "pusher@example.com",
    }
    development = settings_values(production_env(tmp_path, DEBUG="1"), "EMAIL_BACKEND")
    assert development == {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}


@pytest.mark.parametrize(("name", "value", "message"), [
    ("PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS", "30,soon",
     "PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS must be comma-separated whole numbers of days, each at least 1"),
    ("PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS", "0", "PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS must be comma-separated"),
    ("PUSHER_WEBHOOK_MAX_ATTEMPTS", "0", "PUSHER_WEBHOOK_MAX_ATTEMPTS must be a whole number of at least 1; got '0'"),
    ("PUSHER_WEBHOOK_MAX_ATTEMPTS", "3.5", "PUSHER_WEBHOOK_MAX_ATTEMPTS must be a whole number of at least 1"),
    ("PUSHER_WEBHOOK_TIMEOUT_S", "nan", "PUSHER_WEBHOOK_TIMEOUT_S must be a number of at least 0.1; got 'nan'"),
    ("PUSHER_WEBHOOK_RETRY_S", "soon", "PUSHER_WEBHOOK_RETRY_S must be a number of at least 0; got 'soon'"),
    ("PUSHER_CONSUMER_DOWN_AFTER_S", "5", "PUSHER_CONSUMER_DOWN_AFTER_S must be a number of at least 15; got '5'"),
])
def test_a_bad_value_stops_the_boot_in_one_line(tmp_path: Path, name: str, value: str,
                                                message: str) -> None:
    result = manage(production_env(tmp_path, **{name: value}), "check")

    assert result.returncode == 2
    assert result.stderr.startswith(f"pusher: {message}") and result.stderr.count("\n") == 1
