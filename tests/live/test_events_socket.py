"""/ws/events/ through the real ASGI application (auth and origin checks included) with
Channels' WebsocketCommunicator, fed by the one event helper, core.events.event_publish."""

import json
import logging

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import transaction

from core.events import event_publish
from pusher_site.asgi import application
from pusher_site.consumers import CLOSE_FORBIDDEN

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def session_headers(client, django_user_model):
    """Headers of a browser logged in as `kind` (staff, plain user or nobody), same-origin."""

    def make(kind: str, origin: bytes = b"http://testserver") -> list[tuple[bytes, bytes]]:
        headers = [(b"origin", origin), (b"host", b"testserver")]
        if kind == "anonymous":
            return headers
        user = django_user_model.objects.create_user(
            f"{kind}-user", password="a-long-password-123", is_staff=(kind == "staff")
        )
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        return [*headers, (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())]

    return make


def run(scenario, *args):
    """Run an async scenario from a sync test: database work inside it (sync_to_async, and the
    auth middleware's lookups) comes back to this thread and its test database connection."""
    return async_to_sync(scenario)(*args)


async def connected(headers, path="/ws/events/"):
    communicator = WebsocketCommunicator(application, path, headers=headers)
    ok, code = await communicator.connect()
    return communicator, ok, code


def publish(*events):
    for event_type, fields in events:
        event_publish(event_type, **fields)


@pytest.mark.parametrize("kind", ["anonymous", "plain"])
def test_anonymous_and_non_staff_are_refused(in_memory_layer, session_headers, kind):
    headers = session_headers(kind)

    async def scenario():
        communicator, ok, code = await connected(headers)
        assert (ok, code) == (False, CLOSE_FORBIDDEN)

    run(scenario)


def test_staff_is_accepted_and_receives_events(in_memory_layer, session_headers):
    headers = session_headers("staff")

    async def scenario():
        communicator, ok, _ = await connected(headers)
        assert ok
        await sync_to_async(publish)(("push.sent", {"app": "com.acme", "call_id": "c1", "latency_ms": 12.25}))
        event = await communicator.receive_json_from()
        assert event["type"] == "push.sent" and event["app"] == "com.acme" and event["call_id"] == "c1"
        assert event["latency_ms"] == 12.25 and isinstance(event["time"], float)
        await communicator.disconnect()

    run(scenario)


def test_a_foreign_origin_is_refused_even_for_staff(in_memory_layer, session_headers):
    headers = session_headers("staff", origin=b"http://evil.example")

    async def scenario():
        _, ok, _ = await connected(headers)
        assert not ok

    run(scenario)


def test_events_arrive_in_the_order_they_were_published(in_memory_layer, session_headers):
    headers = session_headers("staff")

    async def scenario():
        communicator, ok, _ = await connected(headers)
        assert ok
        await sync_to_async(publish)(*[("push.sent", {"call_id": f"call-{i}"}) for i in range(30)])
        got = [(await communicator.receive_json_from())["call_id"] for _ in range(30)]
        assert got == [f"call-{i}" for i in range(30)]
        assert await communicator.receive_nothing()
        await communicator.disconnect()

    run(scenario)


def test_events_leave_only_after_the_transaction_commits(in_memory_layer, session_headers):
    headers = session_headers("staff")

    async def scenario():
        communicator, ok, _ = await connected(headers)
        assert ok
        block = transaction.atomic()
        await sync_to_async(block.__enter__)()
        await sync_to_async(publish)(("registration.updated", {"account": "a1", "device": "d1"}))
        assert await communicator.receive_nothing(timeout=0.2)
        await sync_to_async(block.__exit__)(None, None, None)
        assert (await communicator.receive_json_from())["device"] == "d1"

        rolled_back = transaction.atomic()
        await sync_to_async(rolled_back.__enter__)()
        await sync_to_async(publish)(("registration.updated", {"account": "a1", "device": "never"}))
        await sync_to_async(transaction.set_rollback)(True)
        await sync_to_async(rolled_back.__exit__)(None, None, None)
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()

    run(scenario)


