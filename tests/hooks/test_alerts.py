"""Alerts are raised once, not on every check: a consumer outage (from the heartbeats) once per
outage, a credential's expiry once per threshold (with an e-mail), an unusable credential once
until it is fixed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from hooks import services
from hooks.models import Alert, WebhookDelivery
from kazoo.alerting import consumer_outage_check
from kazoo.models import ConsumerStatus
from push import services as push_services
from push.models import Credential, CredentialKind, Provider, PushApp
from push.services.alerts import credential_alerts_check
from tests.certs import make_apns_certificate

pytestmark = pytest.mark.django_db

EVENTS = ["consumer.down", "consumer.up", "credential.expiring", "credential.unusable"]


@pytest.fixture
def subscription():
    return services.webhook_subscription_create(name="ops", url="http://127.0.0.1:9/in", secret="x" * 20,
                                                event_types=EVENTS)


def events() -> list[str]:
    return list(WebhookDelivery.objects.order_by("pk").values_list("event_type", flat=True))


# --- Consumers ---------------------------------------------------------------------------------------


def heartbeat(name: str = "host:1", *, connected: bool = True, ago_s: float = 0, connected_ago_s: float | None = None):
    now = timezone.now()
    last_connected = now - timedelta(seconds=ago_s if connected_ago_s is None else connected_ago_s)
    ConsumerStatus.objects.update_or_create(name=name, defaults={
        "connected": connected, "started_at": now - timedelta(hours=1), "updated_at": now - timedelta(seconds=ago_s),
        "last_connected_at": last_connected,
    })


def test_a_consumer_outage_is_raised_once_and_its_end_once(subscription, settings) -> None:
    settings.PUSHER_CONSUMER_DOWN_AFTER_S = 60
    heartbeat(ago_s=3)
    consumer_outage_check()
    assert events() == []

    heartbeat(ago_s=90)  # the process died: its heartbeat stopped 90 s ago
    for _ in range(3):
        consumer_outage_check()
    assert events() == ["consumer.down"]
    down = WebhookDelivery.objects.get()
    assert down.payload["consumers"][0]["name"] == "host:1" and down.payload["last_connected_at"]

    heartbeat("host:2", ago_s=1)  # another one connects
    for _ in range(3):
        consumer_outage_check()
    assert events() == ["consumer.down", "consumer.up"]

    ConsumerStatus.objects.filter(name="host:2").delete()  # and is gone too: a new outage
    consumer_outage_check()
    assert events() == ["consumer.down", "consumer.up", "consumer.down"]


def test_a_consumer_that_lost_the_broker_tells_of_its_own_outage(subscription, settings) -> None:
    settings.PUSHER_CONSUMER_DOWN_AFTER_S = 60
    # Alive (a fresh heartbeat), not consuming since 2 minutes.
    heartbeat(connected=False, ago_s=2, connected_ago_s=120)

    consumer_outage_check()
    consumer_outage_check()

    assert events() == ["consumer.down"]
    assert Alert.objects.get(key="consumer.down").active


def test_a_short_gap_is_no_outage(subscription, settings) -> None:
    settings.PUSHER_CONSUMER_DOWN_AFTER_S = 60
    heartbeat(connected=False, ago_s=1, connected_ago_s=30)  # a restart, a reconnect

    consumer_outage_check()

    assert events() == []


def test_no_consumer_ever_is_no_outage(subscription) -> None:
    consumer_outage_check()
    assert events() == [] and not Alert.objects.exists()


# --- Credentials ----------------------------------------------------------------------------------------


def expiring(days: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days, hours=1)).replace(microsecond=0)


def certificate(days: int, name: str = "voip cert") -> Credential:
    cert, key = make_apns_certificate("com.acme.phone", voip=True, not_after=expiring(days))
    credential = push_services.credential_save(
        name=name, parsed=push_services.credential_parse(kind=CredentialKind.APNS_CERTIFICATE, data=cert + key))
    PushApp.objects.create(app_id="com.acme.phone.voip.prod", provider=Provider.APPLE, credential=credential)
    return credential


def test_a_credential_expiry_is_told_once_per_threshold_with_an_e_mail(subscription, settings) -> None:
    settings.PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS = [30, 7, 1]
    certificate(days=20)
    now = timezone.now()

    for _ in range(3):
        credential_alerts_check(now=now)

    assert events() == ["credential.expiring"]
    data = WebhookDelivery.objects.get().payload
    assert data["threshold_days"] == 30 and data["credential"]["name"] == "voip cert"
    assert data["apps"] == ["com.acme.phone.voip.prod (apple)"]
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com"]
    assert "voip cert" in message.subject and "expires on" in message.subject
    assert "com.acme.phone.voip.prod" in message.body
    assert "PRIVATE KEY" not in message.body

    # Two weeks later the next threshold passes: told once more.
    for _ in range(2):
        credential_alerts_check(now=now + timedelta(days=14))
    assert events() == ["credential.expiring", "credential.expiring"]
    assert WebhookDelivery.objects.order_by("pk").last().payload["threshold_days"] == 7
    assert len(mail.outbox) == 2


def test_a_credential_first_seen_past_several_thresholds_is_told_once(subscription, settings) -> None:
    settings.PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS = [30, 7, 1]
    certificate(days=5)

    credential_alerts_check()
    credential_alerts_check()

    assert events() == ["credential.expiring"]
    assert WebhookDelivery.objects.get().payload["threshold_days"] == 7
    assert len(mail.outbox) == 1


def test_a_renewed_credential_is_watched_afresh(subscription, settings) -> None:
    settings.PUSHER_CREDENTIAL_EXPIRY_ALERT_DAYS = [30]
    credential = certificate(days=20)
    credential_alerts_check()
    cert, key = make_apns_certificate("com.acme.phone", voip=True, not_after=expiring(25))  # renewed, soon again
    push_services.credential_update(credential=credential, kind=CredentialKind.APNS_CERTIFICATE, data=cert + key)

    credential_alerts_check()

    assert events() == ["credential.expiring", "credential.expiring"]


def test_an_unusable_credential_is_told_once_until_fixed(subscription, caplog) -> None:
    credential = certificate(days=365)
    Credential.objects.filter(pk=credential.pk).update(usable=False, unusable_reason="revoked by Apple")

    with caplog.at_level(logging.WARNING):
        credential_alerts_check()
        credential_alerts_check()
    assert events() == ["credential.unusable"]
    assert WebhookDelivery.objects.get().payload["reason"] == "revoked by Apple"
    assert len(mail.outbox) == 1 and "cannot send" in mail.outbox[0].subject
    assert [r.getMessage() for r in caplog.records if "alert raised" in r.getMessage()] == [
        "alert raised: credential 'voip cert' cannot send: revoked by Apple"]

    Credential.objects.filter(pk=credential.pk).update(usable=True, unusable_reason="")
    credential_alerts_check()
    Credential.objects.filter(pk=credential.pk).update(usable=False, unusable_reason="revoked again")
    credential_alerts_check()

    assert events() == ["credential.unusable", "credential.unusable"]


def test_a_credential_no_enabled_app_uses_is_not_watched(subscription) -> None:
    credential = certificate(days=3)
    PushApp.objects.filter(credential=credential).update(enabled=False)

    credential_alerts_check()

    assert events() == [] and not mail.outbox


class RefusingBackend:
    """A mail server that is down."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError(111, "Connection refused")


def test_an_alert_e_mail_that_fails_is_sent_on_a_later_check(subscription, settings, caplog) -> None:
    settings.EMAIL_BACKEND = "tests.hooks.test_alerts.RefusingBackend"
    certificate(days=3)

    credential_alerts_check()

    alert = Alert.objects.get(email_wanted=True)  # (the 30-day threshold passed with it, quietly)
    assert alert.emailed_at is None and alert.email_attempts == 1 and "Connection refused" in alert.email_error
    assert "alert e-mail" in caplog.text and "not sent" in caplog.text

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    credential_alerts_check()  # the alert is up already: nothing new is raised...
    assert not mail.outbox
    assert services.alert_emails_send() == 1  # ...and the e-mail left behind goes on the next round
    alert.refresh_from_db()
    assert alert.emailed_at is not None and alert.email_error == "" and len(mail.outbox) == 1
    assert services.alert_emails_send() == 0


def test_no_addresses_no_e_mail(subscription, settings) -> None:
    settings.PUSHER_ALERT_EMAILS = []
    certificate(days=3)

    credential_alerts_check()

    assert events() == ["credential.expiring"] and not mail.outbox
