"""Issue 8, end to end with a real Kamailio: REGISTER -> token -> INVITE -> push -> wake -> call.

Real: Kamailio 5.6 + kazoo module (tests/e2e/kamailio/kamailio.cfg), RabbitMQ, pusher's consumer
and services, SIPp phones and media server over UDP on 127.0.0.1. Fake: only APNs and FCM (they
speak the real protocols). The loop is closed: the media server's X-KAZOO-PUSHER-* headers are
built from the push object pusher stored for the device after the phone's REGISTER, and the woken
phone presents the registration token it finds in the push the fake provider received.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request

import pytest

from push.models import DeliveryStatus
from registry.models import Device, UserAgentRule
from registry.reporter import acrobits_url_template
from registry.reporting import token_reporter_create
from tests.e2e.conftest import E2E, Call, Phone, account_id, apple_app, device_id, poll
from tests.e2e.harness import Sipp

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
APNS_TOKEN = "5e0f4c3a9b8d7e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
FCM_TOKEN = "dKx9Qm3ZRlO7pYc2wEo1aB:APA91bHq8v2Xz-4kLmN0pQrStUvWxYz_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
LINPHONE_VOIP = "9f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
LINPHONE_REMOTE = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"
CALLER_NUMBER, CALLER_NAME = "+15551234567", "John Doe"


@pytest.fixture
def linphone_rule(db) -> UserAgentRule:
    # RFC 8599 parameters, as Linphone sends them.
    return UserAgentRule.objects.create(
        name="Linphone", position=20, regex="^Linphone",
        properties={"Token-App": "pn-param", "Token-Type": "pn-provider", "Token-ID": "pn-prid"},
    )


def acme_ios() -> Phone:
    return Phone(
        user="user_1001", user_agent="AcmePhone iOS 3.2.1",
        contact_params=f";app-id=com.acme.phone.voip.prod;pn-type=apple;pn-tok={APNS_TOKEN}",
    )


def proxy_of(run: E2E) -> str:
    """The Proxy-Path Kamailio's reg_success carries, which pusher stores as Token-Proxy."""
    return f"sip:{run.kamailio.address};transport=udp"


def check_push_payload(payload: dict, call: Call, proxy: str) -> str:
    """The payload contract the apps rely on; returns the registration token."""
    assert payload["call-id"] == call.call_id
    assert payload["proxy"] == proxy
    assert payload["caller-id-number"] == CALLER_NUMBER and payload["caller-id-name"] == CALLER_NAME
    assert int(payload["utc_unix_timestamp_ms"]) > 0
    token = payload["registration-token"]
    assert UUID.match(token), token
    return token


