"""What the soak publishes: Kamailio's reg_success and push_req (the PROTOCOL samples), each with
its own Msg-ID, and for the registrations their own device, username and token, so that every
message's effect can be found afterwards."""

from __future__ import annotations

import copy
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from registry.sip import amqp_encode
from soak.fakes import APPLE_APP_ID, FIREBASE_APP_ID
from tests.fixtures import sample

REG = sample("reg_success_kamailio_master.json")["body"]
PUSH = sample("push_req_kamailio_master.json")["body"]
SAMPLE_TOKEN = PUSH["Token-ID"]
ACCOUNT_ID = REG["Custom-Channel-Vars"]["Account-ID"]


@dataclass(frozen=True)
class Sent:
    """One published message and how to find its effect."""

    kind: str  # "reg" or "push"
    msg_id: str
    key: str  # reg: the device id (Authorizing-ID); push: the Call-ID
    token: str
    provider: str = ""  # push: "apple" or "firebase"


Message = tuple[str, str, dict[str, Any]]  # exchange, routing key, body


class Traffic:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.sent: list[Sent] = []

    def reg_success(self, index: int) -> Message:
        device_id = f"{self.tag}{index:024x}"[:32]
        username = f"soak_{self.tag}_{index}"
        token = hashlib.sha256(f"{self.tag}-reg-{index}".encode()).hexdigest()
        body = copy.deepcopy(REG)
        body["Contact"] = body["Contact"].replace(SAMPLE_TOKEN, token).replace("user_k3j4h5", username)
        body["Username"] = body["Custom-Channel-Vars"]["Username"] = username
        body["Custom-Channel-Vars"]["Authorizing-ID"] = device_id
        body["Msg-ID"] = f"{self.tag}-r-{index}"
        body["Call-ID"] = f"{uuid.uuid4()}@192.0.2.44"
        self.sent.append(Sent("reg", body["Msg-ID"], device_id, token))
        key = f"registration.success.{amqp_encode(body['Realm'])}.{amqp_encode(username)}"
        return "registrar", key, body

    def push_req(self, index: int, *, provider: str = "apple", expires: int | None = None) -> Message:
        call_id = str(uuid.uuid4())
        body = copy.deepcopy(PUSH)
        if provider == "apple":
            token = hashlib.sha256(f"{self.tag}-push-{index}".encode()).hexdigest()
            body.update({"Token-Type": "apple", "Token-App": APPLE_APP_ID})
        else:
            token = f"{self.tag}{index}:APA91b" + hashlib.sha256(f"{self.tag}-{index}".encode()).hexdigest()[:40]
            body.update({"Token-Type": "firebase", "Token-App": FIREBASE_APP_ID})
        body.update({"Token-ID": token, "Msg-ID": f"{self.tag}-p-{index}", "Call-ID": call_id})
        body["Payload"]["call-id"] = call_id
        if expires is not None:
            body["Expires"] = expires
        self.sent.append(Sent("push", body["Msg-ID"], call_id, token, provider))
        return "pushes", f"notification.push.{body['Token-Type']}.{token}", body

    def mixed(self, count: int, *, firebase_every: int = 5) -> list[Message]:
        """`count` messages alternating reg_success and push_req; every `firebase_every`th push to FCM."""
        out = []
        for index in range(count):
            if index % 2 == 0:
                out.append(self.reg_success(index))
            else:
                provider = "firebase" if firebase_every and (index // 2) % firebase_every == 0 else "apple"
                out.append(self.push_req(index, provider=provider))
        return out
