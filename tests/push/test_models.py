"""Model rules of push and registry: uniqueness the services rely on, and the small derived properties."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.text import mask_token
from push import services
from push.models import Credential, CredentialKind, Delivery, Provider, PushApp
from registry.models import Device, PushToken, SyncStatus, UserAgentRule

# --- PushApp -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_push_app_is_unique_per_app_id_and_provider() -> None:
    PushApp.objects.create(app_id="com.acme.phone.voip.prod", provider=Provider.APPLE)

    with pytest.raises(IntegrityError), transaction.atomic():
        PushApp.objects.create(app_id="com.acme.phone.voip.prod", provider=Provider.APPLE)

    assert PushApp.objects.count() == 1


@pytest.mark.django_db
def test_the_same_app_id_may_exist_on_both_providers() -> None:
    PushApp.objects.create(app_id="com.acme.phone", provider=Provider.APPLE)
    PushApp.objects.create(app_id="com.acme.phone", provider=Provider.FIREBASE)

    assert sorted(PushApp.objects.filter(app_id="com.acme.phone").values_list("provider", flat=True)) == [
        "apple",
        "firebase",
    ]


@pytest.mark.parametrize(
    ("app_id", "topic", "expected"),
    [
        # Kazoo's rule: a blank topic is the app id without a trailing .dev/.prod.
        ("com.acme.phone.voip.prod", "", "com.acme.phone.voip"),
        ("com.acme.phone.dev", "", "com.acme.phone"),
        ("com.acme.phone.prod", "", "com.acme.phone"),
        ("com.acme.phone", "", "com.acme.phone"),
        # Only a whole trailing label is a suffix, and only one is stripped.
        ("com.acme.production", "", "com.acme.production"),
        ("com.acme.devices", "", "com.acme.devices"),
        ("com.acme.prod.phone", "", "com.acme.prod.phone"),
        ("com.acme.dev.prod", "", "com.acme.dev"),
        # An explicit topic wins, suffix or not.
        ("com.acme.phone.prod", "com.acme.other", "com.acme.other"),
        ("com.acme.phone", "com.acme.phone.dev", "com.acme.phone.dev"),
    ],
)
def test_effective_topic(app_id: str, topic: str, expected: str) -> None:
    assert PushApp(app_id=app_id, provider=Provider.APPLE, topic=topic).effective_topic == expected


# --- Credential ----------------------------------------------------------------------------------


def test_days_to_expiry() -> None:
    now = timezone.now()
    assert Credential(not_after=None).days_to_expiry is None
    assert Credential(not_after=now + timedelta(days=10, hours=1)).days_to_expiry == 10
    assert Credential(not_after=now + timedelta(hours=1)).days_to_expiry == 0
    assert Credential(not_after=now - timedelta(days=2, hours=1)).days_to_expiry < 0


def test_cannot_send_reason() -> None:
    now = timezone.now()
    assert Credential(usable=True, not_after=now + timedelta(days=90)).cannot_send_reason() == ""
    # Token keys and service accounts do not expire.
    assert Credential(usable=True, not_after=None).cannot_send_reason() == ""

    expired_on = now - timedelta(days=3)
    reason = Credential(usable=True, not_after=expired_on).cannot_send_reason()
    assert reason == f"certificate expired on {expired_on:%Y-%m-%d}"

    assert Credential(usable=False, unusable_reason="revoked by Apple").cannot_send_reason() == "revoked by Apple"
    assert Credential(usable=False).cannot_send_reason() == "credential marked unusable"


@pytest.mark.django_db
def test_a_legacy_fcm_key_is_stored_but_cannot_send() -> None:
    parsed = services.credential_parse(kind=CredentialKind.FCM_LEGACY_KEY, data="AAAAlegacy-server-key:APA91b")
    credential = services.credential_save(name="old fcm", parsed=parsed)

    credential.refresh_from_db()
    assert credential.kind == CredentialKind.FCM_LEGACY_KEY
    assert credential.usable is False
    assert "shut down" in credential.cannot_send_reason()


# --- Delivery ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "masked"),
    [
        ("", ""),
        ("abc", "…"),
        ("0123456789ab", "…"),  # 12 characters: too short to show any of it
        ("0123456789abc", "012345…9abc"),
        ("f" * 60 + "deadbeef", "ffffff…beef"),
    ],
)
def test_delivery_token_masked(token: str, masked: str) -> None:
    assert Delivery(token=token).token_masked == masked
    assert mask_token(token) == masked


# --- registry ------------------------------------------------------------------------------------


def _device(account_id: str = "a" * 32, device_id: str = "d" * 32, **kwargs: object) -> Device:
    return Device.objects.create(account_id=account_id, device_id=device_id, **kwargs)


@pytest.mark.django_db
def test_device_is_unique_per_account_and_device_id() -> None:
    _device(account_id="acct1", device_id="dev1")
    _device(account_id="acct1", device_id="dev2")
    _device(account_id="acct2", device_id="dev1")

    with pytest.raises(IntegrityError), transaction.atomic():
        _device(account_id="acct1", device_id="dev1")

    assert Device.objects.count() == 3


@pytest.mark.django_db
def test_push_token_is_unique_per_device_and_token() -> None:
    first, second = _device(device_id="dev1"), _device(device_id="dev2")
    values = {"token": "a1b2c3d4e5f6a7b8c9d0", "token_type": "apple", "app": "com.acme.phone",
              "last_seen_at": timezone.now()}
    PushToken.objects.create(device=first, **values)
    # The same token on another device is a different row (a phone moved between accounts).
    PushToken.objects.create(device=second, **values)

    with pytest.raises(IntegrityError), transaction.atomic():
        PushToken.objects.create(device=first, **values)

    assert PushToken.objects.count() == 2
    token = PushToken.objects.filter(device=first).get()
    assert token.token_masked == "a1b2c3…c9d0"
    assert values["token"] not in str(token)


@pytest.mark.django_db
def test_user_agent_rules_are_ordered_by_position_then_name() -> None:
    for name, position in [("b-rule", 20), ("z-rule", 10), ("a-rule", 20), ("last", 100), ("first", -5)]:
        UserAgentRule.objects.create(name=name, position=position, regex="^x", properties={})

    assert list(UserAgentRule.objects.values_list("name", flat=True)) == [
        "first", "z-rule", "a-rule", "b-rule", "last",
    ]


@pytest.mark.parametrize(
    ("status", "in_sync"),
    [(SyncStatus.SYNCED, True), (SyncStatus.LOCAL, True), (SyncStatus.PENDING, False), (SyncStatus.FAILED, False)],
)
def test_device_in_sync(status: str, in_sync: bool) -> None:
    assert Device(sync_status=status).in_sync is in_sync
