"""The APNs transport against the fake APNs server: real TLS, real HTTP/2 (h2), real JWTs."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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
    return ApnsCredential.certificate(cert_pem=cert.cert_pem, key_pem=cert.key_pem, cache_key=cache_key)


def token_credential(key: TokenKey, cache_key: str = "p8:1") -> ApnsCredential:
    return ApnsCredential.token(
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
    mismatched = ApnsCredential.certificate(cert_pem=cert.cert_pem, key_pem=other_key, cache_key="bad:1")
    garbage = ApnsCredential.token(key_pem="not a key", key_id="ABC", team_id="TEAM", cache_key="bad:2")

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
