"""The account scope's rule: which account ids a scope takes, and which rows it lets through."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from tenancy.scope import EVERY_ACCOUNT, SCOPE_ACCOUNTS_MAX, AccountScope, account_ids_clean

A = "3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
B = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.mark.parametrize("values, expected", [
    ([A], (A,)),
    ([A, B, A], (B, A)),  # sorted ("0f..." < "3c..."), once each
    ([f"  {A}\n"], (A,)),  # pasted with whitespace
])
def test_account_ids_are_cleaned(values, expected) -> None:
    assert account_ids_clean(values) == expected


@pytest.mark.parametrize("values", [
    [],
    [A.upper()],  # Kazoo makes them lowercase: an upper-case one is a typo or another system's id
    [A[:-1]],
    [A + "0"],
    ["g" * 32],
    ["../" + A[3:]],
    [A[:16] + " " + A[17:]],
    [A, None],
    [A, 42],
    A,  # one text, not a list of ids
    [f"{i:032x}" for i in range(SCOPE_ACCOUNTS_MAX + 1)],
])
def test_bad_account_ids_are_refused(values) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        account_ids_clean(values)
    assert excinfo.value.code == "account_id_invalid"


def test_a_scope_allows_its_accounts_only() -> None:
    scope = AccountScope.of([A])
    assert scope.restricted and scope.allows(A)
    assert not scope.allows(B) and not scope.allows("") and not scope.allows(None)
    assert not EVERY_ACCOUNT.restricted and EVERY_ACCOUNT.allows(B) and EVERY_ACCOUNT.allows("")


@pytest.mark.django_db
def test_rows_are_narrowed_through_the_field_that_holds_the_account() -> None:
    from registry.models import Device, PushToken

    mine = Device.objects.create(account_id=A, device_id="d1")
    theirs = Device.objects.create(account_id=B, device_id="d2")
    for device in (mine, theirs):
        PushToken.objects.create(device=device, token=f"tok-{device.pk}", token_type="apple", app="x",
                                 last_seen_at=device.created_at)
    scope = AccountScope.of([A])
    assert list(scope.rows(Device.objects.all())) == [mine]
    assert [t.device for t in scope.rows(PushToken.objects.all(), account_field="device__account_id")] == [mine]
    assert set(EVERY_ACCOUNT.rows(Device.objects.all())) == {mine, theirs}
    assert not AccountScope.of([]).rows(Device.objects.all()).exists()
