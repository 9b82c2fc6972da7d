"""What APNs receives for apps imported from Kazoo (their push type, topic and configured headers),
through the fake APNs."""

from __future__ import annotations

from typing import Any

import pytest

from kazoo.config import kazoo_config_export, kazoo_config_import
from push import services
from push.models import DeliveryStatus, Provider, PushApp
from push.providers import apns
from push.services import clients
from push.services.clients import apns_request_build
from registry.models import PushToken, UserAgentRule
from registry.services import registration_apply
from tests.amqp import broker_channel, consumer_running
from tests.fakes.apns import FakeApns
from tests.fixtures import sample
from tests.push.pushreq import TOKEN, publish_push, push_req

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


# --- Part 2: sandbox (development build) tokens go to Apple's development host ----------------------

SANDBOX_RULE = {"Token-ID": "pn-prid", "Token-Type": "pn-provider", "Token-App": "pn-param"}
LINPHONE_UA = "LinphoneiOS/5.2.3 (iPhone de Alice) LinphoneSDK/5.3.30 (tags/5.3.30)"


def rfc8599_registration(provider: str) -> dict[str, Any]:
    """The Kamailio reg_success sample, from a Linphone registering its VoIP token RFC 8599's way."""
    body = sample("reg_success_kamailio_master.json")["body"]
    body["User-Agent"] = LINPHONE_UA
    body["Contact"] = (
        f"<sip:user_k3j4h5@192.0.2.44:52311;transport=tls;pn-provider={provider};pn-prid={TOKEN}:voip;"
        "pn-param=ABCD1234.com.acme.phone.voip>;+sip.instance=\"<urn:uuid:0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b>\""
    )
    return body


@pytest.mark.parametrize(
    "app_host, fields, host",
    [
        # Apple's production host: a sandbox token goes to the development host.
        (apns.PRODUCTION_HOST, {"Token-Type": "apple", "Token-App": "com.acme.phone"}, apns.PRODUCTION_HOST),
        (apns.PRODUCTION_HOST, {"Token-Type": "apns.dev", "Token-App": "com.acme.phone"}, apns.SANDBOX_HOST),
        (apns.PRODUCTION_HOST, {"Token-Type": "APNS.dev", "Token-App": "com.acme.phone"}, apns.SANDBOX_HOST),
        (apns.PRODUCTION_HOST, {"Token-Type": "apple", "Token-App": "com.acme.phone.voip.dev"}, apns.SANDBOX_HOST),
        (apns.PRODUCTION_HOST, {"Token-Type": "apple", "Token-App": "com.acme.phone.voip.prod"}, apns.PRODUCTION_HOST),
        # Any other host was configured on purpose and stays.
        (apns.SANDBOX_HOST, {"Token-Type": "apns.dev", "Token-App": "com.acme.phone"}, apns.SANDBOX_HOST),
        ("api.development.push.apple.com", {"Token-Type": "apple", "Token-App": "com.acme.phone.voip.dev"},
         "api.development.push.apple.com"),
        ("apns-relay.example.net", {"Token-Type": "apns.dev", "Token-App": "com.acme.phone"}, "apns-relay.example.net"),
    ],
)
def test_sandbox_host_of_a_push(app_host, fields, host):
    """The request the client would send (no network): its host, on the app's port."""
    app = PushApp(app_id=fields["Token-App"], provider=Provider.APPLE, host=app_host, port=2197)
    request = apns_request_build(app=app, fields={**push_req(), **fields}, token=TOKEN, push_type=None)
    assert (request.host, request.port) == (host, 2197)


@pytest.fixture
def sandbox_fake(apns_trusting_fake, monkeypatch):
    """A second fake APNs, on ::1 and the first one's port, with its CA, standing for Apple's
    development host: the client sends sandbox tokens of apps on the first fake's host there."""
    fake = apns_trusting_fake
    sandbox = FakeApns.start(host="::1", port=fake.port, ca=fake.ca)
    monkeypatch.setattr(clients, "APNS_SANDBOX_OF", {fake.host: "::1"})
    yield sandbox
    sandbox.stop()


