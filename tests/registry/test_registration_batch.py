"""reg_success handled in batches: `registration_apply_batch` (the service), `message_process_batch`
(decoding and the log lines) and the consumer's registration lanes over the real RabbitMQ."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from typing import Any

import pytest
from django.db import DataError, OperationalError, connection
from django.test.utils import CaptureQueriesContext

from core.errors import InvalidInput
from kazoo.wire import Action, Handled, RawMessage, message_process, message_process_batch
from kazoo.worker import Worker, WorkerConfig
from registry.models import Device, PushToken, UserAgentRule
from registry.selectors import user_agent_rules_enabled
from registry.services import RegistrationResult, registration_apply_batch
from tests.amqp import broker_channel, consumer_running, dead_letters, publish, sample, wait_for

REG = sample("reg_success_kamailio_master.json")
SAMPLE_TOKEN = "5e0f4c3a9b8d7e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
ACCOUNT = uuid.uuid4().hex


def reg(device: int, token: str, **changes: Any) -> dict[str, Any]:
    """The Kamailio sample, as device number `device` of ACCOUNT registering with `token`."""
    body = copy.deepcopy(REG["body"])
    username = f"user_{device:04d}"
    body["Contact"] = body["Contact"].replace("user_k3j4h5", username).replace(SAMPLE_TOKEN, token)
    body.update({"Username": username, "Msg-ID": uuid.uuid4().hex})
    body["Custom-Channel-Vars"].update({"Account-ID": ACCOUNT, "Authorizing-ID": f"dev{device:04d}"})
    body.update(changes)
    return body


def token(n: int) -> str:
    return f"{n:064x}"


def outcomes(results: list[RegistrationResult | InvalidInput]) -> list[str]:
    return [r.outcome if isinstance(r, RegistrationResult) else "bad" for r in results]


def statements(queries: CaptureQueriesContext) -> list[str]:
    """The SQL sent, without the savepoints of the test's own transaction around `atomic`."""
    return [q["sql"] for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]


def state() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return (
        list(Device.objects.order_by("device_id").values()),
        list(PushToken.objects.order_by("device__device_id", "token").values()),
    )


# --- the service ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_two_registrations_of_one_device_in_a_batch_apply_in_order(acme_rule):
    batch = [reg(1, token(1)), reg(2, token(20)), reg(1, token(2)), reg(1, token(3)), reg(2, token(20))]
    results = registration_apply_batch(fields=batch)
    assert outcomes(results) == ["created", "created", "updated", "updated", "unchanged"]
    one = Device.objects.get(device_id="dev0001")
    assert one.push["Token-ID"] == token(3)
    tokens = {t.token: t.active for t in PushToken.objects.filter(device=one)}
    assert tokens == {token(1): False, token(2): False, token(3): True}
    assert Device.objects.get(device_id="dev0002").push["Token-ID"] == token(20)


@pytest.mark.django_db
def test_a_device_going_back_to_its_first_token_within_a_batch_ends_on_it(acme_rule):
    registration_apply_batch(fields=[reg(1, token(1)), reg(1, token(2)), reg(1, token(1))])
    device = Device.objects.get(device_id="dev0001")
    assert device.push["Token-ID"] == token(1)
    assert {t.token: t.active for t in PushToken.objects.filter(device=device)} == {token(1): True, token(2): False}


@pytest.mark.django_db
def test_a_bad_body_is_refused_alone(acme_rule):
    batch = [
        reg(1, token(1)),
        reg(2, token(2), Contact="<sip:broken"),
        reg(3, token(3), **{"User-Agent": "DeskPhone 1.0"}),
        reg(4, token(4), Username="u" * 10, **{"Custom-Channel-Vars": {"Account-ID": "a" * 65, "Authorizing-ID": "d"}}),
        reg(5, token(5)),
    ]
    results = registration_apply_batch(fields=batch)
    assert outcomes(results) == ["created", "bad", "ignored", "bad", "created"]
    assert "Contact" in results[1].message and "64 characters" in results[3].message
    assert set(Device.objects.values_list("device_id", flat=True)) == {"dev0001", "dev0005"}


@pytest.mark.django_db
def test_unchanged_registrations_cost_one_query_whatever_their_number(acme_rule):
    batch = [reg(n, token(n)) for n in range(40)]
    registration_apply_batch(fields=batch)
    again = [{**body, "Msg-ID": uuid.uuid4().hex} for body in batch]  # the phones re-REGISTER
    with CaptureQueriesContext(connection) as queries:
        results = registration_apply_batch(fields=again)
    assert outcomes(results) == ["unchanged"] * 40
    assert len(queries) == 1 and queries[0]["sql"].startswith("SELECT d.account_id")  # no transaction either


