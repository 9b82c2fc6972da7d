"""Account and device ids from the bus are Kazoo ids or the message is refused: they end up in
Crossbar URLs, where `..` made the sync PATCH the account document (issue 13)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from core.errors import InvalidInput
from kazoo.crossbar import CrossbarClient, KazooSyncError
from registry.ids import kazoo_id_check, kazoo_id_valid
from registry.models import Device
from registry.services import RegistrationResult, registration_apply_batch
from tests.amqp import sample
from tests.fakes.crossbar import FakeCrossbar

pytest_plugins = ["tests.fakes.conftest_crossbar"]

REG = sample("reg_success_kamailio_master.json")["body"]
ACCOUNT = REG["Custom-Channel-Vars"]["Account-ID"]
DEVICE = REG["Custom-Channel-Vars"]["Authorizing-ID"]
BAD_IDS = ["..", ".", "a/b", "../devices", "a%2Fb", "a?b", "a#b", "a b", "a\tb", "é", "a.b", "x" * 65]


def reg(**ccvs: str) -> dict[str, Any]:
    body = copy.deepcopy(REG)
    body["Custom-Channel-Vars"].update({key.replace("_", "-"): value for key, value in ccvs.items()})
    return body


@pytest.mark.parametrize("value", [ACCOUNT, DEVICE, "0" * 32, "my-device_01", "x" * 64])
def test_kazoo_ids_are_accepted(value: str) -> None:
    assert kazoo_id_valid(value)
    kazoo_id_check(value, name="Authorizing-ID")


@pytest.mark.parametrize("value", [*BAD_IDS, "", None, 7])
def test_anything_else_is_refused(value: object) -> None:
    assert not kazoo_id_valid(value)
    with pytest.raises(InvalidInput, match="is not a Kazoo id"):
        kazoo_id_check(value, name="Authorizing-ID")


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["Authorizing-ID", "Account-ID"])
@pytest.mark.parametrize("value", ["..", "a/b", "a%2Fb", "a?b", "a b"])
def test_a_reg_success_with_an_id_that_is_not_a_kazoo_id_is_refused(acme_rule, field: str, value: str) -> None:
    good, bad = reg(), reg(**{field: value})
    results = registration_apply_batch(fields=[bad, good])

    assert isinstance(results[0], InvalidInput)
    assert results[0].message.startswith(f"{field} {value!r} is not a Kazoo id")
    assert isinstance(results[1], RegistrationResult) and results[1].outcome == "created"
    assert list(Device.objects.values_list("account_id", "device_id")) == [(ACCOUNT, DEVICE)]


@pytest.mark.parametrize(("account", "device"), [(ACCOUNT, ".."), ("..", DEVICE), (ACCOUNT, "a/../.."),
                                                 (ACCOUNT, "%2e%2e"), (ACCOUNT, "d?x=1"), (ACCOUNT, "")])
def test_the_crossbar_client_builds_no_url_from_a_bad_id(fake_crossbar: FakeCrossbar, account: str,
                                                          device: str) -> None:
    with CrossbarClient(fake_crossbar.url, fake_crossbar.api_key, timeout=2.0) as client:
        with pytest.raises(KazooSyncError, match="not a Kazoo id") as caught:
            client.device_push_set(account, device, {"Token-ID": "a" * 64})
        assert caught.value.retryable is False
        with pytest.raises(KazooSyncError, match="not a Kazoo id"):
            client.device_get(account, device)
    assert fake_crossbar.requests == []
