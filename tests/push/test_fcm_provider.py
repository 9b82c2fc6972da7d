"""push.providers.fcm (its sender, push.providers.fcm_sender) against the fake Google (real OAuth2
JWT-bearer grant + FCM HTTP v1 over HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from push.providers.fcm import FcmCredential, FcmRequest, FcmSender, Outcome, fcm_message_build
from tests.fakes.fcm import FakeFcm, FcmAnswer, make_service_account

pytest_plugins = ["tests.fakes.conftest_fcm"]

PROJECT = "pusher-test"
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def service_account(fake_fcm_server: FakeFcm) -> dict[str, Any]:
    # One RSA key for the module: generating one per test would dominate the run time.
    return fake_fcm_server.service_account(PROJECT)


@pytest.fixture
def credential(service_account: dict[str, Any]) -> FcmCredential:
    return FcmCredential(service_account_info=service_account, project_id=PROJECT, cache_key="app-1")


@pytest.fixture
def sender(fake_fcm: FakeFcm) -> Iterator[FcmSender]:
    sender = FcmSender(fake_fcm.endpoint)
    yield sender
    sender.close()


def _request(token: str = "tok-1", **overrides: Any) -> FcmRequest:
    values: dict[str, Any] = {
        "token": token,
        "data": {
            "call-id": "abc@host",
            "proxy": "sip:10.0.0.5:5060",
            "utc_unix_timestamp_ms": "1700000000000",
        },
        "android_priority": "high",
        "ttl_s": 30,
        "collapse_key": "incoming-call",
    }
    values.update(overrides)
    return FcmRequest(**values)


def test_success_sends_exact_body_and_bearer_token(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    result = sender.send(_request(), credential, timeout=TIMEOUT)

    assert result.outcome is Outcome.SENT
    assert result.status == 200
    assert result.message_name and result.message_name.startswith(f"projects/{PROJECT}/messages/0:")
    assert 0 < result.latency_s < TIMEOUT
    [sent] = fake_fcm.requests
    assert sent.method == "POST"
    assert sent.path == f"/v1/projects/{PROJECT}/messages:send"
    assert sent.header("Authorization") == f"Bearer {fake_fcm.issued_tokens[0]}"
    assert sent.header("Content-Type").startswith("application/json")
    assert sent.body == {
        "message": {
            "token": "tok-1",
            "data": {
                "call-id": "abc@host",
                "proxy": "sip:10.0.0.5:5060",
                "utc_unix_timestamp_ms": "1700000000000",
            },
            "android": {"priority": "high", "ttl": "30s", "collapse_key": "incoming-call"},
        }
    }
    [grant] = fake_fcm.token_requests
    assert grant.path == "/token"
    assert grant.body["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"


def test_optional_fields_and_visible_notification(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    request = _request(
        ttl_s=None,
        collapse_key=None,
        android_priority="normal",
        notification={"title": "Missed call", "body": "from 1555"},
    )
    assert sender.send(request, credential, timeout=TIMEOUT).outcome is Outcome.SENT
    assert fake_fcm.requests[0].body["message"]["android"] == {"priority": "normal"}
    assert fake_fcm.requests[0].body["message"]["notification"] == {
        "title": "Missed call",
        "body": "from 1555",
    }
    assert fcm_message_build(request) == fake_fcm.requests[0].body


def test_access_token_reused_then_refreshed_after_expiry(fake_fcm: FakeFcm, credential: FcmCredential):
    now = [time.time()]
    sender = FcmSender(fake_fcm.endpoint, clock=lambda: now[0])

    for _ in range(3):
        assert sender.send(_request(), credential, timeout=TIMEOUT).outcome is Outcome.SENT
    assert len(fake_fcm.token_requests) == 1

    now[0] += 3600  # past the 3599 s the fake (like Google) grants
    assert sender.send(_request(), credential, timeout=TIMEOUT).outcome is Outcome.SENT
    assert len(fake_fcm.token_requests) == 2
    first, second = fake_fcm.issued_tokens
    assert [r.header("Authorization") for r in fake_fcm.requests] == [f"Bearer {first}"] * 3 + [
        f"Bearer {second}"
    ]


def test_token_revoked_by_google_is_refreshed_once_and_send_retried(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    assert sender.send(_request(), credential, timeout=TIMEOUT).outcome is Outcome.SENT
    fake_fcm.revoke_access_tokens()

    result = sender.send(_request(), credential, timeout=TIMEOUT)

    assert result.outcome is Outcome.SENT
    assert len(fake_fcm.token_requests) == 2
    assert [r.header("Authorization") for r in fake_fcm.requests[1:]] == [
        f"Bearer {fake_fcm.issued_tokens[0]}",
        f"Bearer {fake_fcm.issued_tokens[1]}",
    ]


def test_persistent_401_fails_after_one_refresh(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    fake_fcm.set_answer(FcmAnswer.UNAUTHENTICATED)

    result = sender.send(_request(), credential, timeout=TIMEOUT)

    assert (result.outcome, result.status, result.reason) == (Outcome.FAILED, 401, "UNAUTHENTICATED")
    assert len(fake_fcm.requests) == 2
    assert len(fake_fcm.token_requests) == 2


@pytest.mark.parametrize(
    ("answer", "outcome", "status", "reason"),
    [
        (FcmAnswer.UNREGISTERED, Outcome.TOKEN_INVALID, 404, "UNREGISTERED"),
        (FcmAnswer.INVALID_TOKEN, Outcome.TOKEN_INVALID, 400, "INVALID_ARGUMENT"),
        (FcmAnswer.INVALID_ARGUMENT, Outcome.FAILED, 400, "INVALID_ARGUMENT"),
        (FcmAnswer.SENDER_ID_MISMATCH, Outcome.TOKEN_INVALID, 403, "SENDER_ID_MISMATCH"),
        (FcmAnswer.QUOTA_EXCEEDED, Outcome.RETRY, 429, "QUOTA_EXCEEDED"),
        (FcmAnswer.UNAVAILABLE, Outcome.RETRY, 503, "UNAVAILABLE"),
        (FcmAnswer.INTERNAL, Outcome.RETRY, 500, "INTERNAL"),
        (FcmAnswer.THIRD_PARTY_AUTH_ERROR, Outcome.FAILED, 401, "THIRD_PARTY_AUTH_ERROR"),
        (FcmAnswer.PERMISSION_DENIED, Outcome.FAILED, 403, "PERMISSION_DENIED"),
    ],
)
def test_error_answers_map_to_outcomes(
    fake_fcm: FakeFcm,
    sender: FcmSender,
    credential: FcmCredential,
    answer: FcmAnswer,
    outcome: Outcome,
    status: int,
    reason: str,
):
    fake_fcm.set_answer(answer)

    result = sender.send(_request(), credential, timeout=TIMEOUT)

    assert (result.outcome, result.status, result.reason) == (outcome, status, reason)
    assert result.message_name is None
    assert str(status) in result.description
    # Only a 401 about our own access token is worth a token refresh and a second attempt.
    assert len(fake_fcm.requests) == 1


def test_quota_exceeded_reports_retry_after_without_sleeping(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    # pyfcm's own send_request() would sleep Retry-After seconds and resend; a worker must not.
    fake_fcm.set_answer(FcmAnswer.QUOTA_EXCEEDED)
    fake_fcm.set_retry_after(120)

    result = sender.send(_request(), credential, timeout=TIMEOUT)

    assert (result.outcome, result.retry_after_s) == (Outcome.RETRY, 120.0)
    assert result.latency_s < 2


def test_answers_per_token_and_one_shot(fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential):
    fake_fcm.set_answer(FcmAnswer.UNREGISTERED, token="dead")
    fake_fcm.set_answer(FcmAnswer.UNAVAILABLE, times=1)

    assert sender.send(_request("alive"), credential, timeout=TIMEOUT).outcome is Outcome.RETRY
    assert sender.send(_request("alive"), credential, timeout=TIMEOUT).outcome is Outcome.SENT
    assert sender.send(_request("dead"), credential, timeout=TIMEOUT).outcome is Outcome.TOKEN_INVALID


def test_timeout_is_retry(fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential):
    sender.send(_request(), credential, timeout=TIMEOUT)  # warm the access token
    fake_fcm.set_delay(1.0)

    result = sender.send(_request(), credential, timeout=0.2)

    assert (result.outcome, result.status, result.reason) == (Outcome.RETRY, None, "Timeout")
    assert result.latency_s < 0.9


def test_token_endpoint_down_is_retry_then_recovers_without_new_sender(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    fake_fcm.token_endpoint_down(True)

    down = sender.send(_request(), credential, timeout=TIMEOUT)

    assert down.outcome is Outcome.RETRY
    assert down.status is None
    assert down.reason == "TokenEndpointError: FCM OAuth2 token endpoint unreachable: HTTP 503"
    assert fake_fcm.token_uri in down.description
    assert down.latency_s < 1  # google-auth's own 1 s + 2 s backoff loop is cut short
    assert fake_fcm.requests == []  # nothing was sent without a token

    fake_fcm.token_endpoint_down(True, mode="close")
    dropped = sender.send(_request(), credential, timeout=TIMEOUT)
    assert dropped.outcome is Outcome.RETRY
    assert dropped.reason == "TokenEndpointError: FCM OAuth2 token endpoint unreachable: ConnectionError"

    fake_fcm.token_endpoint_down(False)
    assert sender.send(_request(), credential, timeout=TIMEOUT).outcome is Outcome.SENT


def test_slow_token_endpoint_is_bounded_by_the_send_timeout(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    fake_fcm.set_delay(1.0, token_endpoint=True)

    result = sender.send(_request(), credential, timeout=0.3)

    assert result.outcome is Outcome.RETRY
    assert result.reason == "TokenEndpointError: FCM OAuth2 token endpoint unreachable: ReadTimeout"
    assert result.latency_s < 0.9


def test_token_request_rejected_is_failed(fake_fcm: FakeFcm, sender: FcmSender):
    # A key Google does not know (deleted in the console): invalid_grant, retrying will not help.
    unknown = make_service_account(PROJECT, fake_fcm.token_uri)
    credential = FcmCredential(service_account_info=unknown, project_id=PROJECT, cache_key="deleted-key")

    result = sender.send(_request(), credential, timeout=TIMEOUT)

    assert result.outcome is Outcome.FAILED
    assert result.reason == "TokenEndpointError: FCM OAuth2 token request rejected: invalid_grant"


def test_wrong_project_is_failed_not_token_invalid(
    fake_fcm: FakeFcm, sender: FcmSender, service_account: dict
):
    credential = FcmCredential(
        service_account_info=service_account, project_id="other-project", cache_key="x"
    )

    result = sender.send(_request(), credential, timeout=TIMEOUT)

    assert (result.outcome, result.status, result.reason) == (Outcome.FAILED, 403, "PERMISSION_DENIED")
    assert fake_fcm.requests[0].path == "/v1/projects/other-project/messages:send"


def test_non_string_data_is_refused_locally(fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential):
    result = sender.send(_request(data={"alert": {"loc-key": "IC_SIL"}}), credential, timeout=TIMEOUT)

    assert (result.outcome, result.reason) == (Outcome.FAILED, "INVALID_REQUEST")
    assert fake_fcm.requests == []


def test_fake_rejects_non_string_data_like_google(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    sender.send(_request(), credential, timeout=TIMEOUT)
    bearer = fake_fcm.requests[0].header("Authorization")

    response = requests.post(
        f"{fake_fcm.endpoint}/v1/projects/{PROJECT}/messages:send",
        json={"message": {"token": "t", "data": {"n": 12}}},
        headers={"Authorization": bearer},
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["status"], error["message"]) == (
        "INVALID_ARGUMENT",
        "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
    )


def test_invalidate_forgets_the_access_token(fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential):
    sender.send(_request(), credential, timeout=TIMEOUT)
    sender.invalidate(credential.cache_key)
    sender.send(_request(), credential, timeout=TIMEOUT)

    assert len(fake_fcm.token_requests) == 2


def test_replaced_credential_under_same_cache_key_is_not_reused(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    sender.send(_request(), credential, timeout=TIMEOUT)
    rotated = fake_fcm.service_account(PROJECT)

    sender.send(_request(), FcmCredential(rotated, PROJECT, credential.cache_key), timeout=TIMEOUT)

    assert len(fake_fcm.token_requests) == 2
    assert fake_fcm.token_requests[1].body["assertion"] != fake_fcm.token_requests[0].body["assertion"]


def test_concurrent_sends_share_one_access_token(
    fake_fcm: FakeFcm, sender: FcmSender, credential: FcmCredential
):
    results = []

    def work() -> None:
        for _ in range(3):
            results.append(sender.send(_request(), credential, timeout=TIMEOUT).outcome)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [Outcome.SENT] * 24
    assert len(fake_fcm.token_requests) == 1


def test_private_key_never_in_repr(credential: FcmCredential, service_account: dict[str, Any]):
    key_body = service_account["private_key"].splitlines()[1]
    for text in (repr(credential), str(credential), f"{credential}"):
        assert "PRIVATE KEY" not in text
        assert key_body not in text
        assert "private_key=<hidden>" in text


def test_plain_http_endpoint_only_on_loopback():
    with pytest.raises(ValueError, match="https"):
        FcmSender("http://fcm.example.com")
    FcmSender("https://fcm.googleapis.com").close()


def test_tls_fake_needs_ca_file_and_verification_stays_on():
    fake = FakeFcm(tls=True).start()
    try:
        info = fake.service_account(PROJECT)
        credential = FcmCredential(info, PROJECT, "tls")

        untrusting = FcmSender(fake.endpoint)
        refused = untrusting.send(_request(), credential, timeout=TIMEOUT)
        assert refused.outcome is not Outcome.SENT
        assert "CERTIFICATE_VERIFY_FAILED" in refused.description
        assert fake.requests == []

        trusting = FcmSender(fake.endpoint, ca_file=fake.ca_file)
        assert trusting.send(_request(), credential, timeout=TIMEOUT).outcome is Outcome.SENT
    finally:
        fake.stop()


def test_warm_opens_the_send_connection_the_first_push_uses(fake_fcm: FakeFcm) -> None:
    """Google's token endpoint and FCM are different hosts, so fetching the token does not open the
    send connection: the warm-up opens that one too, and the first push goes out on it."""
    info = make_service_account(PROJECT, fake_fcm.token_uri.replace("127.0.0.1", "localhost"))
    fake_fcm.register_service_account(info)
    credential = FcmCredential(service_account_info=info, project_id=PROJECT, cache_key="warm-1")
    sender = FcmSender(fake_fcm.endpoint)
    before = fake_fcm.connections_accepted  # the server is the module's: earlier tests' count too
    try:
        sender.warm(credential, timeout=TIMEOUT)
        assert fake_fcm.connections_accepted == before + 2  # the token endpoint's, the send endpoint's
        assert sender.send(_request(), credential, timeout=TIMEOUT).outcome is Outcome.SENT
        assert fake_fcm.connections_accepted == before + 2
    finally:
        sender.close()