def wait_fcm_send(fake_fcm, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sends = [r for r in fake_fcm.requests if r.path.endswith("messages:send")]
        if sends:
            assert len(sends) == 1, sends
            return sends[0]
        time.sleep(0.02)
    raise AssertionError(f"fake FCM received no send in {timeout}s")


def answered(run: E2E, call: Call, wake: Sipp, timings: dict, name: str, push_received_at: float) -> None:
    """Both SIPp agents completed: the phone got the INVITE and answered it, the media server got
    200 OK, ACKed and hung up. Records and prints the timings."""
    rc = wake.wait()
    assert rc == 0, f"phone did not take the call (rc {rc}):\n{wake.report()}\n{run.kamailio.log_tail()}"
    rc = call.media_server.wait()
    assert rc == 0, f"media server call failed (rc {rc}):\n{call.media_server.report()}\n{run.kamailio.log_tail()}"
    invite_sent = call.media_server.first("sent", "INVITE").at
    answer = call.media_server.first("received", "SIP/2.0 200").at
    wake_register = wake.first("sent", "REGISTER").at
    invite_at_phone = wake.first("received", "INVITE").at
    invite_at_kamailio = run.kamailio.invite_held_at(call.call_id)
    delivery = run.delivery(call)
    assert delivery.status == DeliveryStatus.SENT, (delivery.status, delivery.error)
    consumed = delivery.created_at.timestamp()  # when pusher's consumer took the push_req
    figures = {
        # The push's share of the ring delay: INVITE at Kamailio -> RabbitMQ -> pusher -> provider ...
        "invite_to_push_request_ms": round((push_received_at - invite_at_kamailio) * 1000, 1),
        # ... split: Kamailio holding the INVITE and publishing, RabbitMQ delivering ...
        "invite_to_pusher_ms": round((consumed - invite_at_kamailio) * 1000, 1),
        # ... and pusher itself (push_req in -> request at the provider, incl. a fresh TLS/h2 or OAuth2).
        "pusher_to_provider_ms": round((push_received_at - consumed) * 1000, 1),
        # Kamailio resuming the held INVITE when the woken phone registers with the token.
        "wake_register_to_invite_ms": round((invite_at_phone - wake_register) * 1000, 1),
        # The whole wake path as the caller sees it (includes the test starting the woken phone).
        "invite_to_200_ok_ms": round((answer - invite_sent) * 1000, 1),
    }
    timings[name] = figures
    print(f"\n[e2e timings] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    assert figures["invite_to_push_request_ms"] > 0 and figures["invite_to_200_ok_ms"] > 0


def test_apns_phone_registers_is_pushed_wakes_and_takes_the_call(
    e2e, pusher_consumer, apns_trusting_fake, acme_rule, timings
):
    apple_app(apns_trusting_fake, "com.acme.phone.voip.prod", "com.acme.phone")
    phone = acme_ios()

    e2e.register(phone)
    device = e2e.device(phone)
    assert device.device_id == device_id(phone.user, phone.realm)
    assert device.push == {
        "Token-App": "com.acme.phone.voip.prod", "Token-Type": "apple", "Token-ID": APNS_TOKEN,
        "Token-Proxy": proxy_of(e2e),
    }

    # Twice: the first push opens pusher's HTTP/2 connection to APNs, the second reuses it (the
    # steady state), so both ring delays are measured.
    for round_ in ("cold", "warm"):
        seen = len(apns_trusting_fake.requests)
        call = e2e.call(device, phone)
        request = apns_trusting_fake.wait_for_requests(seen + 1, timeout=15)[seen]
        assert request.path == f"/3/device/{APNS_TOKEN}"
        assert request.headers["apns-topic"] == "com.acme.phone.voip" and request.headers["apns-push-type"] == "voip"
        alert = {"loc-key": "IC_SIL", "loc-args": [f"{CALLER_NUMBER} - {CALLER_NAME}"]}
        assert request.body["aps"]["alert"] == alert
        assert request.body["aps"]["sound"] == "ring.caf" and request.body["aps"]["call-id"] == call.call_id
        token = check_push_payload(request.body, call, device.push["Token-Proxy"])

        wake = e2e.wake(phone, call, token, style="header")
        answered(e2e, call, wake, timings, f"apns_acmephone_{round_}", request.received_at)
    assert len(apns_trusting_fake.requests) == 2

    # The woken phone's REGISTERs published reg_success without CCVs (the token stands in for
    # auth): pusher handled them (1 REGISTER + 2 x (push_req + token REGISTER)) and, like Kazoo,
    # left the push object alone.
    pusher_consumer.wait_handled(5)
    assert poll(lambda: Device.objects.filter(pk=device.pk).values_list("push", flat=True).first(), 5) == device.push
    assert poll(lambda: Device.objects.count() or None, 5) == 1


def test_no_wake_within_the_push_window_fails_the_call_with_408(
    e2e, pusher_consumer, apns_trusting_fake, acme_rule, timings
):
    apple_app(apns_trusting_fake, "com.acme.phone.voip.prod", "com.acme.phone")
    phone = acme_ios()
    e2e.register(phone)
    device = e2e.device(phone)

    call = e2e.call(device, phone, scenario="media_server_no_wake.xml", push_timeout_ms=2000, timeout_s=15)
    (request,) = apns_trusting_fake.wait_for_requests(1, timeout=15)
    check_push_payload(request.body, call, device.push["Token-Proxy"])
    # The phone sleeps on: the held INVITE ends with Kamailio's 408 when the 2 s push window closes.
    rc = call.media_server.wait()
    assert rc == 0, f"media server did not get 408 (rc {rc}):\n{call.media_server.report()}\n{e2e.kamailio.log_tail()}"
    invite_sent = call.media_server.first("sent", "INVITE").at
    failure = call.media_server.first("received", "SIP/2.0 408")
    held_ms = round((failure.at - invite_sent) * 1000, 1)
    invite_at_kamailio = e2e.kamailio.invite_held_at(call.call_id)
    timings["no_wake_408"] = {
        "invite_to_push_request_ms": round((request.received_at - invite_at_kamailio) * 1000, 1),
        "invite_to_408_ms": held_ms,
    }
    print(f"\n[e2e timings] no_wake_408: push window 2000 ms, 408 after {held_ms} ms")
    assert 1500 <= held_ms <= 10000  # the 2 s window, not the default 20 s


def test_android_fcm_phone_registers_is_pushed_wakes_and_takes_the_call(
    e2e, pusher_consumer, firebase_app, fake_fcm, acme_rule, timings
):
    phone = Phone(
        user="user_2002", user_agent="AcmePhone Android 3.2.1",
        contact_params=f";app-id=com.acme.phone;pn-type=firebase;pn-tok={FCM_TOKEN}",
    )
    e2e.register(phone)
    device = e2e.device(phone)
    assert device.push == {
        "Token-App": "com.acme.phone", "Token-Type": "firebase", "Token-ID": FCM_TOKEN, "Token-Proxy": proxy_of(e2e),
    }

    call = e2e.call(device, phone)
    request = wait_fcm_send(fake_fcm, timeout=15)
    assert request.path == "/v1/projects/acme-phone/messages:send"
    message = request.body["message"]
    assert message["token"] == FCM_TOKEN and message["android"]["priority"] == "high"
    data = message["data"]
    assert data["Call-ID"] == call.call_id and data["sound"] == "ring.caf"
    token = check_push_payload(data, call, device.push["Token-Proxy"])

    wake = e2e.wake(phone, call, token, style="header")
    answered(e2e, call, wake, timings, "fcm_android", request.time)


def test_linphone_rfc8599_phone_registers_is_pushed_wakes_and_takes_the_call(
    e2e, pusher_consumer, apns_trusting_fake, linphone_rule, timings
):
    apple_app(apns_trusting_fake, "org.linphone.phone", "org.linphone.phone")
    phone = Phone(
        user="user_3003", user_agent="LinphoneiOS/5.2.5 (iPhone) LinphoneSDK/5.3.70",
        contact_params=(
            f";pn-provider=apns;pn-prid={LINPHONE_VOIP}:voip&{LINPHONE_REMOTE}:remote"
            ";pn-param=ABCD123456.org.linphone.phone.voip&remote"
        ),
    )
    e2e.register(phone)
    device = e2e.device(phone)
    # The VoIP (PushKit) token wakes an app for a call; the bundle id is pn-param minus team and services.
    assert device.push == {
        "Token-App": "org.linphone.phone", "Token-Type": "apple", "Token-ID": LINPHONE_VOIP,
        "Token-Proxy": proxy_of(e2e),
    }

    call = e2e.call(device, phone)
    (request,) = apns_trusting_fake.wait_for_requests(1, timeout=15)
    assert request.path == f"/3/device/{LINPHONE_VOIP}"
    assert request.headers["apns-topic"] == "org.linphone.phone.voip"
    token = check_push_payload(request.body, call, device.push["Token-Proxy"])

    # This time the token rides in the Contact (;x-token-reg=...), the other way the role accepts.
    wake = e2e.wake(phone, call, token, style="contact")
    answered(e2e, call, wake, timings, "apns_linphone_rfc8599", request.received_at)



# --- An app that reports its token over HTTP (Acrobits' Push Token Reporter) ----------------------------

SOFTPHONE_VOIP = "7c6b5a49382716f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d"
REPORT_SECRET = "e2e-report-SECRET-0123456789abcdef"


def acrobits_report(base_url: str, reporter, values: dict[str, str]) -> dict:
    """What the app does at start: fill its provisioned pushTokenReporterUrl (the template pusher's
    admin shows for the reporter) with its account's values and GET it."""
    url = acrobits_url_template(slug=reporter.slug, parameters=reporter.parameters, signed=False, base=base_url)
    url = url.replace("<secret>", REPORT_SECRET)
    for variable, value in values.items():
        url = url.replace(variable, urllib.parse.quote(value, safe=""))
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_an_app_with_no_token_in_its_contact_reports_it_is_pushed_wakes_and_takes_the_call(
    e2e_kazoo, kazoo_registrar, kazoo_devices, pusher_consumer, apns_trusting_fake, live_server, timings
):
    e2e = e2e_kazoo
    apple_app(apns_trusting_fake, "com.acme.softphone.voip", "com.acme.softphone")
    reporter = token_reporter_create(slug="acme-softphone", secret=REPORT_SECRET, fixed={"Token-Type": "apple"},
                                     user_agent_regex="^Groundwire")
    phone = Phone(user="user_4004", user_agent="Groundwire/6.2.1 (AcmeSoft white label)", contact_params="")
    ids = (account_id(phone.realm), device_id(phone.user, phone.realm))
    kazoo_devices.add_device(*ids, {"name": "Ann's phone", "sip": {"username": phone.user, "realm": phone.realm}})

    # 1. It registers as any SIP phone does: nothing about push in its Contact. Kazoo's registrar
    # knows the device but it has no push object yet; pusher remembers who registered (the
    # reporter's User-Agent regex matches), without a push object.
    e2e.register(phone)
    learned = poll(lambda: Device.objects.filter(account_id=ids[0], device_id=ids[1]).first(), 10)
    assert learned is not None and learned.push is None and learned.username == phone.user
    assert "Pusher-Application" not in kazoo_registrar.answers_for(phone.user)[0]["Custom-Channel-Vars"]

    # 2. It reports its tokens over HTTP, through the Acrobits URL template.
    answer = acrobits_report(live_server.url, reporter, {
        "%account[username]%": phone.user, "%account[host]%": phone.realm, "%selector%": "A1B2C3D4E5F6:7C3A0D14",
        "%pushToken%": "", "%pushappid%": "com.acme.softphone",
        "%pushTokenIncomingCall%": SOFTPHONE_VOIP, "%pushappid_incoming_call%": "com.acme.softphone.voip",
    })
    assert answer == {"outcome": "updated"}
    device = Device.objects.get(account_id=ids[0], device_id=ids[1])
    assert device.push == {"Token-ID": SOFTPHONE_VOIP, "Token-App": "com.acme.softphone.voip",
                           "Token-Type": "apple", "Token-Proxy": proxy_of(e2e)}
    # ... and pusher's sync writes it into Kazoo's device document, as for a registered token.
    kazoo_push = poll(lambda: kazoo_devices.devices[ids].get("push"), 10)
    assert kazoo_push == device.push

    # 3. A call: Kazoo builds the X-KAZOO-PUSHER-* headers from its device document's push object.
    call = e2e.call(device, phone, push=kazoo_push)
    (request,) = apns_trusting_fake.wait_for_requests(1, timeout=15)
    assert request.path == f"/3/device/{SOFTPHONE_VOIP}"
    assert request.headers["apns-topic"] == "com.acme.softphone.voip"
    check_push_payload(request.body, call, device.push["Token-Proxy"])

    # 4. The woken app registers as it always does: no X-Token-Reg, no x-token-reg. Kazoo's
    # registrar now answers with CCV Pusher-Application (the document has a push object), and
    # Kamailio resumes the call held for the AOR, as the stock pusher role does.
    wake = e2e.wake(phone, call, None, style="none")
    answered(e2e, call, wake, timings, "apns_token_reporter", request.received_at)
    wake_ccvs = kazoo_registrar.answers_for(phone.user)[-1]["Custom-Channel-Vars"]
    assert wake_ccvs["Pusher-Application"] == "com.acme.softphone.voip"
    assert "registers without a token, resuming by AOR" in e2e.kamailio.log_text()
    assert "X-Token-Reg" not in (e2e.workdir / f"{wake.name}_messages.log").read_text()

    # The wake REGISTER's reg_success (1 REGISTER + push_req + wake REGISTER) left the reported push
    # object as it was.
    pusher_consumer.wait_handled(3)
    assert poll(lambda: Device.objects.filter(pk=device.pk).values_list("push", flat=True).first(), 5) == device.push