@pytest.mark.django_db
def test_changed_registrations_cost_a_fixed_number_of_queries(acme_rule):
    user_agent_rules_enabled()  # the rules are cached; their read is not the registrations' cost
    with CaptureQueriesContext(connection) as new:
        registration_apply_batch(fields=[reg(n, token(n)) for n in range(40)])
    with CaptureQueriesContext(connection) as rotated:
        results = registration_apply_batch(fields=[reg(n, token(1000 + n)) for n in range(40)])
    assert outcomes(results) == ["updated"] * 40
    # digests; (the changed devices' rows;) one device upsert; one token upsert; one retiring UPDATE
    assert [sql[:20] for sql in statements(new)] == [
        "SELECT d.account_id,", 'INSERT INTO "registr', 'INSERT INTO "registr', 'UPDATE "registry_pus']
    assert [sql[:20] for sql in statements(rotated)] == [
        "SELECT d.account_id,", 'SELECT "registry_dev', 'INSERT INTO "registr', 'INSERT INTO "registr',
        'UPDATE "registry_pus']
    assert PushToken.objects.filter(active=True).count() == 40 and PushToken.objects.count() == 80


@pytest.mark.django_db
def test_a_redelivered_batch_changes_nothing(acme_rule):
    batch = [reg(n, token(n)) for n in range(10)]
    registration_apply_batch(fields=batch)
    before = state()
    assert outcomes(registration_apply_batch(fields=batch)) == ["unchanged"] * 10
    assert state() == before


@pytest.mark.django_db
def test_a_redelivered_batch_with_two_registrations_of_a_device_ends_where_it_was(acme_rule):
    batch = [reg(n, token(n)) for n in range(4)] + [reg(3, token(33))]
    registration_apply_batch(fields=batch)
    before = state()
    # dev0003 goes through its two tokens again, in order, as one message after the other would.
    assert outcomes(registration_apply_batch(fields=batch)) == ["unchanged"] * 3 + ["updated", "updated"]
    after = state()
    assert [(d["device_id"], d["push"]) for d in after[0]] == [(d["device_id"], d["push"]) for d in before[0]]
    assert [(t["token"], t["active"]) for t in after[1]] == [(t["token"], t["active"]) for t in before[1]]


@pytest.mark.django_db
def test_stale_last_seen_is_refreshed_without_rewriting(acme_rule, settings):
    registration_apply_batch(fields=[reg(1, token(1)), reg(2, token(2))])
    Device.objects.filter(device_id="dev0001").update(last_seen_at="2020-01-01T00:00:00Z")
    with CaptureQueriesContext(connection) as queries:
        results = registration_apply_batch(fields=[reg(1, token(1)), reg(2, token(2))])
    assert outcomes(results) == ["refreshed", "unchanged"]
    assert results[0].device.device_id == "dev0001"
    assert Device.objects.get(device_id="dev0001").last_seen_at.year > 2020
    assert not any(sql.startswith("INSERT") for sql in statements(queries))


@pytest.mark.django_db
def test_one_token_listed_twice_in_a_contact_is_stored_once(acme_rule):
    UserAgentRule.objects.create(
        name="Linphone", position=5, regex="^Linphone",
        properties={"Token-App": "pn-param", "Token-Type": "pn-provider", "Token-ID": "pn-prid"},
    )
    body = reg(1, token(1), **{"User-Agent": "Linphone iOS 5.2"})
    body["Contact"] = (f"<sip:user_0001@192.0.2.44;pn-provider=apns;pn-param=ABCD1234.org.linphone.phone.voip&remote;"
                       f"pn-prid={token(7)}:voip&{token(7)}:remote>")
    results = registration_apply_batch(fields=[body])
    assert outcomes(results) == ["created"]
    assert list(PushToken.objects.values_list("token", flat=True)) == [token(7)]


# --- decoding, dispatch and the log lines ---------------------------------------------------------


@pytest.mark.django_db
def test_poison_messages_among_good_ones_are_dead_lettered_alone(acme_rule, caplog):
    good = [RawMessage(body=json.dumps(reg(n, token(n))).encode(), exchange="registrar") for n in range(3)]
    batch = [
        good[0],
        RawMessage(body=b"{not json", exchange="registrar"),
        good[1],
        RawMessage(body=json.dumps(reg(9, token(9), Contact="<sip:broken")).encode(), exchange="registrar"),
        RawMessage(body=json.dumps({"Event-Category": "directory", "Event-Name": "reg_query"}).encode()),
        good[2],
    ]
    with caplog.at_level("INFO", logger="pusher.messages"):
        handled = message_process_batch(batch)
    assert [h.action for h in handled] == [Action.ACK, Action.DEAD_LETTER, Action.ACK, Action.DEAD_LETTER,
                                           Action.ACK, Action.ACK]
    assert "not valid JSON" in handled[1].reason and "Contact" in handled[3].reason
    assert handled[3].event == "reg_success" and handled[4].outcome == "ignored"
    assert Device.objects.count() == 3
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reg_success ")]
    assert len(lines) == 3 and all("outcome=created" in line for line in lines)


