"""A stand-in for Kazoo's registrar app on the bus: it answers Kamailio's authn_req (exchange
`callmgr`, routing key `authn.req.<realm>`) with an authn_resp on `targeted` to the request's
Server-ID, echoing its Msg-ID, as reg_authn_req.erl does. The Custom-Channel-Vars come from the
device document the test's `directory` callback returns: Account-ID, Authorizing-ID and the rest,
and `Pusher-Application` = the document's push.Token-App when it has a push object (reg_authn_req's
create_ccvs), which is what tells Kamailio's pusher role that the device wakes by push.

No password check: the test proxy skips digest auth (tests/e2e/kamailio/kamailio.cfg)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika

# (username, realm) -> (account id, device id, device document) or None for an unknown device.
Directory = Callable[[str, str], tuple[str, str, dict[str, Any]] | None]


@dataclass
class Exchange:
    request: dict[str, Any]
    answer: dict[str, Any]


@dataclass
class FakeKazooRegistrar:
    amqp_url: str
    directory: Directory
    exchanges: list[Exchange] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> FakeKazooRegistrar:
        self._thread = threading.Thread(target=self._run, name="fake-kazoo-registrar", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"fake Kazoo registrar not consuming in {timeout}s: {self._error!r}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def answers_for(self, user: str) -> list[dict[str, Any]]:
        return [e.answer for e in list(self.exchanges) if e.request.get("Auth-User") == user]

    def _run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        except BaseException as exc:  # reported by start()
            self._error = exc
            return
        try:
            channel = connection.channel()
            channel.exchange_declare("callmgr", "topic", durable=False, auto_delete=False)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(queue, "callmgr", "authn.req.*")
            self._ready.set()
            for method, _properties, body in channel.consume(queue, inactivity_timeout=0.1):
                if self._stop.is_set():
                    break
                if method is None:
                    continue
                request = json.loads(body)
                answer = self._answer(request)
                channel.basic_publish("targeted", request["Server-ID"], json.dumps(answer).encode(),
                                      pika.BasicProperties(content_type="application/json"))
                channel.basic_ack(method.delivery_tag)
                self.exchanges.append(Exchange(request, answer))
            channel.cancel()
        finally:
            connection.close()

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        envelope = {"Event-Category": "directory", "Msg-ID": request.get("Msg-ID"), "App-Name": "registrar",
                    "App-Version": "4.3.0", "Node": "registrar@e2e.fake"}
        user, realm = request.get("Auth-User", ""), request.get("Auth-Realm", "")
        found = self.directory(user, realm)
        if found is None:
            return {**envelope, "Event-Name": "authn_err"}
        account_id, device_id, document = found
        ccvs = {"Account-ID": account_id, "Authorizing-ID": device_id, "Authorizing-Type": "device",
                "Username": user, "Realm": realm, "Account-Realm": realm}
        token_app = (document.get("push") or {}).get("Token-App")
        if token_app:
            ccvs["Pusher-Application"] = token_app
        return {**envelope, "Event-Name": "authn_resp", "Auth-Method": "password", "Auth-Password": "e2e",
                "Custom-Channel-Vars": ccvs}
