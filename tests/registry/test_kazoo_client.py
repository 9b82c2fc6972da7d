"""kazoo.crossbar.CrossbarClient against the fake Crossbar (Kazoo 4.3 envelopes and PATCH merge rules)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from core.errors import PusherError
from kazoo.crossbar import CrossbarClient, KazooSyncError
from tests.fakes.crossbar import FakeCrossbar

pytest_plugins = ["tests.fakes.conftest_crossbar"]

ACCOUNT = "3a9c5b1e2f4d4c6a8b0e1f2a3b4c5d6e"
DEVICE = "d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6"
PUSH = {
    "Token-App": "com.acme.phone.voip.prod",
    "Token-Type": "apple",
    "Token-ID": "a" * 64,
    "Token-Proxy": "sip:10.0.0.5:5060;transport=udp",
}


@pytest.fixture
def client(fake_crossbar: FakeCrossbar) -> Iterator[CrossbarClient]:
    client = CrossbarClient(fake_crossbar.url, fake_crossbar.api_key, timeout=2.0)
    yield client
    client.close()


def _secrets_absent(error: KazooSyncError, *secrets: str) -> None:
    for text in (str(error), repr(error), error.message, *map(str, error.args)):
        for secret in secrets:
            assert secret not in text


def test_authenticates_then_patches_push_object(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    client.device_push_set(ACCOUNT, DEVICE, PUSH)

    auth, patch = fake_crossbar.requests
    assert (auth.method, auth.path, auth.body) == (
        "PUT",
        "/v2/api_auth",
        {"data": {"api_key": fake_crossbar.api_key}},
    )
    assert (patch.method, patch.path) == ("PATCH", f"/v2/accounts/{ACCOUNT}/devices/{DEVICE}")
    assert patch.body == {"data": {"push": PUSH}}
    assert patch.header("X-Auth-Token") in fake_crossbar.issued_tokens
    assert fake_crossbar.devices[(ACCOUNT, DEVICE)]["push"] == PUSH
    assert client.account_id == fake_crossbar.account_id


def test_auth_token_is_reused(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    client.device_push_set(ACCOUNT, DEVICE, PUSH)
    client.device_push_set(ACCOUNT, "other-device", PUSH)

    assert len(fake_crossbar.auth_requests) == 1


def test_other_device_fields_are_kept(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    fake_crossbar.add_device(ACCOUNT, DEVICE, {"name": "Alice's phone", "sip": {"username": "alice"}})

    client.device_push_set(ACCOUNT, DEVICE, PUSH)

    assert fake_crossbar.devices[(ACCOUNT, DEVICE)] == {
        "id": DEVICE,
        "name": "Alice's phone",
        "sip": {"username": "alice"},
        "push": PUSH,
    }


def test_clearing_sends_empty_object(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    client.device_push_set(ACCOUNT, DEVICE, PUSH)

    client.device_push_set(ACCOUNT, DEVICE, None)

    assert fake_crossbar.requests[-1].body == {"data": {"push": {}}}
    assert fake_crossbar.devices[(ACCOUNT, DEVICE)]["push"] == {}


def test_stale_keys_are_removed_despite_kazoo_merging(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    client.device_push_set(ACCOUNT, DEVICE, {**PUSH, "Token-Public-Proxy": "sip:203.0.113.9"})

    client.device_push_set(ACCOUNT, DEVICE, PUSH)

    assert fake_crossbar.devices[(ACCOUNT, DEVICE)]["push"] == PUSH
    assert fake_crossbar.requests[-1].body == {"data": {"push": {"Token-Public-Proxy": None}}}


def test_device_get(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    client.device_push_set(ACCOUNT, DEVICE, PUSH)

    assert client.device_get(ACCOUNT, DEVICE)["push"] == PUSH


def test_expired_token_reauthenticates_once(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    client.device_push_set(ACCOUNT, DEVICE, PUSH)
    fake_crossbar.expire_tokens()

    client.device_push_set(ACCOUNT, DEVICE, {**PUSH, "Token-ID": "b" * 64})

    assert len(fake_crossbar.auth_requests) == 2
    assert fake_crossbar.devices[(ACCOUNT, DEVICE)]["push"]["Token-ID"] == "b" * 64


def test_persistent_401_raises_after_one_reauthentication(
    fake_crossbar: FakeCrossbar, client: CrossbarClient
):
    fake_crossbar.fail_next(2, 401, only="/devices/")

    with pytest.raises(KazooSyncError) as raised:
        client.device_push_set(ACCOUNT, DEVICE, PUSH)

    assert raised.value.status == 401
    assert len(fake_crossbar.auth_requests) == 2
    assert DEVICE not in {key[1] for key in fake_crossbar.devices}


def test_server_error_raises_with_status_and_kazoo_message(
    fake_crossbar: FakeCrossbar, client: CrossbarClient
):
    fake_crossbar.fail_next(1, 500, only="/devices/")

    with pytest.raises(KazooSyncError) as raised:
        client.device_push_set(ACCOUNT, DEVICE, PUSH)

    error = raised.value
    assert isinstance(error, PusherError)
    assert (error.code, error.status, error.retryable) == ("kazoo_sync_failed", 500, True)
    assert "HTTP 500" in error.message
    assert "datastore_fault" in error.message
    _secrets_absent(error, fake_crossbar.api_key, *fake_crossbar.issued_tokens)


def test_wrong_api_key_is_not_retryable_and_not_disclosed(fake_crossbar: FakeCrossbar):
    wrong_key = "f" * 64
    with CrossbarClient(fake_crossbar.url, wrong_key) as client, pytest.raises(KazooSyncError) as raised:
        client.authenticate()

    assert (raised.value.status, raised.value.retryable) == (401, False)
    assert "invalid_credentials" in raised.value.message
    _secrets_absent(raised.value, wrong_key)


def test_secrets_echoed_by_kazoo_are_redacted(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    client.authenticate()
    [token] = fake_crossbar.issued_tokens
    fake_crossbar.fail_next(1, 400, message=f"api_key {fake_crossbar.api_key} / token {token} rejected")

    with pytest.raises(KazooSyncError) as raised:
        client.device_push_set(ACCOUNT, DEVICE, PUSH)

    assert (raised.value.status, raised.value.retryable) == (400, False)
    assert "<redacted>" in raised.value.message
    _secrets_absent(raised.value, fake_crossbar.api_key, token)


def test_unknown_device_without_auto_create_is_404(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    fake_crossbar.auto_create = False

    with pytest.raises(KazooSyncError) as raised:
        client.device_push_set(ACCOUNT, DEVICE, PUSH)

    assert (raised.value.status, raised.value.retryable) == (404, False)
    assert "bad_identifier" in raised.value.message


def test_unreachable_crossbar_is_retryable():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api_key = "k" * 64
    with CrossbarClient(f"http://127.0.0.1:{port}", api_key, timeout=1.0) as client:
        with pytest.raises(KazooSyncError) as raised:
            client.device_push_set(ACCOUNT, DEVICE, PUSH)

    assert (raised.value.status, raised.value.retryable) == (None, True)
    assert "unreachable" in raised.value.message
    _secrets_absent(raised.value, api_key)


def test_slow_crossbar_times_out(fake_crossbar: FakeCrossbar):
    fake_crossbar.set_delay(1.0)
    with CrossbarClient(fake_crossbar.url, fake_crossbar.api_key, timeout=0.2) as client:
        with pytest.raises(KazooSyncError) as raised:
            client.authenticate()

    assert (raised.value.status, raised.value.retryable) == (None, True)
    assert "Timeout" in raised.value.message


def test_concurrent_callers_share_authentication(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    client.authenticate()
    fake_crossbar.expire_tokens()
    errors: list[Exception] = []

    def work(index: int) -> None:
        try:
            client.device_push_set(ACCOUNT, f"device-{index}", PUSH)
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(fake_crossbar.auth_requests) == 2  # the first one, and one after the expiry
    assert len(fake_crossbar.devices) == 12


def test_ids_cannot_walk_the_url_path(fake_crossbar: FakeCrossbar, client: CrossbarClient):
    # Not a Kazoo id: refused before any URL is built (tests/registry/test_ids.py has more).
    with pytest.raises(KazooSyncError, match="not a Kazoo id"):
        client.device_push_set(ACCOUNT, "../../api_auth", PUSH)

    assert fake_crossbar.requests == []
