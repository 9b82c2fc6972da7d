"""Scoped tokens' services: made with a hashed key shown once, revoked, and checked at each request."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from core.errors import InvalidInput
from tenancy import services
from tenancy.models import ScopedToken, TokenState
from tenancy.selectors import scoped_tokens_in_state

pytestmark = pytest.mark.django_db

A = "3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
B = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("reseller", "reseller@example.com", None)


def test_a_token_is_made_with_its_key_hashed_and_shown_once(owner, caplog) -> None:
    caplog.set_level(logging.INFO)
    created = services.scoped_token_create(name=" Reseller X ", owner=owner, account_ids=[B, A, A],
                                           grants=["apps"])
    token, key = created.token, created.key
    assert key.startswith("pst_") and len(key) == 47
    stored = ScopedToken.objects.get(pk=token.pk)
    assert stored.name == "Reseller X" and stored.account_ids == [B, A] and stored.grants == ("apps",)
    assert stored.key_hash == services.key_hash(key) and key not in stored.key_hash
    assert key.startswith(stored.key_prefix) and len(stored.key_prefix) == 12
    assert stored.state() == TokenState.ACTIVE and stored.scope.account_ids == frozenset({A, B})
    assert key not in caplog.text and stored.key_prefix in caplog.text  # the log names it by its prefix
    # Two tokens never share a key.
    assert services.scoped_token_create(name="again", owner=owner, account_ids=[A]).key != key


@pytest.mark.parametrize("kwargs, code", [
    ({"name": ""}, "name_invalid"),
    ({"name": "x" * 101}, "name_invalid"),
    ({"name": "nul\x00"}, "name_invalid"),
    ({"owner": None}, "owner_invalid"),
    ({"account_ids": ["NOTANID"]}, "account_id_invalid"),
    ({"account_ids": []}, "account_id_invalid"),
    ({"grants": ["superpowers"]}, "grant_invalid"),
    ({"expires_at": timezone.now() - timedelta(minutes=1)}, "expiry_invalid"),
])
def test_a_bad_token_is_refused(owner, kwargs, code) -> None:
    params = {"name": "reseller", "owner": owner, "account_ids": [A], **kwargs}
    with pytest.raises(InvalidInput) as excinfo:
        services.scoped_token_create(**params)
    assert excinfo.value.code == code
    assert not ScopedToken.objects.exists()


def test_an_inactive_owner_gets_no_token(owner) -> None:
    owner.is_active = False
    owner.save()
    with pytest.raises(InvalidInput, match="active user"):
        services.scoped_token_create(name="x", owner=owner, account_ids=[A])


def test_authentication_refuses_unknown_revoked_expired_and_an_inactive_owner(owner) -> None:
    created = services.scoped_token_create(name="x", owner=owner, account_ids=[A])
    assert services.scoped_token_authenticate(key=created.key).pk == created.token.pk
    for key in ("", "pst_", created.key + "x", created.key[:-1], "Token abc", "pst_" + "a" * 200):
        with pytest.raises(services.TokenRefused, match="Invalid token"):
            services.scoped_token_authenticate(key=key)

    ScopedToken.objects.filter(pk=created.token.pk).update(expires_at=timezone.now())
    with pytest.raises(services.TokenRefused, match="expired"):
        services.scoped_token_authenticate(key=created.key)
    ScopedToken.objects.filter(pk=created.token.pk).update(expires_at=None)

    owner.is_active = False
    owner.save()
    with pytest.raises(services.TokenRefused, match="inactive"):
        services.scoped_token_authenticate(key=created.key)
    owner.is_active = True
    owner.save()

    revoked = services.scoped_token_revoke(token=created.token)
    assert revoked.state() == TokenState.REVOKED
    with pytest.raises(services.TokenRefused, match="revoked"):
        services.scoped_token_authenticate(key=created.key)
    # Revoking again changes nothing.
    assert services.scoped_token_revoke(token=created.token).revoked_at == revoked.revoked_at


def test_last_use_is_recorded_at_most_once_a_minute(owner, django_assert_num_queries) -> None:
    created = services.scoped_token_create(name="x", owner=owner, account_ids=[A])
    assert created.token.last_used_at is None
    first = services.scoped_token_authenticate(key=created.key).last_used_at
    assert first is not None
    with django_assert_num_queries(1):  # the read alone: no write within the minute
        services.scoped_token_authenticate(key=created.key)
    earlier = timezone.now() - timedelta(minutes=5)
    ScopedToken.objects.filter(pk=created.token.pk).update(last_used_at=earlier)
    services.scoped_token_authenticate(key=created.key)
    assert ScopedToken.objects.get(pk=created.token.pk).last_used_at > earlier


def test_tokens_by_state(owner) -> None:
    def make(name: str) -> ScopedToken:
        return services.scoped_token_create(name=name, owner=owner, account_ids=[A]).token

    active, expired, revoked = make("active"), make("expired"), make("revoked")
    ScopedToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.scoped_token_revoke(token=revoked)
    for state, token in ((TokenState.ACTIVE, active), (TokenState.EXPIRED, expired), (TokenState.REVOKED, revoked)):
        assert list(scoped_tokens_in_state(state=state)) == [token]
        assert ScopedToken.objects.get(pk=token.pk).state() == state
