"""Fixtures for the end-to-end tests: a real Kamailio (tests/e2e/kamailio/kamailio.cfg) publishing
to the real RabbitMQ exchanges, pusher's consumer in-process, the fake APNs/FCM, SIPp phones and a
SIPp media server. Every process is stopped in teardown, whatever the test did."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pika
import pytest
from django.db import OperationalError

from kazoo.topology import exchanges_declare
from push import services
from push.models import Delivery, Provider, PushApp
from registry.models import Device
from tests import amqp
from tests.e2e.harness import Kamailio, Sipp, free_udp_port, tools_missing
from tests.e2e.kazoo_registrar import FakeKazooRegistrar
from tests.fakes.crossbar import FakeCrossbar

REALM = "acme.e2e.test"
T = TypeVar("T")
TIMINGS_FILE = Path(__file__).resolve().parents[2] / "artifacts" / "e2e_timings.json"


def account_id(realm: str) -> str:
    """The Account-ID kamailio.cfg puts in the CCVs (it stands in for Kazoo's authn_resp)."""
    return hashlib.md5(f"account:{realm.lower()}".encode()).hexdigest()


def device_id(user: str, realm: str) -> str:
    """The Authorizing-ID kamailio.cfg puts in the CCVs."""
    return hashlib.md5(f"device:{user.lower()}@{realm.lower()}".encode()).hexdigest()


def poll(read: Callable[[], T | None], timeout: float) -> T | None:
    """`read()` until it returns something. The consumer writes from its own threads; on SQLite's
    shared in-memory test database a read that meets its write lock fails at once instead of
    waiting, so that counts as "not yet" too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = read()
        except OperationalError:
            value = None
        if value is not None:
            return value
        time.sleep(0.05)
    return None


@pytest.fixture(scope="session", autouse=True)
def _e2e_tools() -> None:
    missing = tools_missing()
    if missing:
        pytest.fail(f"end-to-end tests need {', '.join(missing)}: run bin/test-setup-e2e (bin/test does)")


@pytest.fixture(scope="session")
def e2e_amqp_url(amqp_vhost: str) -> str:
    """The session's private vhost (tests/conftest.py `amqp_vhost`), with Kazoo's exchanges declared
    there: Kamailio publishes to them and does not declare them. A vhost of the session's own,
    because Kamailio publishes to every queue bound to `registrar`/`pushes`: on a shared one a
    concurrent test run's consumer would take this run's registrations and pushes (and the other
    way round)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_vhost))
    try:
        channel = connection.channel()
        exchanges_declare(channel)
    finally:
        connection.close()
    return amqp_vhost


def kamailio_amqp_url(url: str) -> str:
    # The kazoo module takes amqp://user:pass@host:port[/vhost]; "/" is spelt by leaving it out.
    return url.removesuffix("/%2F").removesuffix("/")


@dataclass
class Phone:
    """A SIP account on a mobile app: what its REGISTER carries."""

    user: str
    user_agent: str
    contact_params: str
    port: int = field(default_factory=free_udp_port)
    realm: str = REALM

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.realm}"

    def variables(self) -> dict[str, str]:
        return {
            "user": self.user, "realm": self.realm, "contact_params": self.contact_params,
            "user_agent": self.user_agent,
        }


@dataclass
class Call:
    media_server: Sipp
    call_id: str


class E2E:
    """Drives one end-to-end run: Kamailio + SIPp agents under `workdir`."""

    def __init__(self, workdir: Path, kamailio: Kamailio) -> None:
        self.workdir = workdir
        self.kamailio = kamailio
        self.agents: list[Sipp] = []

    def _sipp(self, name: str, scenario: str, port: int, variables: dict[str, str], *, call_id: str | None = None,
              timeout_s: float = 30.0) -> Sipp:
        name = f"{len(self.agents) + 1:02d}_{name}"  # log files per agent, in start order
        agent = Sipp(name=name, scenario=scenario, port=port, remote=self.kamailio.address, workdir=self.workdir,
                     variables=variables, call_id=call_id, timeout_s=timeout_s)
        self.agents.append(agent)
        return agent

    def register(self, phone: Phone) -> Sipp:
        """The phone's first REGISTER (push parameters in the Contact); waits for its 200 OK."""
        agent = self._sipp("phone_register", "phone_register.xml", phone.port, phone.variables(), timeout_s=10)
        rc = agent.run()
        assert rc == 0, f"REGISTER failed (sipp rc {rc}):\n{agent.report()}\n{self.kamailio.log_tail()}"
        return agent

    def device(self, phone: Phone, timeout: float = 10.0) -> Device:
        """pusher's Device for the phone, once the reg_success gave it a push object."""
        device = poll(
            lambda: Device.objects.filter(
                account_id=account_id(phone.realm), device_id=device_id(phone.user, phone.realm), push__isnull=False
            ).first(),
            timeout,
        )
        if device is None:
            raise AssertionError(f"pusher stored no push object for {phone.aor}:\n{self.kamailio.log_tail()}")
        return device

    def delivery(self, call: Call, timeout: float = 10.0) -> Delivery:
        """pusher's delivery record of the push for `call`, once finished."""
        delivery = poll(
            lambda: Delivery.objects.filter(call_id=call.call_id, finished_at__isnull=False).first(), timeout
        )
        assert delivery is not None, f"pusher recorded no finished delivery for {call.call_id}"
        return delivery

    def call(self, device: Device, phone: Phone, *, scenario: str = "media_server_invite.xml",
             push_timeout_ms: int = 20000, timeout_s: float = 30.0, push: dict[str, Any] | None = None) -> Call:
        """The media server INVITEs the device with the headers Kazoo builds from its push object
        (`push`: the one Kazoo's device document holds; by default pusher's own copy)."""
        push = dict(push if push is not None else device.push or {})
        headers = {"Token-ID", "Token-Type", "Token-App", "Token-Proxy"}
        assert set(push) <= headers, f"push object has keys the media-server scenario does not send: {push}"
        call_id = f"e2e-{uuid.uuid4()}@{self.kamailio.address}"
        variables = {
            "user": phone.user, "realm": phone.realm, "caller_number": "+15551234567", "caller_name": "John Doe",
            "token_id": push["Token-ID"], "token_type": push["Token-Type"], "token_app": push["Token-App"],
            "token_proxy": push["Token-Proxy"], "endpoint_id": device.device_id, "account_id": device.account_id,
            "push_timeout": str(push_timeout_ms),
        }
        agent = self._sipp("media_server", scenario, self.kamailio.media_port, variables, call_id=call_id,
                           timeout_s=timeout_s)
        agent.start()
        return Call(media_server=agent, call_id=call_id)

    def wake(self, phone: Phone, call: Call, token: str | None, *, style: str = "header") -> Sipp:
        """The woken app re-registers with the registration token from the push (same Contact URI,
        same port), then answers the call. Style "none": an app that presents no token (it reports
        its push token over HTTP and registers as it always does)."""
        variables = phone.variables()
        if style == "header":
            variables |= {"contact_header_params": "", "token_header": "X-Token-Reg", "token_value": str(token)}
        elif style == "none":
            variables |= {"contact_header_params": "", "token_header": "X-Wake", "token_value": "no token"}
        else:  # the token as a Contact header parameter
            variables |= {"contact_header_params": f";x-token-reg={token}", "token_header": "X-Wake",
                          "token_value": "token in Contact"}
        agent = self._sipp("phone_wake", "phone_wake.xml", phone.port, variables, call_id=call.call_id, timeout_s=20)
        agent.start()
        return agent

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.kamailio.stop()


