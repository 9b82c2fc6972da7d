"""The fake APNs (HTTP/2 + TLS) and fake FCM (OAuth2 + HTTP v1) from tests/fakes, started in the
soak process, and the database rows that point the consumer at them: a User-Agent rule, an Apple
app with a certificate the fake trusts, a Firebase app with a service account the fake knows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm

APPLE_APP_ID = "com.acme.phone.voip.prod"
FIREBASE_APP_ID = "com.acme.phone"
RULE = {
    "name": "AcmePhone", "position": 10, "regex": "^AcmePhone",
    "properties": {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"},
}


@dataclass
class Fakes:
    apns: FakeApns
    fcm: FakeFcm

    @classmethod
    def start(cls) -> Fakes:
        return cls(apns=FakeApns.start(), fcm=FakeFcm().start())

    def stop(self) -> None:
        self.apns.stop()
        self.fcm.stop()

    def consumer_env(self) -> dict[str, str]:
        """What the consumer needs to reach the fakes: trust the fake APNs CA, FCM at the fake."""
        return {"PUSHER_APNS_CA_FILE": self.apns.ca_file, "PUSHER_FCM_ENDPOINT": self.fcm.endpoint}

    def seed(self) -> None:
        """Empty the soak database's pusher tables and add the rule and the two apps."""
        from kazoo.models import ConsumerStatus
        from push import services
        from push.models import Credential, Delivery, Provider, PushApp
        from registry.models import Device, PushToken, UserAgentRule

        for model in (Delivery, PushApp, Credential, PushToken, Device, UserAgentRule, ConsumerStatus):
            model.objects.all().delete()
        UserAgentRule.objects.create(**RULE)
        cert = self.apns.ca.issue_client_cert("com.acme.phone", voip=True,
                                              topics=["com.acme.phone", "com.acme.phone.voip"])
        apple = services.credential_save(
            name="soak apns", parsed=services.credential_parse(kind="apns_certificate", data=cert.pem))
        PushApp.objects.create(app_id=APPLE_APP_ID, provider=Provider.APPLE, credential=apple,
                               host=self.apns.host, port=self.apns.port, priority=10, push_type="voip")
        account = self.fcm.service_account("acme-soak")
        firebase = services.credential_save(
            name="soak fcm", parsed=services.credential_parse(kind="fcm_service_account", data=json.dumps(account)))
        PushApp.objects.create(app_id=FIREBASE_APP_ID, provider=Provider.FIREBASE, credential=firebase)

    # --- what the fakes received, by Call-ID --------------------------------------------------------

    def receipts(self) -> dict[str, list[Receipt]]:
        """Call-ID -> what the fakes received for it, in order, over both fakes."""
        out: dict[str, list[Receipt]] = {}
        requests = self.apns.requests
        killed = {r.connection_id for r in requests if r.action in ("reset", "goaway")}
        for request in requests:
            call_id = _apns_call_id(request.body)
            if call_id:
                answer = str(request.status) if request.action == "respond" else request.action
                out.setdefault(call_id, []).append(Receipt(
                    request.received_at, request.action == "respond" and request.status == 200, answer,
                    answer_maybe_lost=request.connection_id in killed,
                ))
        issued = set(self.fcm.issued_tokens)
        for request in self.fcm.requests:
            data = ((request.body or {}).get("message") or {}).get("data") or {}
            call_id = data.get("Call-ID")
            if call_id:
                bearer = (request.header("Authorization") or "").removeprefix("Bearer ")
                out.setdefault(call_id, []).append(Receipt(request.time, bearer in issued, "fcm"))
        return out


@dataclass(frozen=True)
class Receipt:
    """One provider request for a Call-ID. `accepted`: the fake took the push (APNs 200; FCM: a send
    with a token the fake issued, whose default answer is success).

    `answer_maybe_lost`: the fake killed that connection (a reset or a GOAWAY answer to another
    stream on it). The fake records its 200 before writing it, and a reset drops what it had not
    flushed yet, a GOAWAY refuses what comes after it: the consumer may never have seen that 200,
    and rightly retries. A second acceptance after such a one is the ambiguity of any request on a
    connection that dies (RFC 9113 §8.7), not the consumer sending a push it knew was sent."""

    received_at: float
    accepted: bool
    answer: str
    answer_maybe_lost: bool = False


def _apns_call_id(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("aps"), dict):
        return str(body["aps"].get("call-id") or "")
    return ""
