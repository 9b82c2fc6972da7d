"""Fixtures shared by the reliability tests: User-Agent rules that send every reg_success down the
whole registration path, and push apps pointed at the fake APNs and the fake FCM."""

from __future__ import annotations

import json

import pytest

from push import services
from push.models import Provider, PushApp
from push.providers import apns
from registry.models import UserAgentRule
from tests.reliability.strategies import APPLE_APP_ID, FIREBASE_APP_ID


@pytest.fixture
def rules(db):
    """Linphone's RFC 8599 parameters first, then Kazoo's legacy ones for any other User-Agent."""
    UserAgentRule.objects.create(
        name="Linphone", position=10, regex="Linphone",
        properties={"Token-ID": "pn-prid", "Token-Type": "pn-provider", "Token-App": "pn-param"},
    )
    UserAgentRule.objects.create(
        name="Anything", position=20, regex=".",
        properties={"Token-ID": "pn-tok", "Token-Type": "pn-type", "Token-App": "app-id",
                    "Token-Call-ID": "Call-ID", "Token-Node": "Node"},
    )


@pytest.fixture
def apns_trusting_fake(fake_apns):
    apns.configure(ca_file=fake_apns.ca_file)
    yield fake_apns
    apns.configure(ca_file=None)


@pytest.fixture
def apple_app(apns_trusting_fake):
    fake = apns_trusting_fake
    cert = fake.ca.issue_client_cert("com.acme.phone", voip=True, topics=["com.acme.phone", "com.acme.phone.voip"])
    credential = services.credential_save(
        name="acme voip", parsed=services.credential_parse(kind="apns_certificate", data=cert.pem)
    )
    return PushApp.objects.create(
        app_id=APPLE_APP_ID, provider=Provider.APPLE, credential=credential,
        host=fake.host, port=fake.port, priority=10, push_type="voip",
    )


@pytest.fixture
def firebase_app(settings, fake_fcm):
    settings.PUSHER_FCM_ENDPOINT = fake_fcm.endpoint
    info = fake_fcm.service_account("acme-phone")
    credential = services.credential_save(
        name="acme fcm", parsed=services.credential_parse(kind="fcm_service_account", data=json.dumps(info))
    )
    return PushApp.objects.create(app_id=FIREBASE_APP_ID, provider=Provider.FIREBASE, credential=credential)