def sent(fake: Any, **changes: Any) -> Any:
    """Send one push_req; the one request `fake` received."""
    delivery = services.push_request_handle(fields=push_req(**changes), source="api")
    assert delivery.status == DeliveryStatus.SENT, delivery.error
    (request,) = fake.requests
    fake.reset()
    return request


def test_an_apns_dev_push_req_goes_to_the_sandbox_host_with_the_same_credential(
    apple_app, apns_trusting_fake, sandbox_fake
):
    port = apple_app.port  # com.acme.phone.voip.prod, on the first fake's host and port

    request = sent(sandbox_fake, **{"Token-Type": "apns.dev", "Msg-ID": "sandbox"})
    assert request.authority == f"[::1]:{port}" and request.path == f"/3/device/{TOKEN}"
    assert request.headers["apns-topic"] == "com.acme.phone.voip" and request.auth == "certificate"

    production = sent(apns_trusting_fake, **{"Msg-ID": "production"})
    assert production.authority == f"127.0.0.1:{port}"
    assert production.cert_subject == request.cert_subject  # one credential, both hosts
    assert sandbox_fake.requests == []


def test_an_app_on_a_host_of_its_own_keeps_it_for_sandbox_tokens(apple_app, apns_trusting_fake, sandbox_fake):
    services.push_app_update(app=apple_app, host="localhost")  # a relay, say: not Apple's production host

    request = sent(apns_trusting_fake, **{"Token-Type": "apns.dev"})
    assert request.authority == f"localhost:{apple_app.port}"
    assert sandbox_fake.requests == []


@pytest.fixture
def rfc8599_app(apns_trusting_fake):
    """com.acme.phone (the bundle RFC 8599's pn-param names) on the first fake, and Linphone's rule."""
    fake = apns_trusting_fake
    services.push_app_add(app_id="com.acme.phone", provider=Provider.APPLE, kind="apns_certificate",
                          data=fake.ca.issue_client_cert("com.acme.phone").pem, host=fake.host, port=fake.port)
    UserAgentRule.objects.create(name="Linphone", position=10, regex="^Linphone", properties=SANDBOX_RULE)


def test_a_token_registered_with_apns_dev_goes_to_the_sandbox_host(rfc8599_app, apns_trusting_fake, sandbox_fake):
    registration_apply(fields=rfc8599_registration("apns.dev"))
    token = PushToken.objects.get(token=TOKEN)
    assert token.sandbox and token.app == "com.acme.phone" and token.token_type == "apple"

    # The push object Kazoo keeps, hence Kamailio's push_req, says `apple`: pusher knows the token.
    request = sent(sandbox_fake, **{"Token-App": "com.acme.phone"})
    assert request.authority == f"[::1]:{apns_trusting_fake.port}"
    assert request.headers["apns-topic"] == "com.acme.phone.voip"
    # Another token of the same app is a production one.
    other = sent(apns_trusting_fake, **{"Token-App": "com.acme.phone", "Token-ID": "ab" * 32, "Msg-ID": "other"})
    assert other.authority == f"127.0.0.1:{apns_trusting_fake.port}"


@pytest.mark.rabbitmq
def test_the_consumer_sends_a_registered_sandbox_token_to_the_sandbox_host(
    rfc8599_app, apns_trusting_fake, sandbox_fake
):
    registration_apply(fields=rfc8599_registration("apns.dev"))
    with consumer_running() as consumer, broker_channel() as channel:
        publish_push(channel, push_req(**{"Token-App": "com.acme.phone"}))
        consumer.wait_handled(1)
    (request,) = sandbox_fake.requests
    assert request.authority == f"[::1]:{apns_trusting_fake.port}" and request.path == f"/3/device/{TOKEN}"
    assert apns_trusting_fake.requests == []


def test_a_token_registered_with_apns_goes_to_production(rfc8599_app, apns_trusting_fake, sandbox_fake):
    registration_apply(fields=rfc8599_registration("apns"))
    assert not PushToken.objects.get(token=TOKEN).sandbox
    request = sent(apns_trusting_fake, **{"Token-App": "com.acme.phone"})
    assert request.authority == f"127.0.0.1:{apns_trusting_fake.port}"
    assert sandbox_fake.requests == []