def _e2e_run(tmp_path: Path, amqp_url: str, *, authn_query: bool = False) -> Iterator[E2E]:
    kamailio = Kamailio(
        workdir=tmp_path, port=free_udp_port(), media_port=free_udp_port(), amqp_url=kamailio_amqp_url(amqp_url),
        authn_query=authn_query,
    )
    run = E2E(tmp_path, kamailio)
    try:
        kamailio.start()
        yield run
    finally:
        run.stop()


@pytest.fixture
def e2e(tmp_path: Path, e2e_amqp_url: str) -> Iterator[E2E]:
    yield from _e2e_run(tmp_path, e2e_amqp_url)


@pytest.fixture
def kazoo_devices(settings, fake_crossbar) -> FakeCrossbar:
    """Kazoo's device documents: the fake Crossbar, where pusher's sync writes push objects."""
    settings.KAZOO_CROSSBAR_URL, settings.KAZOO_API_KEY = fake_crossbar.url, fake_crossbar.api_key
    return fake_crossbar


@pytest.fixture
def kazoo_registrar(e2e_amqp_url: str, kazoo_devices: FakeCrossbar) -> Iterator[FakeKazooRegistrar]:
    """Kazoo's registrar app answering Kamailio's authn_req from the device documents (ids as
    kamailio.cfg derives them without it: account_id / device_id)."""

    def directory(user: str, realm: str) -> tuple[str, str, dict[str, Any]] | None:
        key = (account_id(realm), device_id(user, realm))
        document = kazoo_devices.devices.get(key)
        return None if document is None else (*key, document)

    registrar = FakeKazooRegistrar(e2e_amqp_url, directory).start()
    try:
        yield registrar
    finally:
        registrar.stop()


@pytest.fixture
def e2e_kazoo(tmp_path: Path, e2e_amqp_url: str, kazoo_registrar: FakeKazooRegistrar) -> Iterator[E2E]:
    """The end-to-end run whose REGISTERs are authenticated by Kazoo's registrar on the bus (the fake
    above), as registrar-role.cfg has them, so that their CCVs say which devices wake by push."""
    yield from _e2e_run(tmp_path, e2e_amqp_url, authn_query=True)


@pytest.fixture
def pusher_consumer() -> Iterator[amqp.RunningConsumer]:
    """pusher's consumer, in this process, on its own queue bound to the exchanges Kamailio uses."""
    with amqp.consumer_running() as consumer:
        yield consumer


def apple_app(fake, app_id: str, bundle_id: str) -> PushApp:
    cert = fake.ca.issue_client_cert(bundle_id, voip=True, topics=[bundle_id, f"{bundle_id}.voip"])
    parsed = services.credential_parse(kind="apns_certificate", data=cert.pem)
    credential = services.credential_save(name=f"{app_id} voip", parsed=parsed)
    return PushApp.objects.create(
        app_id=app_id, provider=Provider.APPLE, credential=credential, host=fake.host, port=fake.port,
        priority=10, push_type="voip",
    )


_timings: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="session")
def timings() -> Iterator[dict[str, dict[str, float]]]:
    """Measured figures per test; written to artifacts/e2e_timings.json at the end of the session."""
    yield _timings
    if _timings:
        report = {
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "kamailio": subprocess.run(["kamailio", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
            "note": "ms; see docs/e2e.md for what each figure spans",
            "runs": _timings,
        }
        TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS_FILE.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
