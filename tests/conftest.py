"""Shared fixtures. The fakes (APNs, FCM, Crossbar) speak the real protocols and are started here."""

import sys

import pytest

pytest_plugins = [
    "tests.fakes.conftest_apns",
    "tests.fakes.conftest_fcm",
    "tests.fakes.conftest_crossbar",
]


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_superuser("ops", "ops@example.com", "ops-password-123")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Rule and app caches are per process; a test must see the rows it just wrote. (Only when
    those modules are loaded, so pure tests stay free of Django.)"""

    def clear() -> None:
        if "push.services" in sys.modules:
            sys.modules["push.services"].push_app_cache_clear()
        if "registry.selectors" in sys.modules:
            sys.modules["registry.selectors"].rules_cache_clear()

    clear()
    yield
    clear()
