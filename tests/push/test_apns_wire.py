"""What APNs receives for apps imported from Kazoo (their push type, topic and configured headers),
through the fake APNs."""

from __future__ import annotations

from typing import Any

import pytest

from kazoo.config import kazoo_config_export, kazoo_config_import
from push import services
from push.models import DeliveryStatus, PushApp
from tests.push.pushreq import TOKEN, push_req

pytestmark = pytest.mark.django_db(transaction=True)

ALERT_ONLY = "com.acme.alertonly"
NOTE = f"{ALERT_ONLY}: no .voip topic and no apns-push-type header: alert pushes as Kazoo sent them"


def kazoo_import(fake: Any, sections: dict[str, dict[str, Any]]) -> Any:
    """Kazoo's system_config/pusher with these `<app-id>.apple` sections, each with a certificate
    for its bundle (the app id minus .dev/.prod/.voip) and the fake as its host."""
    document: dict[str, Any] = {}
    for app_id, apple in sections.items():
        bundle = app_id.removesuffix(".prod").removesuffix(".dev").removesuffix(".voip")
        cert = fake.ca.issue_client_cert(bundle)
        document[app_id] = {"apple": {"certificate": cert.pem, "host": fake.host, "port": fake.port, **apple}}
    return kazoo_config_import(document=document)


def pushed(fake: Any, app_id: str, **changes: Any) -> tuple[Any, Any]:
    """Send one push_req for `app_id`; the delivery and the request the fake received."""
    delivery = services.push_request_handle(fields=push_req(**{"Token-App": app_id, **changes}), source="api")
    assert delivery.status == DeliveryStatus.SENT, delivery.error
    (request,) = fake.requests
    fake.reset()
    return delivery, request


# --- Part 1: the push type and topic Kazoo sent, unless the app says otherwise -----------------------


def test_kazoo_alert_only_app_pushes_alerts_on_its_own_topic_and_the_import_says_so(apns_trusting_fake):
    summary = kazoo_import(apns_trusting_fake, {ALERT_ONLY: {}})

    assert any(warning.startswith(NOTE) for warning in summary.warnings), summary.warnings
    assert any(line.startswith(f"warning: {NOTE}") for line in summary.lines())
    assert PushApp.objects.get(app_id=ALERT_ONLY).push_type == ""  # as Kazoo
    delivery, request = pushed(apns_trusting_fake, ALERT_ONLY)
    assert request.headers["apns-topic"] == ALERT_ONLY
    assert request.headers["apns-push-type"] == "alert"
    assert delivery.push_type == "alert"
    assert request.path == f"/3/device/{TOKEN}"


@pytest.mark.parametrize(
    "app_id, apple, topic, extra",
    [
        # Kazoo's VoIP convention: the app id names the .voip topic; no headers configured.
        ("com.acme.phone.voip.prod", {}, "com.acme.phone.voip", {}),
        # An apns_push_type header says voip: Apple's .voip topic rule applies; other configured
        # headers are sent as configured.
        ("com.acme.softphone", {"headers": {"apns_push_type": "voip", "apns_expiration": "1700000000"}},
         "com.acme.softphone.voip", {"apns-expiration": "1700000000"}),
    ],
)
def test_kazoo_voip_apps_push_voip(apns_trusting_fake, app_id, apple, topic, extra):
    summary = kazoo_import(apns_trusting_fake, {app_id: apple})

    assert not [warning for warning in summary.warnings if "alert pushes" in warning]
    delivery, request = pushed(apns_trusting_fake, app_id)
    assert request.headers["apns-topic"] == topic
    assert request.headers["apns-push-type"] == "voip" and delivery.push_type == "voip"
    for name, value in extra.items():
        assert request.headers[name] == value


def test_configured_headers_decide_as_kazoo(apns_trusting_fake):
    """An app with no push type of its own and an apns-push-type among its extra headers (set in
    the admin): that header decides, and goes out as configured."""
    kazoo_import(apns_trusting_fake, {ALERT_ONLY: {}})
    app = PushApp.objects.get(app_id=ALERT_ONLY)
    services.push_app_update(app=app, extra_headers={"apns_push_type": "background", "apns-priority": "5"})

    delivery, request = pushed(apns_trusting_fake, ALERT_ONLY)
    assert request.headers["apns-topic"] == ALERT_ONLY
    assert request.headers["apns-push-type"] == "background" and request.headers["apns-priority"] == "5"
    assert delivery.push_type == "background"


@pytest.mark.parametrize(
    "changes, topic, push_type",
    [
        ({"push_type": "voip"}, f"{ALERT_ONLY}.voip", "voip"),  # the app's push type: Apple's .voip rule
        ({"topic": f"{ALERT_ONLY}.voip"}, f"{ALERT_ONLY}.voip", "voip"),  # its own topic, type as Kazoo
        ({"push_type": "alert", "topic": f"{ALERT_ONLY}.voip"}, f"{ALERT_ONLY}.voip", "alert"),
    ],
)
def test_explicit_settings_on_the_app_win(apns_trusting_fake, changes, topic, push_type):
    kazoo_import(apns_trusting_fake, {ALERT_ONLY: {}})
    services.push_app_update(app=PushApp.objects.get(app_id=ALERT_ONLY), **changes)

    delivery, request = pushed(apns_trusting_fake, ALERT_ONLY)
    assert (request.headers["apns-topic"], request.headers["apns-push-type"]) == (topic, push_type)
    assert delivery.push_type == push_type


def test_a_missed_call_alert_still_goes_to_the_bundle_topic(apns_trusting_fake):
    kazoo_import(apns_trusting_fake, {"com.acme.phone.voip.prod": {}})
    delivery = services.push_request_handle(
        fields=push_req(), source="api", push_type="alert"
    )
    assert delivery.status == DeliveryStatus.SENT
    (request,) = apns_trusting_fake.requests
    assert (request.headers["apns-topic"], request.headers["apns-push-type"]) == ("com.acme.phone", "alert")


def test_a_blank_push_type_is_exported_without_apns_push_type_and_reimports_unchanged(apns_trusting_fake):
    kazoo_import(apns_trusting_fake, {ALERT_ONLY: {}, "com.acme.softphone": {"headers": {"apns_push_type": "voip"}}})

    exported = kazoo_config_export()

    assert "apns_push_type" not in exported[ALERT_ONLY]["apple"]["headers"]
    assert exported["com.acme.softphone"]["apple"]["headers"]["apns_push_type"] == "voip"
    again = kazoo_config_import(document=exported)
    assert (again.apps_created, again.apps_updated) == (0, 0)
    assert PushApp.objects.get(app_id=ALERT_ONLY).push_type == ""
