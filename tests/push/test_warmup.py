"""Provider warm-up: at consumer start the APNs connection of every enabled Apple app is open (its
JWT signed, for token auth) and the FCM access token of every Firebase app fetched before the first
push arrives; a credential changed since drops its old connection and gets a new one. With
PUSHER_PROVIDER_WARMUP=0 runconsumer starts no warm-up and the first push opens its own connection."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import jwt
import pytest
from django.core.management import call_command
from django.db import connection

from kazoo import warmup
from kazoo.worker import Worker
from push import services
from push.models import Delivery, DeliveryStatus, Provider, PushApp
from push.services import clients
from tests.amqp import broker_channel, consumer_running, wait_for
from tests.push.pushreq import PUSH, publish_push, push_req

FCM_TOKEN = "fcm-token-of-the-warm-up-test"


@pytest.fixture
def token_app(apns_trusting_fake):
    """com.acme.tok on the fake APNs with a .p8 key (token auth) the fake knows."""
    fake = apns_trusting_fake
    key = fake.new_token_key(team_id="TEAM123456")
    credential = services.credential_save(name="acme p8", parsed=services.credential_parse(
        kind="apns_token", data=key.key_pem, key_id=key.key_id, team_id=key.team_id))
    return PushApp.objects.create(app_id="com.acme.tok.voip", provider=Provider.APPLE, credential=credential,
                                  host=fake.host, port=fake.port, push_type="voip")


@pytest.fixture
def jwt_signed(monkeypatch) -> list[float]:
    """When each provider token was signed."""
    signed: list[float] = []
    encode = jwt.encode

    def counting(*args, **kwargs):
        signed.append(time.time())
        return encode(*args, **kwargs)

    monkeypatch.setattr(jwt, "encode", counting)
    return signed


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_consumer_start_warms_every_provider_before_the_first_push(
    apple_app, token_app, firebase_app, apns_trusting_fake, fake_fcm, jwt_signed
):
    fake = apns_trusting_fake
    with consumer_running(warm=True) as consumer:
        # Nothing published yet: both APNs connections (certificate, token) are open, the JWT is
        # signed, the FCM access token fetched.
        assert wait_for(lambda: len(fake.connections) == 2 and len(fake_fcm.token_requests) == 1, timeout=15)
        warmed = {info.id for info in fake.connections}
        assert len(jwt_signed) == 1 and fake.requests == []
        with broker_channel() as channel:
            publish_push(channel, PUSH["body"])
            publish_push(channel, push_req(**{"Msg-ID": "tok-1", "Call-ID": "call-tok",
                                              "Token-App": "com.acme.tok.voip"}))
            publish_push(channel, push_req(**{"Msg-ID": "fcm-1", "Call-ID": "call-fcm", "Token-Type": "firebase",
                                              "Token-App": "com.acme.phone", "Token-ID": FCM_TOKEN}))
            consumer.wait_handled(3)
    assert {d.status for d in Delivery.objects.all()} == {DeliveryStatus.SENT}
    by_auth = {r.auth: r for r in fake.requests}
    assert set(by_auth) == {"certificate", "token"}
    assert {r.connection_id for r in fake.requests} == warmed  # the first pushes went on the warm connections
    assert len(fake.connections) == 2
    assert len(jwt_signed) == 1  # the first token push carried the JWT signed at warm-up
    assert by_auth["token"].jwt_claims["iat"] == int(jwt_signed[0])
    assert len(fake_fcm.token_requests) == 1  # and FCM's send used the token fetched then


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("warm", [False, True], ids=["warmup-off", "warmup-on"])
def test_runconsumer_warms_only_when_pusher_provider_warmup_is_on(
    warm, apple_app, apns_trusting_fake, settings, monkeypatch, caplog
):
    """PUSHER_PROVIDER_WARMUP=0: runconsumer starts no warm-up thread, nothing is warmed, and the first
    push opens the APNs connection itself. On (the control): the connection is open before any push."""
    fake = apns_trusting_fake
    settings.PUSHER_PROVIDER_WARMUP = warm
    caplog.set_level(logging.INFO, logger=warmup.log.name)
    warm_calls: list[float] = []
    warm_real = warmup.provider_connections_warm

    def warm_counting(**kwargs):
        warm_calls.append(time.monotonic())
        return warm_real(**kwargs)

    monkeypatch.setattr(warmup, "provider_connections_warm", warm_counting)
    seen: dict = {}
    problems: list[BaseException] = []

    def drive(worker: Worker) -> None:
        try:
            assert worker.connected.wait(15), "runconsumer did not start consuming"
            # The warm-up thread, when there is one, was started before the consumer ran.
            seen["threads"] = {thread.name for thread in threading.enumerate()}
            if warm:
                assert wait_for(lambda: len(fake.connections) == 1, timeout=15), "no connection warmed"
            seen["connections_before_push"] = len(fake.connections)
            with broker_channel() as channel:
                publish_push(channel, PUSH["body"])
            assert wait_for(lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).exists(), timeout=15)
        except BaseException as exc:  # the test's thread reports it
            problems.append(exc)
        finally:
            connection.close()  # this thread's
            worker.stop()

    # runconsumer runs in this (the main) thread, where pytest keeps its own signal handlers; the
    # test drives it from a thread instead, and stops it as SIGTERM would.
    monkeypatch.setattr(Worker, "install_signal_handlers",
                        lambda self: threading.Thread(target=drive, args=(self,), daemon=True).start())

    with pytest.raises(SystemExit) as exited:
        call_command("runconsumer", "--queue", f"pusher_test_{uuid.uuid4().hex[:10]}", "--workers", "2")

    assert exited.value.code == 0
    assert not problems, problems
    (opened,) = fake.connections
    assert [r.connection_id for r in fake.requests] == [opened.id]
    if warm:
        assert "provider-warm" in seen["threads"]
        assert len(warm_calls) >= 1 and seen["connections_before_push"] == 1
    else:
        assert "provider-warm" not in seen["threads"]
        assert warm_calls == [] and seen["connections_before_push"] == 0  # the push opened it
        assert "provider warm-up off (PUSHER_PROVIDER_WARMUP=0)" in caplog.text


@pytest.mark.django_db
def test_a_credential_change_closes_the_old_connection_and_warms_the_new(apple_app, apns_trusting_fake):
    fake = apns_trusting_fake
    warm = services.provider_connections_warm()
    assert (warm.apns_connections, warm.failed) == (1, ())
    (old,) = fake.connections
    assert services.provider_connections_warm().apns_connections == 0  # warm already: nothing to do

    renewed = fake.ca.issue_client_cert("com.acme.phone", voip=True, topics=["com.acme.phone", "com.acme.phone.voip"])
    services.credential_update(credential=apple_app.credential, data=renewed.pem)
    warm = services.provider_connections_warm()

    assert warm.apns_connections == 1
    assert wait_for(lambda: fake.connections[0].closed_at is not None, timeout=5), "the old connection is still open"
    new = fake.connections[-1]
    assert new.id != old.id and new.closed_at is None
    services.push_app_cache_clear()
    delivery = services.push_request_handle(fields=push_req(), source="api")
    assert delivery.status == DeliveryStatus.SENT
    assert fake.requests[-1].connection_id == new.id


@pytest.mark.django_db
def test_a_credential_change_is_noticed_by_the_next_push_without_a_warm_up(apple_app, apns_trusting_fake):
    """The web process (admin, API) changes the credential; a process that only pushes sees the new
    row through its app cache, and its next push drops the old version's connection."""
    fake = apns_trusting_fake
    assert services.push_request_handle(fields=push_req(**{"Msg-ID": "a"}), source="api").status == DeliveryStatus.SENT
    (old,) = fake.connections
    renewed = fake.ca.issue_client_cert("com.acme.phone", voip=True, topics=["com.acme.phone", "com.acme.phone.voip"])
    services.credential_update(credential=apple_app.credential, data=renewed.pem)
    services.push_app_cache_clear()  # what the app cache's few seconds do in another process

    assert services.push_request_handle(fields=push_req(**{"Msg-ID": "b"}), source="api").status == DeliveryStatus.SENT
    assert wait_for(lambda: fake.connections[0].closed_at is not None, timeout=5), "the old connection is still open"
    assert fake.requests[-1].connection_id != old.id


@pytest.mark.django_db
def test_warm_up_failures_are_one_line_each(apple_app, firebase_app, fake_fcm, caplog):
    PushApp.objects.filter(pk=apple_app.pk).update(port=9)  # nothing listens there
    fake_fcm.token_endpoint_down(True)
    try:
        warm = services.provider_connections_warm(timeout=5)
    finally:
        fake_fcm.token_endpoint_down(False)
    assert (warm.apns_connections, warm.fcm_tokens) == (0, 0)
    assert len(warm.failed) == 2
    lines = [r.getMessage() for r in caplog.records if r.name == clients.log.name and r.levelname == "WARNING"]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert any("APNs at 127.0.0.1:9 for com.acme.phone.voip.prod" in line for line in lines)
    assert any("FCM for com.acme.phone" in line and "token endpoint" in line for line in lines)
