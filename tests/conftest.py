"""Shared fixtures. The fakes (APNs, FCM, Crossbar) speak the real protocols and are started here."""

import gc
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fakes.conftest_apns",
    "tests.fakes.conftest_fcm",
    "tests.fakes.conftest_crossbar",
]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None,
                                 request: pytest.FixtureRequest) -> None:
    """A test database of the session's own: pytest-django calls it `test_<NAME>` on PostgreSQL
    (and settings put SQLite's in data/test/test.sqlite3), so two runs at once would share, flush
    and drop one database. The name gets a random suffix; pytest-django still drops it at the end.
    Not with --reuse-db, whose point is finding the same database again next time."""
    if request.config.getvalue("reuse_db"):
        return
    from django.conf import settings

    token = uuid.uuid4().hex[:8]
    for db in settings.DATABASES.values():
        name = db.get("TEST", {}).get("NAME")
        if db["ENGINE"] == "django.db.backends.sqlite3":
            if not name or name == ":memory:" or name.startswith("file:"):
                continue  # in memory: already the process's own
            path = Path(name)
            name = str(path.with_name(f"{path.stem}_{token}{path.suffix}"))
        else:
            name = f"{name or 'test_' + db['NAME']}_{token}"
        db.setdefault("TEST", {})["NAME"] = name


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_superuser("ops", "ops@example.com", "ops-password-123")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def staff_api(staff_user):
    """DRF's test client, authenticated as the superuser: the API face beside staff_client's admin."""
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(staff_user)
    return api


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


@pytest.fixture(autouse=True)
def _no_frozen_objects_left() -> Iterator[None]:
    """`runconsumer` freezes the objects alive when it starts consuming (`gc_settle`); run in this
    process by `call_command`, that would freeze the test session's own, for every later test."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


# --- RabbitMQ: a vhost of the session's own ----------------------------------------------------------


@pytest.fixture(scope="session")
def amqp_vhost() -> Iterator[str]:
    """The session's private RabbitMQ vhost `pusher_test_<random>`; its AMQP URL.

    Kazoo's `registrar`/`pushes` exchanges are shared by every queue on a vhost: on "/" two test
    runs at once (or a run and a benchmark) would each get the other's messages. Every AMQP user of
    the session points here: tests.amqp (the test consumer and publisher), settings.AMQP_URL and
    the AMQP_URL of processes started from the tests. Deleted at the end, with all it holds.
    Never falls back to "/": when the vhost cannot be made, the tests that need it fail."""
    from django.conf import settings

    from tests import amqp
    from tests.vhost import VhostError, vhost_create, vhost_delete

    try:
        name, url = vhost_create("pusher_test")
    except VhostError as exc:
        error = str(exc)
    else:
        error = ""
    if error:
        pytest.fail(f"cannot make the test session's private RabbitMQ vhost: {error}", pytrace=False)
    saved = amqp.AMQP_URL, settings.AMQP_URL, os.environ.get("AMQP_URL")
    amqp.AMQP_URL = settings.AMQP_URL = os.environ["AMQP_URL"] = url
    try:
        yield url
    finally:
        amqp.AMQP_URL, settings.AMQP_URL, environ = saved
        if environ is None:
            os.environ.pop("AMQP_URL", None)
        else:
            os.environ["AMQP_URL"] = environ
        vhost_delete(name)


@pytest.fixture(autouse=True)
def _rabbitmq_when_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked `rabbitmq` get the session's vhost; in the others tests.amqp's helpers refuse
    to reach the broker, so the mark says which tests use it."""
    if request.node.get_closest_marker("rabbitmq"):
        request.getfixturevalue("amqp_vhost")
        yield
        return
    amqp = sys.modules.get("tests.amqp")  # not loaded: nothing to refuse (and pure tests stay light)
    saved = amqp.AMQP_URL if amqp else ""
    if amqp:
        amqp.AMQP_URL = ""
    yield
    if amqp:
        amqp.AMQP_URL = saved


# --- the registration side: Kazoo's legacy User-Agent rule and the Kamailio sample's device -----------


@pytest.fixture
def acme_rule(db):
    """Kazoo's documented legacy mapping (system_config/pusher User-Agents) for the AcmePhone samples."""
    from registry.models import UserAgentRule

    return UserAgentRule.objects.create(
        name="AcmePhone", position=10, regex="^AcmePhone",
        properties={"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"},
    )


@pytest.fixture
def registered_device(acme_rule):
    """The device of the Kamailio reg_success sample, registered through the service."""
    from registry.services import registration_apply
    from tests.fixtures import sample

    return registration_apply(fields=sample("reg_success_kamailio_master.json")["body"]).device


# --- push apps pointed at the fakes (the push path, the API, reliability) ----------------------------


@pytest.fixture
def apns_trusting_fake(fake_apns, settings):
    """The fake APNs, with the process's APNs client trusting its test CA; afterwards the client is
    configured back from the settings, as push.apps configures it at startup."""
    from push.providers import apns

    apns.configure(ca_file=fake_apns.ca_file, jwt_max_age=settings.PUSHER_APNS_JWT_MAX_AGE_S)
    yield fake_apns
    apns.configure(ca_file=settings.PUSHER_APNS_CA_FILE, jwt_max_age=settings.PUSHER_APNS_JWT_MAX_AGE_S)


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
