"""The APNs transport against the fake APNs server: real TLS, real HTTP/2 (h2), real JWTs."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import socket
import ssl
import stat
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx
import hyperframe.frame
import pytest

from push.providers import apns
from push.providers.apns import (
    REASONS,
    ApnsClient,
    ApnsCredential,
    ApnsRequest,
    ApnsResult,
    Outcome,
    classify_response,
)
from push.providers.h2transport import GoAwayError, H2Transport, StreamResetError
from tests.fakes import conftest_apns
from tests.fakes.apns import Answer, ClientCert, FakeApns, FakeCA, TokenKey, generate_token_key

# Also bound here so the module does not depend on tests/conftest.py loading the fixture plugin.
fake_apns = conftest_apns.fake_apns

TOKEN = "a1b2" * 16
BUNDLE = "com.acme.phone"


def apns_request(fake: FakeApns, **overrides: Any) -> ApnsRequest:
    values: dict[str, Any] = {
        "token": TOKEN,
        "topic": f"{BUNDLE}.voip",
        "push_type": "voip",
        "priority": 10,
        "expiration": 0,
        "collapse_id": None,
        "extra_headers": {},
        "body": {"aps": {"alert": {"loc-key": "IC_SIL", "loc-args": ["+15555555555"]}}, "call-id": "c1"},
        "host": fake.host,
        "port": fake.port,
    }
    values.update(overrides)
    return ApnsRequest(**values)


def cert_credential(cert: ClientCert, cache_key: str = "cert:1") -> ApnsCredential:
    return ApnsCredential(kind="certificate", cert_pem=cert.cert_pem, key_pem=cert.key_pem, cache_key=cache_key)


def token_credential(key: TokenKey, cache_key: str = "p8:1") -> ApnsCredential:
    return ApnsCredential(kind="token",
        key_pem=key.key_pem, key_id=key.key_id, team_id=key.team_id, cache_key=cache_key
    )


@pytest.fixture
def client(fake_apns: FakeApns) -> Iterator[ApnsClient]:
    apns_client = ApnsClient(ca_file=fake_apns.ca_file, connect_timeout=5)
    yield apns_client
    apns_client.close()


@pytest.fixture
def voip_cert(fake_apns: FakeApns) -> ClientCert:
    return fake_apns.ca.issue_client_cert(BUNDLE, voip=True)


@pytest.fixture
def token_key(fake_apns: FakeApns) -> TokenKey:
    return fake_apns.new_token_key(team_id="TEAM123456")


# ---- success paths ------------------------------------------------------------------------------


def test_each_request_on_a_connection_has_its_own_quoted_path_and_headers(
    fake_apns: FakeApns, client: ApnsClient, voip_cert: ClientCert
) -> None:
    # Requests on one connection share the request to its origin (H2Transport.send); the path and
    # the fields are each push's own, a token with path characters stays inside the path, and a
    # header that cannot be sent fails its push alone.
    credential = cert_credential(voip_cert)
    first = client.send_sync(apns_request(fake_apns, collapse_id="one"), credential, timeout=5)
    second = client.send_sync(apns_request(fake_apns, token="ab/../c?d#e", collapse_id="two"), credential, timeout=5)
    broken = client.send_sync(apns_request(fake_apns, collapse_id="caf\u00e9"), credential, timeout=5)
    third = client.send_sync(apns_request(fake_apns, collapse_id="three"), credential, timeout=5)

    # (the fake, like APNs, refuses a token that is not hex; the unsendable header retires the
    # connection, so the third push goes on a new one, with an origin request of its own)
    assert [first.outcome, second.outcome, third.outcome] == [Outcome.SENT, Outcome.BAD_DEVICE_TOKEN, Outcome.SENT]
    assert broken.outcome is Outcome.FAILED and broken.reason == "InternalError"
    assert [(seen.path, seen.headers["apns-collapse-id"]) for seen in fake_apns.requests] == [
        (f"/3/device/{TOKEN}", "one"), ("/3/device/ab%2F..%2Fc%3Fd%23e", "two"), (f"/3/device/{TOKEN}", "three"),
    ]



def test_certificate_auth_sends_exact_headers_and_body_over_http2(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
) -> None:
    apns_id = str(uuid.uuid4()).upper()
    request = apns_request(
        fake_apns,
        collapse_id="call-42",
        apns_id=apns_id,
        expiration=1_900_000_000,
        extra_headers={"X-Pusher-Trace": "t-1"},
        body={"aps": {"alert": {"loc-key": "IC_SIL"}, "sound": "ring.caf"}, "caller": "Zoë"},
    )

    result = client.send_sync(request, cert_credential(voip_cert), timeout=5)

    assert result.outcome is Outcome.SENT
    assert (result.status, result.reason, result.apns_id) == (200, "", apns_id)
    assert result.latency_s > 0
    [seen] = fake_apns.requests
    assert seen.method == "POST"
    assert seen.path == f"/3/device/{TOKEN}"
    assert seen.authority == f"{fake_apns.host}:{fake_apns.port}"
    apns_headers = {name: value for name, value in seen.headers.items() if name.startswith("apns-")}
    assert apns_headers == {
        "apns-topic": "com.acme.phone.voip",
        "apns-push-type": "voip",
        "apns-priority": "10",
        "apns-expiration": "1900000000",
        "apns-collapse-id": "call-42",
        "apns-id": apns_id,
    }
    assert seen.headers["x-pusher-trace"] == "t-1"
    assert "authorization" not in seen.headers
    # Compact JSON, UTF-8 rather than \u escapes (the payload limit counts bytes).
    assert (
        seen.raw_body == '{"aps":{"alert":{"loc-key":"IC_SIL"},"sound":"ring.caf"},"caller":"Zoë"}'.encode()
    )
    assert seen.body == request.body
    assert seen.auth == "certificate"
    assert f"UID={BUNDLE}" in (seen.cert_subject or "")
    assert f"CN=VoIP Services: {BUNDLE}" in (seen.cert_subject or "")
    # ALPN really negotiated h2 on the TLS connection, and the fake parsed HTTP/2 frames from it.
    assert seen.alpn == "h2"
    [connection] = fake_apns.connections
    assert connection.alpn == "h2"
    assert connection.tls_version in ("TLSv1.2", "TLSv1.3")


def test_token_auth_jwt_is_verified_and_reused(
    fake_apns: FakeApns,
    client: ApnsClient,
    token_key: TokenKey,
) -> None:
    credential = token_credential(token_key)

    results = [client.send_sync(apns_request(fake_apns), credential, timeout=5) for _ in range(3)]

    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    seen = fake_apns.requests
    assert {r.auth for r in seen} == {"token"}
    assert len({r.headers["authorization"] for r in seen}) == 1, "one JWT for all pushes"
    assert seen[0].headers["authorization"].startswith("bearer ")
    assert seen[0].jwt_header == {"alg": "ES256", "kid": token_key.key_id, "typ": "JWT"}
    assert seen[0].jwt_claims is not None
    assert seen[0].jwt_claims["iss"] == "TEAM123456"
    assert abs(seen[0].jwt_claims["iat"] - time.time()) < 60
    assert len({r.connection_id for r in seen}) == 1


def test_token_is_refreshed_after_max_age(fake_apns: FakeApns, token_key: TokenKey) -> None:
    start = time.time() - 56 * 60  # still accepted by APNs (< 1 h) ...
    now = [start]
    client = ApnsClient(ca_file=fake_apns.ca_file, jwt_max_age=50 * 60, clock=lambda: now[0])
    try:
        credential = token_credential(token_key)
        assert client.send_sync(apns_request(fake_apns), credential, timeout=5).outcome is Outcome.SENT
        now[0] = start + 49 * 60
        assert client.send_sync(apns_request(fake_apns), credential, timeout=5).outcome is Outcome.SENT
        now[0] = start + 51 * 60  # ... and past our 50 min limit: a new token
        assert client.send_sync(apns_request(fake_apns), credential, timeout=5).outcome is Outcome.SENT
    finally:
        client.close()

    first, second, third = fake_apns.requests
    assert first.headers["authorization"] == second.headers["authorization"]
    assert third.headers["authorization"] != second.headers["authorization"]
    assert first.jwt_claims is not None and third.jwt_claims is not None
    assert first.jwt_claims["iat"] == int(start)
    assert third.jwt_claims["iat"] == int(start + 51 * 60)


def test_expired_provider_token_is_refreshed_once_and_retried(
    fake_apns: FakeApns,
    token_key: TokenKey,
) -> None:
    # The first token is minted by a clock two hours slow; the refresh uses the right time.
    readings = iter([time.time() - 7200])
    client = ApnsClient(ca_file=fake_apns.ca_file, clock=lambda: next(readings, time.time()))
    try:
        result = client.send_sync(apns_request(fake_apns), token_credential(token_key), timeout=5)
    finally:
        client.close()

    assert result.outcome is Outcome.SENT
    rejected, accepted = fake_apns.requests
    assert (rejected.status, rejected.reason) == (403, "ExpiredProviderToken")
    assert accepted.status == 200
    assert accepted.headers["authorization"] != rejected.headers["authorization"]


def test_expired_provider_token_after_refresh_fails(fake_apns: FakeApns, token_key: TokenKey) -> None:
    client = ApnsClient(ca_file=fake_apns.ca_file, clock=lambda: time.time() - 7200)
    try:
        result = client.send_sync(apns_request(fake_apns), token_credential(token_key), timeout=5)
    finally:
        client.close()

    assert (result.outcome, result.status, result.reason) == (Outcome.FAILED, 403, "ExpiredProviderToken")
    assert "clock" in result.description
    assert len(fake_apns.requests) == 2, "refreshed exactly once"


# ---- APNs error answers -------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["Unregistered", "ExpiredToken"])
def test_410_is_token_invalid_with_timestamp(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
    reason: str,
) -> None:
    fake_apns.set_token_answer(TOKEN, Answer(status=410, reason=reason, timestamp_ms=1_700_000_000_123))

    result = client.send_sync(apns_request(fake_apns), cert_credential(voip_cert), timeout=5)

    assert (result.outcome, result.status, result.reason) == (Outcome.TOKEN_INVALID, 410, reason)
    assert result.timestamp_ms == 1_700_000_000_123
    assert result.apns_id


def test_400_bad_device_token_is_not_token_invalid(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
) -> None:
    # Real validation by the fake: not a hex token.
    result = client.send_sync(
        apns_request(fake_apns, token="not-a-token"), cert_credential(voip_cert), timeout=5
    )

    assert (result.outcome, result.status, result.reason) == (Outcome.BAD_DEVICE_TOKEN, 400, "BadDeviceToken")
    assert "sandbox" in result.description
    assert result.timestamp_ms is None


def test_403_is_failed(fake_apns: FakeApns, client: ApnsClient, voip_cert: ClientCert) -> None:
    fake_apns.enqueue(Answer.error(403, "BadCertificateEnvironment"))

    result = client.send_sync(apns_request(fake_apns), cert_credential(voip_cert), timeout=5)

    assert (result.outcome, result.status, result.reason) == (
        Outcome.FAILED,
        403,
        "BadCertificateEnvironment",
    )
    assert result.description == REASONS["BadCertificateEnvironment"][1]


def test_unknown_signing_key_is_invalid_provider_token(fake_apns: FakeApns, client: ApnsClient) -> None:
    unregistered = generate_token_key(team_id="TEAM123456")  # never added to the fake

    result = client.send_sync(apns_request(fake_apns), token_credential(unregistered), timeout=5)

    assert (result.outcome, result.status, result.reason) == (Outcome.FAILED, 403, "InvalidProviderToken")
    assert len(fake_apns.requests) == 1, "only ExpiredProviderToken triggers a refresh"


@pytest.mark.parametrize(
    ("overrides", "status", "reason"),
    [
        ({"topic": ""}, 400, "MissingTopic"),
        ({"push_type": "ringing"}, 400, "InvalidPushType"),
        ({"priority": 7}, 400, "BadPriority"),
        ({"topic": "com.other.app.voip"}, 400, "TopicDisallowed"),
        ({"body": {"pad": "x" * 6000}}, 413, "PayloadTooLarge"),
    ],
)
def test_request_errors_are_failed(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
    overrides: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    result = client.send_sync(apns_request(fake_apns, **overrides), cert_credential(voip_cert), timeout=5)

    assert (result.outcome, result.status, result.reason) == (Outcome.FAILED, status, reason)


@pytest.mark.parametrize(
    ("status", "reason"),
    [(429, "TooManyRequests"), (500, "InternalServerError"), (503, "ServiceUnavailable"), (503, "Shutdown")],
)
def test_transient_statuses_are_retry(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
    status: int,
    reason: str,
) -> None:
    fake_apns.enqueue(Answer.error(status, reason))

    result = client.send_sync(apns_request(fake_apns), cert_credential(voip_cert), timeout=5)

    assert (result.outcome, result.status, result.reason) == (Outcome.RETRY, status, reason)


def test_token_renewed_too_often_is_retry(fake_apns: FakeApns, token_key: TokenKey) -> None:
    fake_apns.enforce_token_renewal_interval = True
    credential = token_credential(token_key)
    # Two clients (think: two processes) each mint their own token for the same key.
    first, second = ApnsClient(ca_file=fake_apns.ca_file), ApnsClient(ca_file=fake_apns.ca_file)
    try:
        assert first.send_sync(apns_request(fake_apns), credential, timeout=5).outcome is Outcome.SENT
        result = second.send_sync(apns_request(fake_apns), credential, timeout=5)
    finally:
        first.close()
        second.close()

    assert (result.outcome, result.status, result.reason) == (
        Outcome.RETRY,
        429,
        "TooManyProviderTokenUpdates",
    )


# ---- transport failures -------------------------------------------------------------------------


def test_stalled_answer_times_out_as_retry_and_next_push_works(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
) -> None:
    credential = cert_credential(voip_cert)
    fake_apns.enqueue(Answer.stall())

    started = time.monotonic()
    result = client.send_sync(apns_request(fake_apns), credential, timeout=0.5)
    elapsed = time.monotonic() - started

    assert (result.outcome, result.status, result.reason) == (Outcome.RETRY, None, "Timeout")
    assert 0.45 <= elapsed < 3.0  # bounded by the timeout, with slack for a loaded machine
    assert 0.45 <= result.latency_s < 3.0
    assert client.send_sync(apns_request(fake_apns), credential, timeout=5).outcome is Outcome.SENT


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (Answer.reset(), "ConnectionLost"),
        (Answer.goaway("Shutdown"), "Shutdown"),
        (Answer.goaway(None), "GoAway"),
    ],
    ids=["reset", "goaway-shutdown", "goaway-bare"],
)
def test_broken_connection_is_retry_then_replaced(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
    failure: Answer,
    reason: str,
) -> None:
    credential = cert_credential(voip_cert)
    assert client.send_sync(apns_request(fake_apns), credential, timeout=5).outcome is Outcome.SENT
    fake_apns.enqueue(failure)

    broken = client.send_sync(apns_request(fake_apns), credential, timeout=5)
    after = client.send_sync(apns_request(fake_apns), credential, timeout=5)

    assert (broken.outcome, broken.status, broken.reason) == (Outcome.RETRY, None, reason)
    assert after.outcome is Outcome.SENT
    first, second, third = fake_apns.requests
    assert first.connection_id == second.connection_id != third.connection_id
    assert len(fake_apns.connections) == 2


def test_goaway_with_a_permanent_reason_is_failed(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
) -> None:
    fake_apns.enqueue(Answer.goaway("BadCertificate"))

    result = client.send_sync(apns_request(fake_apns), cert_credential(voip_cert), timeout=5)

    assert (result.outcome, result.reason) == (Outcome.FAILED, "BadCertificate")
    assert "GOAWAY" in result.description


def test_concurrent_sends_share_one_http2_connection(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
) -> None:
    fake_apns.set_default(Answer.ok(delay=0.2))
    credential = cert_credential(voip_cert)
    tokens = [f"{i:064x}" for i in range(50)]

    async def push_all() -> list[ApnsResult]:
        return await asyncio.gather(
            *(client.send(apns_request(fake_apns, token=token), credential, timeout=10) for token in tokens)
        )

    started = time.monotonic()
    results = asyncio.run(push_all())
    elapsed = time.monotonic() - started

    assert [r.outcome for r in results] == [Outcome.SENT] * 50
    seen = fake_apns.requests
    assert sorted(r.token or "" for r in seen) == tokens
    assert len({r.connection_id for r in seen}) == 1
    assert len(fake_apns.connections) == 1
    # 50 answers of 200 ms each: in flight together, not one after the other (10 s; slack for load).
    assert elapsed < 5.0


def test_send_sync_from_many_threads(fake_apns: FakeApns, client: ApnsClient, voip_cert: ClientCert) -> None:
    fake_apns.set_default(Answer.ok(delay=0.05))
    credential = cert_credential(voip_cert)
    tokens = [f"{i:064x}" for i in range(40)]

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(
            pool.map(
                lambda t: client.send_sync(apns_request(fake_apns, token=t), credential, timeout=5), tokens
            )
        )

    assert [r.outcome for r in results] == [Outcome.SENT] * 40
    assert len({r.connection_id for r in fake_apns.requests}) == 1


def test_untrusted_server_certificate_is_refused(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    client = ApnsClient()  # system trust store only: the fake's CA is unknown
    try:
        result = client.send_sync(apns_request(fake_apns), cert_credential(voip_cert), timeout=5)
    finally:
        client.close()

    assert (result.outcome, result.reason) == (Outcome.FAILED, "TLSVerifyFailed")
    assert "certificate" in result.description
    assert fake_apns.requests == []


def test_wrong_ca_bundle_is_refused(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    other = FakeCA("Some other CA")
    client = ApnsClient(ca_file=other.ca_file)
    try:
        result = client.send_sync(apns_request(fake_apns), cert_credential(voip_cert), timeout=5)
    finally:
        client.close()
        other.cleanup()

    assert (result.outcome, result.reason) == (Outcome.FAILED, "TLSVerifyFailed")
    assert fake_apns.requests == []


@pytest.mark.parametrize("tls_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_client_certificate_from_another_ca_is_refused(
    fake_apns: FakeApns,
    tls_max: ssl.TLSVersion,
) -> None:
    other = FakeCA("Not Apple")
    foreign = other.issue_client_cert(BUNDLE, key_type="ec")
    other.cleanup()
    # With TLS 1.3 the refusal reaches the client only after its side of the handshake is done;
    # it must still be reported as a refused certificate, not as a transient network error.
    with FakeApns.start(ca=fake_apns.ca, tls_max_version=tls_max) as server:
        client = ApnsClient(ca_file=server.ca_file)
        try:
            result = client.send_sync(apns_request(server), cert_credential(foreign), timeout=5)
        finally:
            client.close()
        assert server.requests == []
        assert server.handshake_failures == ["CERTIFICATE_VERIFY_FAILED"]

    assert (result.outcome, result.status, result.reason) == (Outcome.FAILED, None, "TLSCertificateRejected")
    assert "client certificate" in result.description


def test_unusable_credentials_fail_without_raising(fake_apns: FakeApns, client: ApnsClient) -> None:
    other_key = generate_token_key().key_pem
    cert = fake_apns.ca.issue_client_cert(BUNDLE, key_type="ec")
    mismatched = ApnsCredential(kind="certificate", cert_pem=cert.cert_pem, key_pem=other_key, cache_key="bad:1")
    garbage = ApnsCredential(kind="token", key_pem="not a key", key_id="ABC", team_id="TEAM", cache_key="bad:2")

    for credential in (mismatched, garbage):
        result = client.send_sync(apns_request(fake_apns), credential, timeout=5)
        assert (result.outcome, result.reason) == (Outcome.FAILED, "BadCredential")
        assert "BEGIN" not in result.description
    assert fake_apns.requests == []


# ---- connection management, secrets, configuration ----------------------------------------------


def test_invalidate_drops_the_credentials_connection(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
) -> None:
    credential = cert_credential(voip_cert)
    client.send_sync(apns_request(fake_apns), credential, timeout=5)
    client.send_sync(apns_request(fake_apns), credential, timeout=5)

    client.invalidate(credential.cache_key)
    client.send_sync(apns_request(fake_apns), credential, timeout=5)

    first, second, third = fake_apns.requests
    assert first.connection_id == second.connection_id != third.connection_id


def test_close_answers_pushes_in_flight(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    client = ApnsClient(ca_file=fake_apns.ca_file)
    fake_apns.set_default(Answer.stall())
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(
            client.send_sync, apns_request(fake_apns), cert_credential(voip_cert), timeout=30
        )
        fake_apns.wait_for_requests(1)
        started = time.monotonic()
        client.close()
        result = pending.result(timeout=5)

    assert (result.outcome, result.reason) == (Outcome.RETRY, "ClientClosed")
    assert time.monotonic() - started < 5
    with pytest.raises(RuntimeError, match="closed"):
        client.send_sync(apns_request(fake_apns), cert_credential(voip_cert), timeout=1)


def test_certificate_temp_file_is_private_and_removed(
    fake_apns: FakeApns,
    client: ApnsClient,
    voip_cert: ClientCert,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, int]] = []
    real_unlink = os.unlink

    def spy_unlink(path: str, *args: Any, **kwargs: Any) -> None:
        seen.append((path, stat.S_IMODE(os.stat(path).st_mode)))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", spy_unlink)
    assert (
        client.send_sync(apns_request(fake_apns), cert_credential(voip_cert), timeout=5).outcome
        is Outcome.SENT
    )

    [(path, mode)] = seen
    assert mode == 0o600
    assert not os.path.exists(path)


def test_secrets_are_not_in_repr(voip_cert: ClientCert, token_key: TokenKey) -> None:
    for credential in (cert_credential(voip_cert), token_credential(token_key)):
        text = repr(credential) + str(credential)
        assert "BEGIN" not in text
        assert credential.key_pem.splitlines()[1] not in text
        assert credential.cache_key in text
    assert voip_cert.cert_pem.splitlines()[1] not in repr(cert_credential(voip_cert))


@pytest.mark.parametrize("age", [10 * 60, 19 * 60, 61 * 60])
def test_jwt_max_age_must_respect_apple_limits(age: int) -> None:
    with pytest.raises(ValueError, match="20 minutes"):
        ApnsClient(jwt_max_age=age)


def test_process_wide_client_is_configured_once(fake_apns: FakeApns) -> None:
    apns.configure(ca_file=fake_apns.ca_file, connect_timeout=3, jwt_max_age=30 * 60)
    try:
        first = apns.get_client()
        assert apns.get_client() is first
        assert first._jwt_max_age == 30 * 60
        apns.configure(ca_file=None)
        assert apns.get_client() is not first
    finally:
        apns.configure()


def test_reason_table_covers_apples_documented_reasons() -> None:
    documented = {
        400: "BadCollapseId BadDeviceToken BadExpirationDate BadMessageId BadPriority BadTopic "
        "DeviceTokenNotForTopic DuplicateHeaders IdleTimeout InvalidPushType MissingDeviceToken "
        "MissingTopic PayloadEmpty TopicDisallowed",
        403: "BadCertificate BadCertificateEnvironment ExpiredProviderToken Forbidden InvalidProviderToken "
        "MissingProviderToken UnrelatedKeyIdInToken BadEnvironmentKeyIdInToken",
        404: "BadPath",
        405: "MethodNotAllowed",
        410: "ExpiredToken Unregistered",
        413: "PayloadTooLarge",
        429: "TooManyProviderTokenUpdates TooManyRequests",
        500: "InternalServerError",
        503: "ServiceUnavailable Shutdown",
    }
    names = {name for group in documented.values() for name in group.split()}
    assert set(REASONS) == names
    assert all(description.strip() for _, description in REASONS.values())
    assert classify_response(410, "Unregistered")[0] is Outcome.TOKEN_INVALID
    assert classify_response(400, "BadDeviceToken")[0] is Outcome.BAD_DEVICE_TOKEN
    assert classify_response(403, "InvalidProviderToken")[0] is Outcome.FAILED
    # Undocumented reasons fall back on the status.
    assert classify_response(503, "SomethingNew")[0] is Outcome.RETRY
    assert classify_response(410, "")[0] is Outcome.TOKEN_INVALID
    assert classify_response(400, "SomethingNew")[0] is Outcome.FAILED


# ---- the HTTP/2 transport under the client -------------------------------------------------------


class TinyH2Server:
    """A minimal HTTP/2 + TLS server for what the fake APNs cannot script: a small stream window
    handed back late, a GOAWAY that leaves earlier streams open, a reset of a single stream.

    It runs on the test's own event loop; the test awaits each request (`next_request`) and answers
    it (`respond`, `reset`, `goaway`) when it chooses.
    """

    def __init__(self, ca: FakeCA, *, max_streams: int = 100, window: int = 65535, ack_delay: float = 0.0) -> None:
        cert_file, key_file = ca.issue_server_cert()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_file, key_file)
        self.context.set_alpn_protocols(["h2"])
        self.max_streams, self.window, self.ack_delay = max_streams, window, ack_delay
        self.connections: list[TinyH2Protocol] = []
        self.requests: asyncio.Queue[tuple[TinyH2Protocol, int, bytes]] = asyncio.Queue()
        self.errors: list[Exception] = []
        self.port = 0

    async def __aenter__(self) -> TinyH2Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: TinyH2Protocol(self), "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for connection in self.connections:
            connection.transport.abort()

    async def next_request(self) -> tuple[TinyH2Protocol, int, bytes]:
        return await asyncio.wait_for(self.requests.get(), timeout=5)

    def url(self, path: str = "/3/device/ab") -> str:
        return f"https://127.0.0.1:{self.port}{path}"


class TinyH2Protocol(asyncio.Protocol):
    def __init__(self, server: TinyH2Server) -> None:
        self.server = server
        self.bodies: dict[int, bytearray] = {}
        self.data_frames = 0
        self.resets: list[int] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.append(self)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.server.window,
            },
        )
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:  # e.g. the client overran a window or a stream limit
            self.server.errors.append(exc)
            self.flush()
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self.data_frames += 1
                self.bodies[event.stream_id] += event.data
                size, stream_id = event.flow_controlled_length, event.stream_id
                asyncio.get_running_loop().call_later(self.server.ack_delay, self._hand_back, size, stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.server.requests.put_nowait((self, event.stream_id, bytes(self.bodies[event.stream_id])))
            elif isinstance(event, h2.events.StreamReset):
                self.resets.append(event.stream_id)
        self.flush()

    def _hand_back(self, size: int, stream_id: int) -> None:
        if self.lost:
            return
        self.h2.increment_flow_control_window(size)
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.h2.increment_flow_control_window(size, stream_id=stream_id)
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.lost:
            self.transport.write(data)

    def respond(self, stream_id: int, status: int = 200) -> None:
        self.h2.send_headers(stream_id, [(b":status", str(status).encode()), (b"apns-id", b"ID-%d" % stream_id)])
        self.h2.send_data(stream_id, b'{"reason":"Test"}' if status != 200 else b"", end_stream=True)
        self.flush()

    def reset(self, stream_id: int, error_code: int = h2.errors.ErrorCodes.REFUSED_STREAM) -> None:
        self.h2.reset_stream(stream_id, error_code)
        self.flush()

    def goaway(self, last_stream_id: int, reason: str) -> None:
        # Built by hand: h2 refuses to answer anything once it has sent GOAWAY itself, and this
        # server goes on answering the streams up to last_stream_id, as RFC 9113 6.8 allows.
        frame = hyperframe.frame.GoAwayFrame(
            last_stream_id=last_stream_id, error_code=0, additional_data=json.dumps({"reason": reason}).encode()
        )
        self.transport.write(frame.serialize())


@pytest.fixture(scope="module")
def tiny_ca() -> Iterator[FakeCA]:
    ca = FakeCA("Tiny H2 test CA")
    yield ca
    ca.cleanup()


def h2_transport(ca: FakeCA, **options: Any) -> H2Transport:
    return H2Transport(ssl_context=ssl.create_default_context(cafile=ca.ca_file), connect_timeout=5, **options)


def test_transport_waits_for_window_updates_before_sending_more_body(tiny_ca: FakeCA) -> None:
    body = bytes(range(256)) * 12  # 3 KB against a 256-byte stream window

    async def scenario() -> None:
        async with TinyH2Server(tiny_ca, window=256, ack_delay=0.02) as server:
            transport = h2_transport(tiny_ca)
            pending = [
                asyncio.create_task(transport.handle_async_request(httpx.Request("POST", server.url(), content=body)))
                for _ in range(2)
            ]
            for _ in range(2):
                protocol, stream_id, received = await server.next_request()
                assert received == body
                protocol.respond(stream_id)
            responses = await asyncio.gather(*pending)
            await transport.aclose()
            assert [r.status_code for r in responses] == [200, 200]
            assert server.errors == [], "the client never overran the window"
            [protocol] = server.connections
            assert protocol.data_frames >= 2 * len(body) // 256

    asyncio.run(scenario())


def test_transport_goaway_fails_later_streams_and_lets_earlier_ones_finish(tiny_ca: FakeCA) -> None:
    async def scenario() -> None:
        async with TinyH2Server(tiny_ca) as server:
            transport = h2_transport(tiny_ca)

            def post() -> asyncio.Task[httpx.Response]:
                request = httpx.Request("POST", server.url(), content=b"{}")
                return asyncio.create_task(transport.handle_async_request(request))

            first = post()
            first_seen = await server.next_request()
            second = post()
            second_seen = await server.next_request()
            (protocol, first_id, _), (_, second_id, _) = first_seen, second_seen
            protocol.goaway(last_stream_id=first_id, reason="Shutdown")
            protocol.respond(first_id)

            assert (await first).status_code == 200, "a stream below last_stream_id still completes"
            with pytest.raises(GoAwayError) as raised:
                await second
            event = raised.value.args[1]
            assert isinstance(event, h2.events.ConnectionTerminated)
            assert event.last_stream_id == first_id < second_id
            assert apns._classify_exception(raised.value)[:2] == (Outcome.RETRY, "Shutdown")

            third = post()
            new_protocol, third_id, _ = await server.next_request()
            assert new_protocol is not protocol, "no new stream on a connection that sent GOAWAY"
            new_protocol.respond(third_id)
            assert (await third).status_code == 200
            await asyncio.sleep(0.1)
            assert protocol.lost, "the drained connection is closed"
            await transport.aclose()

    asyncio.run(scenario())


def test_transport_request_waiting_for_a_stream_moves_to_a_new_connection_on_goaway(tiny_ca: FakeCA) -> None:
    async def scenario() -> None:
        async with TinyH2Server(tiny_ca, max_streams=1) as server:
            transport = h2_transport(tiny_ca)
            requests = [httpx.Request("POST", server.url(), content=b"{}") for _ in range(2)]
            first = asyncio.create_task(transport.handle_async_request(requests[0]))
            protocol, first_id, _ = await server.next_request()
            queued = asyncio.create_task(transport.handle_async_request(requests[1]))
            await asyncio.sleep(0.05)
            assert server.requests.empty(), "the second request waits for the only stream"

            protocol.goaway(last_stream_id=first_id, reason="Shutdown")
            protocol.respond(first_id)
            new_protocol, queued_id, _ = await server.next_request()
            new_protocol.respond(queued_id)

            assert [(await first).status_code, (await queued).status_code] == [200, 200]
            assert new_protocol is not protocol
            assert server.errors == []
            await transport.aclose()

    asyncio.run(scenario())


def test_transport_stream_reset_fails_only_that_stream(tiny_ca: FakeCA) -> None:
    async def scenario() -> None:
        async with TinyH2Server(tiny_ca) as server:
            transport = h2_transport(tiny_ca)
            pending = [
                asyncio.create_task(transport.handle_async_request(httpx.Request("POST", server.url(), content=b"{}")))
                for _ in range(2)
            ]
            (protocol, reset_id, _), (_, answered_id, _) = [await server.next_request() for _ in range(2)]
            protocol.reset(reset_id)
            protocol.respond(answered_id, status=410)
            reset, answered = await asyncio.gather(*pending, return_exceptions=True)
            await transport.aclose()

        assert isinstance(reset, StreamResetError)
        assert isinstance(reset.args[1], h2.events.StreamReset)
        assert apns._classify_exception(reset)[:2] == (Outcome.RETRY, "StreamReset")
        assert isinstance(answered, httpx.Response)
        assert answered.status_code == 410
        assert answered.headers["apns-id"] == f"ID-{answered_id}"
        assert answered.read() == b'{"reason":"Test"}'
        assert len(server.connections) == 1

    asyncio.run(scenario())


def test_requests_beyond_max_concurrent_streams_wait_in_order(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    tokens = [f"{i:064x}" for i in range(8)]
    with FakeApns.start(ca=fake_apns.ca, max_concurrent_streams=2, delay=0.15) as server:
        client = ApnsClient(ca_file=server.ca_file)
        credential = cert_credential(voip_cert)

        async def push_all() -> list[ApnsResult]:
            pushes = []
            for token in tokens:  # started one after the other, so the queue order is known
                pushes.append(asyncio.ensure_future(client.send(apns_request(server, token=token), credential)))
                await asyncio.sleep(0.005)
            return await asyncio.gather(*pushes)

        try:
            started = time.monotonic()
            results = asyncio.run(push_all())
            elapsed = time.monotonic() - started
        finally:
            client.close()
        seen = server.requests

    # The fake's h2 enforces its limit: a client that opened a third stream would lose the connection.
    assert [r.outcome for r in results] == [Outcome.SENT] * 8
    assert len(server.connections) == 1
    assert [r.token for r in seen] == tokens, "queued requests go out first come, first served"
    assert elapsed >= 4 * 0.15 * 0.9  # two at a time


def _burst_after_one(server: FakeApns, client: ApnsClient, credential: ApnsCredential, count: int) -> list[ApnsResult]:
    """One push (the connection opens and says its stream limit), then `count` at once."""

    async def push_all() -> list[ApnsResult]:
        first = await client.send(apns_request(server, token="ff" * 32), credential)
        rest = await asyncio.gather(
            *(client.send(apns_request(server, token=f"{i:064x}"), credential) for i in range(count))
        )
        return [first, *rest]

    try:
        return asyncio.run(push_all())
    finally:
        client.close()


def test_a_connection_full_at_its_stream_limit_gets_siblings(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    """Every stream taken at a real capacity limit (SPREAD_MIN_STREAMS or more): the pushes beyond it
    go out at once on more connections to the same origin instead of queueing on the first."""
    with FakeApns.start(ca=fake_apns.ca, max_concurrent_streams=100, delay=0.3) as server:
        results = _burst_after_one(server, ApnsClient(ca_file=server.ca_file), cert_credential(voip_cert), 250)
        per_connection = collections.Counter(r.connection_id for r in server.requests)

    # The fake's h2 enforces its limit: a connection carrying a 101st stream would be torn down.
    assert [r.outcome for r in results] == [Outcome.SENT] * 251
    assert len(server.connections) == 3
    assert sorted(per_connection.values()) == [50, 100, 101]


def test_siblings_stop_at_max_connections_and_the_rest_wait(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    with FakeApns.start(ca=fake_apns.ca, max_concurrent_streams=100, delay=0.2) as server:
        client = ApnsClient(ca_file=server.ca_file, max_connections=2)
        results = _burst_after_one(server, client, cert_credential(voip_cert), 250)

    assert [r.outcome for r in results] == [Outcome.SENT] * 251
    assert len(server.connections) == 2


def test_requests_that_waited_for_the_connection_go_before_a_newcomer(fake_apns: FakeApns) -> None:
    """First come, first served across the handshake: a request started just as the connection opens
    (it finds the connection ready) must not take the one stream before those that waited for it."""
    waited, newcomer = [f"{i:064x}" for i in range(3)], "ee" * 32
    with FakeApns.start(ca=fake_apns.ca, max_concurrent_streams=1, delay=0.02) as server:
        transport = H2Transport(ssl_context=ssl.create_default_context(cafile=server.ca_file), connect_timeout=5)

        def post(token: str) -> Any:
            request = httpx.Request("POST", f"https://{server.address}/3/device/{token}", content=b'{"aps":{}}')
            return asyncio.ensure_future(transport.handle_async_request(request))

        async def scenario() -> None:
            gate, pushes = asyncio.Event(), []
            connect = transport._connect

            async def gated_connect() -> Any:
                await gate.wait()
                conn = await connect()
                pushes.append(post(newcomer))  # runs before the waiters are woken: the race
                return conn

            transport._connect = gated_connect  # type: ignore[method-assign]
            pushes.extend(post(token) for token in waited)
            await asyncio.sleep(0.05)  # all three wait for the connection
            gate.set()
            await asyncio.gather(*pushes)
            await transport.aclose()

        asyncio.run(scenario())
        seen = [r.token for r in server.requests]
    assert seen == [*waited, newcomer]


def test_cancelled_request_frees_its_stream_for_the_next(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    stalled, waiting, later = "aa" * 32, "bb" * 32, "cc" * 32
    with FakeApns.start(ca=fake_apns.ca, max_concurrent_streams=1) as server:
        server.set_token_answer(stalled, Answer.stall())
        cert = cert_credential(voip_cert)
        transport = H2Transport(
            ssl_context=ApnsClient(ca_file=server.ca_file)._certificate_ssl_context(cert), connect_timeout=5
        )

        def post(token: str) -> Any:
            url = f"https://{server.host}:{server.port}/3/device/{token}"
            headers = {"apns-topic": f"{BUNDLE}.voip", "apns-push-type": "voip"}
            return transport.handle_async_request(httpx.Request("POST", url, headers=headers, content=b'{"aps":{}}'))

        async def scenario() -> list[int]:
            stuck = asyncio.create_task(post(stalled))
            await asyncio.sleep(0.1)
            queued = asyncio.create_task(post(waiting))
            gives_up = asyncio.create_task(post("dd" * 32))
            await asyncio.sleep(0.1)
            gives_up.cancel()  # leaves the queue without taking anyone's turn
            stuck.cancel()  # the caller's timeout: the stream is reset and its slot goes to `queued`
            with contextlib.suppress(asyncio.CancelledError):
                await stuck
            statuses = [(await queued).status_code, (await post(later)).status_code]
            await transport.aclose()
            return statuses

        statuses = asyncio.run(scenario())
        seen = server.requests

    assert statuses == [200, 200]
    assert [r.token for r in seen] == [stalled, waiting, later]
    assert len({r.connection_id for r in seen}) == 1, "one stream reset, the connection kept"


def test_many_concurrent_pushes_on_one_connection(
    fake_apns: FakeApns, client: ApnsClient, voip_cert: ClientCert
) -> None:
    fake_apns.set_default(Answer.ok(delay=0.05))
    credential = cert_credential(voip_cert)

    async def push_all(round_: int) -> list[ApnsResult]:
        return await asyncio.gather(
            *(
                client.send(apns_request(fake_apns, token=f"{round_:04x}{i:060x}"), credential, timeout=10)
                for i in range(300)
            )
        )

    results = [result for round_ in range(3) for result in asyncio.run(push_all(round_))]

    assert [r.outcome for r in results] == [Outcome.SENT] * 900
    assert len({r.apns_id for r in results}) == 900
    assert len(fake_apns.connections) == 1
    [[conn]] = client._connections.values()
    assert conn.transport._current is not None
    # h2's table of streams is purged as they close: it does not grow with the number of pushes.
    assert len(conn.transport._current.h2.streams) <= 2 * 300 + 64


def test_lost_connection_fails_every_stream_in_flight(
    fake_apns: FakeApns, client: ApnsClient, voip_cert: ClientCert
) -> None:
    fake_apns.set_default(Answer.ok(delay=2.0))
    fake_apns.enqueue(Answer.reset(delay=0.2))
    credential = cert_credential(voip_cert)

    async def push_all() -> list[ApnsResult]:
        first = asyncio.ensure_future(client.send(apns_request(fake_apns), credential, timeout=5))
        await asyncio.sleep(0.05)  # the reset is scripted for the first request to arrive
        others = [client.send(apns_request(fake_apns), credential, timeout=5) for _ in range(3)]
        return await asyncio.gather(first, *others)

    results = asyncio.run(push_all())

    assert [(r.outcome, r.reason) for r in results] == [(Outcome.RETRY, "ConnectionLost")] * 4
    assert max(r.latency_s for r in results) < 1.5


def test_idle_connection_is_closed_and_reopened(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    client = ApnsClient(ca_file=fake_apns.ca_file, idle_timeout=0.2)
    credential = cert_credential(voip_cert)
    try:
        assert client.send_sync(apns_request(fake_apns), credential, timeout=5).outcome is Outcome.SENT
        time.sleep(0.6)
        assert fake_apns.connections[0].closed_at is not None
        assert client.send_sync(apns_request(fake_apns), credential, timeout=5).outcome is Outcome.SENT
    finally:
        client.close()

    first, second = fake_apns.requests
    assert first.connection_id != second.connection_id


def test_connect_timeout_and_refused_connection(fake_apns: FakeApns, voip_cert: ClientCert) -> None:
    credential = cert_credential(voip_cert)
    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes TCP handshakes; TLS never gets an answer
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]
        closed.close()
        client = ApnsClient(ca_file=fake_apns.ca_file, connect_timeout=0.3)
        try:
            hangs = client.send_sync(apns_request(fake_apns, port=silent.getsockname()[1]), credential, timeout=5)
            refused = client.send_sync(apns_request(fake_apns, port=refused_port), credential, timeout=5)
        finally:
            client.close()

    assert (hangs.outcome, hangs.reason) == (Outcome.RETRY, "ConnectTimeout")
    assert hangs.latency_s < 2
    assert (refused.outcome, refused.reason) == (Outcome.RETRY, "ConnectError")


def test_transport_works_under_httpx_async_client(fake_apns: FakeApns) -> None:
    async def scenario() -> httpx.Response:
        context = ssl.create_default_context(cafile=fake_apns.ca_file)
        async with httpx.AsyncClient(transport=H2Transport(ssl_context=context, connect_timeout=5)) as http:
            return await http.post(f"https://{fake_apns.address}/3/device/{TOKEN}", content=b'{"aps":{}}')

    response = asyncio.run(scenario())

    # No certificate and no provider token: a real HTTP/2 answer all the same.
    assert (response.status_code, response.json()["reason"]) == (403, "MissingProviderToken")
    assert response.http_version == "HTTP/2"
    assert response.headers["apns-id"]
