"""Shared fixtures. The fakes (APNs, FCM, Crossbar) speak the real protocols and are started here."""

import json
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


# --- push apps pointed at the fakes (the push path, the API, reliability) ----------------------------


@pytest.fixture
def apns_trusting_fake(fake_apns):
    """The fake APNs, with the process's APNs client trusting its test CA (restored afterwards)."""
    from push.providers import apns

    apns.configure(ca_file=fake_apns.ca_file)
    yield fake_apns
    apns.configure(ca_file=None)


@pytest.fixture
def apple_app(apns_trusting_fake):
    """com.acme.phone.voip.prod (the Kamailio sample's Token-App), a VoIP certificate the fake trusts."""
    from push import services
    from push.models import Provider, PushApp

    fake = apns_trusting_fake
    cert = fake.ca.issue_client_cert("com.acme.phone", voip=True, topics=["com.acme.phone", "com.acme.phone.voip"])
    credential = services.credential_save(
        name="acme voip", parsed=services.credential_parse(kind="apns_certificate", data=cert.pem)
    )
    return PushApp.objects.create(
        app_id="com.acme.phone.voip.prod", provider=Provider.APPLE, credential=credential,
        host=fake.host, port=fake.port, priority=10, push_type="voip",
    )


@pytest.fixture
def firebase_app(settings, fake_fcm):
    """com.acme.phone on FCM, with a service account the fake FCM issues tokens to."""
    from push import services
    from push.models import Provider, PushApp

    settings.PUSHER_FCM_ENDPOINT = fake_fcm.endpoint
    info = fake_fcm.service_account("acme-phone")
    credential = services.credential_save(
        name="acme fcm", parsed=services.credential_parse(kind="fcm_service_account", data=json.dumps(info))
    )
    return PushApp.objects.create(app_id="com.acme.phone", provider=Provider.FIREBASE, credential=credential)