EVENTS = [
    ("push.sent", {"app": "com.acme", "account": "acc1", "call_id": "1"}),
    ("push.failed", {"app": "com.acme", "account": "acc2", "call_id": "2"}),
    ("push.sent", {"app": "com.other", "account": "acc1", "call_id": "3"}),
    ("registration.updated", {"app": "com.acme", "account": "acc1", "device": "d"}),
    ("kazoo.sync_failed", {"account": "acc1", "device": "d"}),
    ("push.expired", {"app": "com.acme", "account": "acc1", "call_id": "4"}),
]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"types": ["push.sent"]}, ["1", "3"]),
        ({"types": ["push.sent", "push.expired"], "app": "com.acme"}, ["1", "4"]),
        ({"app": "com.acme"}, ["1", "2", "registration.updated", "4"]),
        ({"account": "acc1"}, ["1", "3", "registration.updated", "kazoo.sync_failed", "4"]),
        ({"account": "acc1", "types": ["kazoo.sync_failed", "push.failed"]}, ["kazoo.sync_failed"]),
        ({}, ["1", "2", "3", "registration.updated", "kazoo.sync_failed", "4"]),
    ],
)
def test_client_filters_by_type_app_and_account(in_memory_layer, session_headers, flt, expected):
    headers = session_headers("staff")

    async def scenario():
        communicator, ok, _ = await connected(headers)
        assert ok
        await communicator.send_json_to({"filter": flt})
        ack = await communicator.receive_json_from()
        assert ack == {"filter": {k: (sorted(v) if k == "types" else v) for k, v in flt.items()}}
        await sync_to_async(publish)(*EVENTS)
        got = []
        while not await communicator.receive_nothing(timeout=0.2):
            event = await communicator.receive_json_from()
            got.append(event.get("call_id") or event["type"])
        assert got == expected
        await communicator.disconnect()

    run(scenario)


def test_filter_on_the_url_and_filter_errors(in_memory_layer, session_headers):
    headers = session_headers("staff")

    async def scenario():
        communicator, ok, _ = await connected(headers, "/ws/events/?types=push.failed,push.expired&account=acc1")
        assert ok
        await sync_to_async(publish)(*EVENTS)
        assert (await communicator.receive_json_from())["call_id"] == "4"
        assert await communicator.receive_nothing(timeout=0.2)

        await communicator.send_json_to({"filter": {"types": ["push.nope"]}})
        answer = await communicator.receive_json_from()
        assert "unknown event type" in answer["error"]
        assert answer["filter"] == {"account": "acc1", "types": ["push.expired", "push.failed"]}
        await communicator.send_json_to({"hello": 1})
        assert "filter" in (await communicator.receive_json_from())["error"]
        await communicator.disconnect()

    run(scenario)


def test_events_carry_no_secrets():
    with pytest.raises(ValueError, match="unknown event field"):
        event_publish("push.sent", secret="s3cr3t")
    with pytest.raises(ValueError, match="unknown event type"):
        event_publish("push.bogus")


def test_an_unmasked_token_is_masked_on_the_way_out(in_memory_layer, session_headers):
    headers = session_headers("staff")

    async def scenario():
        communicator, ok, _ = await connected(headers)
        assert ok
        await sync_to_async(publish)(("token.deactivated", {"token": "0123456789abcdef0123456789abcdef"}))
        assert (await communicator.receive_json_from())["token"] == "012345…cdef"
        await communicator.disconnect()

    run(scenario)


def test_events_cross_processes_through_redis(redis_layer, session_headers):
    """With channels-redis the helper sends from its own thread (never blocking the caller);
    the websocket's loop receives through Redis, as daphne does when the consumer publishes."""
    headers = session_headers("staff")

    async def scenario():
        communicator, ok, _ = await connected(headers)
        assert ok
        await sync_to_async(publish, thread_sensitive=False)(
            *[("push.sent", {"call_id": f"r{i}", "app": "com.acme"}) for i in range(10)]
        )
        got = [(await communicator.receive_json_from(timeout=5))["call_id"] for _ in range(10)]
        assert got == [f"r{i}" for i in range(10)]
        await communicator.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ({"text": "{not json"}, "not JSON"),
        ({"text": ""}, "not JSON"),
        ({"bytes": b'{"filter": {}}'}, "binary frames are not accepted"),
        ({"text": "[1, 2]"}, "expected a JSON object, not an array"),
        ({"text": "42"}, "expected a JSON object, not a number"),
        ({"text": "[" * 5000 + "]" * 5000}, "nested deeper than 64"),
        ({"text": json.dumps({"filter": {"app": "x" * 70_000}})}, "frame too large"),
    ],
)
def test_a_bad_frame_is_answered_and_the_socket_stays_open(in_memory_layer, session_headers, caplog, frame, detail):
    headers = session_headers("staff")

    async def scenario():
        communicator, ok, _ = await connected(headers)
        assert ok
        await communicator.send_input({"type": "websocket.receive", **frame})  # as daphne delivers a frame
        answer = await communicator.receive_json_from()
        assert answer["type"] == "error" and detail in answer["detail"] and "filter" in answer["detail"]
        # Still open, still answering: a filter, then events.
        await communicator.send_json_to({"filter": {"types": ["push.sent"]}})
        assert await communicator.receive_json_from() == {"filter": {"types": ["push.sent"]}}
        await sync_to_async(publish)(("push.sent", {"call_id": "after-bad-frame"}))
        assert (await communicator.receive_json_from())["call_id"] == "after-bad-frame"
        await communicator.disconnect()

    with caplog.at_level(logging.WARNING, logger="pusher_site.consumers"):
        run(scenario)
    (record,) = [r for r in caplog.records if r.name == "pusher_site.consumers"]
    assert "bad frame from staff-user refused" in record.getMessage() and detail in record.getMessage()
    assert record.exc_info is None and "\n" not in record.getMessage()
