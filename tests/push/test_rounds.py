"""Answers read in rounds (push/providers/rounds.py): the selector on its own, then the APNs client
against the fake APNs (real TLS and HTTP/2)."""

from __future__ import annotations

import asyncio
import selectors
import socket
from collections.abc import Iterator

import pytest

from push.providers.apns import ApnsClient, Outcome
from push.providers.rounds import RoundSelector, event_loop
from tests.fakes import conftest_apns
from tests.fakes.apns import Answer, ClientCert, FakeApns
from tests.push.test_apns_provider import BUNDLE, apns_request, cert_credential

fake_apns = conftest_apns.fake_apns

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for ours, theirs in made:
        ours.close()
        theirs.close()


def pair(pairs: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    pairs.append((ours, theirs))
    return ours, theirs


def ready(selector: RoundSelector, timeout: float | None = 0) -> dict[int, int]:
    return {key.fd: events for key, events in selector.select(timeout)}


def test_a_deferred_socket_is_read_at_the_round_and_the_others_at_once(pairs: list) -> None:
    clock = Clock()
    selector = RoundSelector(0.1, clock=clock)
    provider, provider_peer = pair(pairs)
    broker, broker_peer = pair(pairs)
    selector.register(provider, READ, "provider")
    selector.register(broker, READ, "broker")
    selector.defer(provider.fileno())
    provider_peer.send(b"answer")
    broker_peer.send(b"push_req")

    # The broker's input is read at once; the provider's waits for the round.
    assert ready(selector) == {broker.fileno(): READ}
    clock.now += 0.05
    assert ready(selector) == {broker.fileno(): READ}
    clock.now += 0.06
    assert ready(selector) == {broker.fileno(): READ, provider.fileno(): READ}
    # The next round is a round later.
    assert ready(selector) == {broker.fileno(): READ}
    assert selector.get_key(provider).data == "provider"


def test_a_wait_never_outlasts_the_next_round(pairs: list) -> None:
    selector = RoundSelector(0.05)
    provider, provider_peer = pair(pairs)
    selector.register(provider, READ)
    selector.defer(provider.fileno())
    provider_peer.send(b"answer")

    # select(None) would block forever on an idle loop; here it ends with the round's answer.
    found: dict[int, int] = {}
    for _ in range(3):
        found = ready(selector, None)
        if found:
            break
    assert found == {provider.fileno(): READ}


def test_a_deferred_sockets_writes_and_undeferred_reads_are_immediate(pairs: list) -> None:
    clock = Clock()
    selector = RoundSelector(0.1, clock=clock)
    provider, provider_peer = pair(pairs)
    selector.register(provider, READ | WRITE)
    selector.defer(provider.fileno())
    provider_peer.send(b"answer")

    assert ready(selector) == {provider.fileno(): WRITE}
    selector.undefer(provider.fileno())
    assert ready(selector) == {provider.fileno(): READ | WRITE}
    assert selector.deferred() == frozenset()


def test_an_unregistered_socket_is_not_left_deferred(pairs: list) -> None:
    # Its number may be reused by the next socket opened (a database connection, say).
    clock = Clock()
    selector = RoundSelector(0.1, clock=clock)
    provider, provider_peer = pair(pairs)
    selector.register(provider, READ)
    selector.defer(provider.fileno())
    selector.unregister(provider)
    assert selector.deferred() == frozenset()

    selector.register(provider, READ)
    provider_peer.send(b"data")
    assert ready(selector) == {provider.fileno(): READ}
    with pytest.raises(KeyError):
        selector.register(provider, READ)
    selector.unregister(provider)
    with pytest.raises(KeyError):
        selector.unregister(provider)


def test_modify_keeps_the_deferral(pairs: list) -> None:
    clock = Clock()
    selector = RoundSelector(0.1, clock=clock)
    provider, provider_peer = pair(pairs)
    selector.register(provider, READ, "first")
    selector.defer(provider.fileno())
    selector.modify(provider, READ | WRITE, "second")
    provider_peer.send(b"answer")

    assert ready(selector) == {provider.fileno(): WRITE}
    assert selector.get_key(provider).data == "second"
    assert provider.fileno() in selector.deferred()


def test_an_event_loop_runs_on_it(pairs: list) -> None:
    loop, rounds = event_loop(0.05)
    assert rounds is not None
    try:
        ours, theirs = pair(pairs)
        ours.setblocking(False)

        async def read_deferred() -> bytes:
            rounds.defer(ours.fileno())
            theirs.send(b"answer")
            return await loop.sock_recv(ours, 100)

        assert loop.run_until_complete(read_deferred()) == b"answer"
    finally:
        loop.close()
    plain, none = event_loop(0)
    plain.close()
    assert none is None


# ---- the APNs client -------------------------------------------------------------------------


@pytest.fixture
def voip_cert(fake_apns: FakeApns) -> ClientCert:
    return fake_apns.ca.issue_client_cert(BUNDLE, voip=True)


def test_an_answer_waits_for_the_round_and_an_idle_connection_is_read_at_once(
    fake_apns: FakeApns, voip_cert: ClientCert
) -> None:
    client = ApnsClient(ca_file=fake_apns.ca_file, connect_timeout=5, answer_round_s=0.4)
    try:
        credential = cert_credential(voip_cert)
        for _ in range(2):  # on a new connection, then on one already open
            result = client.send_sync(apns_request(fake_apns), credential, timeout=5)
            assert result.outcome is Outcome.SENT
            # The fake answers at once; the answer is read at the round, not before.
            assert result.latency_s >= 0.3
        # With no stream open, the connection is read at once again (an idle one costs no wake-ups).
        assert client._rounds is not None
        assert asyncio.run_coroutine_threadsafe(_deferred(client), client.loop()).result(5) == frozenset()
    finally:
        client.close()


async def _deferred(client: ApnsClient) -> frozenset[int]:
    assert client._rounds is not None
    return client._rounds.deferred()


def test_a_connection_near_its_stream_limit_reads_at_once(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    # Answers free stream slots: a connection with half its server's limit or more taken (or a
    # request waiting for a slot) is read as the answers come, whatever the round.
    limit = fake_apns.max_concurrent_streams
    fake_apns.max_concurrent_streams = 2
    client = ApnsClient(ca_file=fake_apns.ca_file, connect_timeout=5, answer_round_s=3)
    try:
        credential = cert_credential(voip_cert)
        fake_apns.set_default(Answer.ok(delay=0.05))

        async def both() -> list:
            return await asyncio.gather(
                *(client.send(apns_request(fake_apns, token=f"{i:064x}"), credential, timeout=20) for i in range(2))
            )

        results = asyncio.run(both())
        assert [(r.outcome, r.reason) for r in results] == [(Outcome.SENT, "")] * 2
        # Answered after 50 ms and read then, not at the 3 s round.
        assert max(r.latency_s for r in results) < 2
    finally:
        client.close()
        fake_apns.max_concurrent_streams = limit


def test_no_rounds_reads_every_answer_at_once(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    client = ApnsClient(ca_file=fake_apns.ca_file, connect_timeout=5, answer_round_s=0)
    try:
        result = client.send_sync(apns_request(fake_apns), cert_credential(voip_cert), timeout=5)
        assert result.outcome is Outcome.SENT
        assert client._rounds is None
    finally:
        client.close()