@pytest.mark.django_db
def test_batch_and_single_message_paths_agree(acme_rule):
    first = RawMessage(body=json.dumps(reg(1, token(1))).encode())
    second = RawMessage(body=json.dumps(reg(1, token(2))).encode())
    assert message_process(first).outcome == "created"
    assert [h.outcome for h in message_process_batch([first, second, first])] == ["unchanged", "updated", "updated"]
    assert message_process(first).outcome == "unchanged"


# --- the consumer ----------------------------------------------------------------------------------


def _config(**changes: Any) -> WorkerConfig:
    """For a Worker whose batch handling is called directly: it never connects."""
    suffix = uuid.uuid4().hex[:10]
    values = {
        "amqp_url": "amqp://never-connected.invalid/", "queue": f"pusher_test_{suffix}",
        "dead_letter_exchange": f"pusher_test_dlx_{suffix}", "dead_letter_queue": f"pusher_test_dlq_{suffix}",
        "prefetch": 50, "push_workers": 2, "registration_lanes": 1,
    }
    values.update(changes)
    return WorkerConfig(**values)


@pytest.mark.django_db
def test_a_batch_waits_out_a_database_outage_and_requeues_when_stopping(acme_rule):
    calls = []

    def flaky(messages):
        calls.append(len(messages))
        if len(calls) <= 2:
            raise OperationalError("server closed the connection unexpectedly")
        return [Handled(Action.ACK, "reg_success", "ok") for _ in messages]

    worker = Worker(_config(), handler=message_process, batch_handler=flaky)
    messages = [RawMessage(body=b"{}")] * 3
    assert [h.outcome for h in worker._handle_batch(messages)] == ["ok"] * 3 and calls == [3, 3, 3]

    def down(messages):
        raise OperationalError("connection refused")

    worker = Worker(_config(), handler=message_process, batch_handler=down)
    threading.Timer(0.2, worker.stop).start()
    assert [h.action for h in worker._handle_batch(messages)] == [Action.REQUEUE] * 3


def key(body: dict[str, Any]) -> str:
    return f"registration.success.acme%2Esip%2Eexample%2Ecom.{body['Username']}"


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_lanes_keep_each_devices_order_and_ack_everything(acme_rule):
    # 6 devices x 5 registrations each, interleaved, published in one go: the lanes take them in
    # batches that hold several registrations of one device.
    bodies = [reg(device, token(100 * device + turn)) for turn in range(5) for device in range(6)]
    with consumer_running(registration_lanes=2) as consumer, broker_channel() as channel:
        for body in bodies:
            publish(channel, "registrar", key(body), body)
        assert wait_for(lambda: PushToken.objects.filter(device__account_id=ACCOUNT).count() == 30)
        assert wait_for(lambda: consumer.worker._unsettled == set())
        consumer.worker.stop()
        consumer.thread.join(timeout=30)
        # Stopped and disconnected: anything left unacked would be back in the queue by now.
        assert channel.queue_declare(consumer.config.queue, passive=True).method.message_count == 0
    for device in range(6):
        stored = Device.objects.get(device_id=f"dev{device:04d}")
        assert stored.push["Token-ID"] == token(100 * device + 4)
        assert PushToken.objects.filter(device=stored, active=True).get().token == token(100 * device + 4)


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_a_batch_that_fails_to_write_is_handled_one_message_at_a_time(acme_rule):
    # A row the database refuses (simulated: nothing real in a reg_success passes the checks and
    # then fails to write) sinks the batch's transaction; the lane then handles each message
    # alone, so only that one is dead-lettered.
    poison = reg(99, token(99))

    def refusing(message: RawMessage) -> Handled:
        try:
            if poison["Msg-ID"].encode() in message.body:
                raise DataError("value refused")
            return message_process(message)
        finally:
            connection.close()

    def refusing_batch(messages: list[RawMessage]) -> list[Handled]:
        try:
            if any(poison["Msg-ID"].encode() in m.body for m in messages):
                raise DataError("value refused")
            return message_process_batch(messages)
        finally:
            connection.close()

    bodies = [reg(n, token(n)) for n in range(10)]
    bodies.insert(5, poison)
    with consumer_running(handler=refusing, batch_handler=refusing_batch, registration_lanes=1) as consumer, \
            broker_channel() as channel:
        for body in bodies:
            publish(channel, "registrar", key(body), body)
        assert wait_for(lambda: Device.objects.filter(account_id=ACCOUNT).count() == 10)
        assert wait_for(lambda: consumer.worker.dead_lettered == 1)
        letters = dead_letters(channel, consumer.config.dead_letter_queue, 1)
    assert [json.loads(body)["Msg-ID"] for _, body in letters] == [poison["Msg-ID"]]
    assert letters[0][0]["x-pusher-reason"] == "internal error: DataError"
