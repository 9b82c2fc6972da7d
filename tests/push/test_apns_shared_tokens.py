"""The APNs provider token shared by every process of a deployment (push.providers.apns_tokens +
the database store), against the fake APNs with Apple's renewal rule enforced: a key whose token
changes within 20 minutes gets 429 TooManyProviderTokenUpdates, which is what N consumer processes
minting their own tokens run into."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from push.models import ApnsProviderToken
from push.providers.apns import ApnsClient, Outcome
from push.providers.apns_tokens import ProviderTokens, SharedToken, key_fingerprint
from push.services.apns_tokens import DatabaseTokenStore
from tests.fakes import conftest_apns
from tests.fakes.apns import FakeApns, TokenKey
from tests.push.test_apns_provider import apns_request, token_credential

fake_apns = conftest_apns.fake_apns


@pytest.fixture
def token_key(fake_apns: FakeApns) -> TokenKey:
    return fake_apns.new_token_key(team_id="TEAM123456")


@pytest.fixture
def renewal_enforced(fake_apns: FakeApns) -> Iterator[FakeApns]:
    fake_apns.enforce_token_renewal_interval = True
    yield fake_apns
    fake_apns.enforce_token_renewal_interval = False


def _clients(fake: FakeApns, store: DatabaseTokenStore | None, n: int = 2) -> list[ApnsClient]:
    """n clients, as n consumer processes each have one."""
    return [ApnsClient(ca_file=fake.ca_file, connect_timeout=5, token_store=store) for _ in range(n)]


def _send_each(clients: list[ApnsClient], fake: FakeApns, key: TokenKey) -> list[tuple[Outcome, int | None, str]]:
    results = []
    try:
        for client in clients:
            result = client.send_sync(apns_request(fake), token_credential(key), timeout=5)
            results.append((result.outcome, result.status, result.reason))
    finally:
        for client in clients:
            client.close()
    return results


def test_processes_minting_their_own_tokens_hit_apples_renewal_limit(renewal_enforced: FakeApns,
                                                                     token_key: TokenKey) -> None:
    """Why the store exists: without it the second process's token is refused."""
    results = _send_each(_clients(renewal_enforced, None), renewal_enforced, token_key)
    assert results[0][0] is Outcome.SENT
    assert results[1][1:] == (429, "TooManyProviderTokenUpdates")


@pytest.mark.django_db(transaction=True)  # the clients read and write the store on their own threads
def test_processes_sharing_the_database_use_one_token(renewal_enforced: FakeApns, token_key: TokenKey) -> None:
    results = _send_each(_clients(renewal_enforced, DatabaseTokenStore(), n=3), renewal_enforced, token_key)
    assert [r[0] for r in results] == [Outcome.SENT] * 3
    assert len({r.headers["authorization"] for r in renewal_enforced.requests}) == 1
    row = ApnsProviderToken.objects.get(team_id=token_key.team_id, key_id=token_key.key_id)
    assert renewal_enforced.requests[0].headers["authorization"] == f"bearer {row.token}"
    assert row.key_fingerprint == key_fingerprint(token_key.key_pem)


class MemoryStore:
    """The store's contract without a database: what the processes' ProviderTokens agree through."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[str, SharedToken]] = {}
        self.offers = 0

    def current(self, *, team_id: str, key_id: str, key_fingerprint: str) -> SharedToken | None:
        row = self.rows.get((team_id, key_id))
        return row[1] if row and row[0] == key_fingerprint else None

    def offer(self, *, team_id: str, key_id: str, key_fingerprint: str, token: SharedToken,
              replacing: str | None, max_age: float, now: float) -> SharedToken:
        self.offers += 1
        row = self.rows.get((team_id, key_id))
        if row and row[0] == key_fingerprint and row[1].token != replacing and now - row[1].issued_at < max_age:
            return row[1]
        self.rows[(team_id, key_id)] = (key_fingerprint, token)
        return token


def test_a_rejected_token_is_renewed_once_for_every_process(token_key: TokenKey) -> None:
    """ExpiredProviderToken seen by two processes: the first renews, the second takes the renewal."""
    now = [1_000_000.0]
    store = MemoryStore()
    first, second = (ProviderTokens(max_age=3000, clock=lambda: now[0], store=store) for _ in range(2))
    credential = token_credential(token_key)
    old = first.fetch(credential)
    assert second.fetch(credential) == old and store.offers == 1
    now[0] += 60
    renewed = first.fetch(credential, stale=old)
    assert renewed != old
    assert second.cached(credential, stale=old) is None
    assert second.fetch(credential, stale=old) == renewed
    assert store.offers == 2


def test_an_old_or_foreign_key_token_is_not_reused(token_key: TokenKey, fake_apns: FakeApns) -> None:
    now = [1_000_000.0]
    store = MemoryStore()
    tokens = ProviderTokens(max_age=3000, clock=lambda: now[0], store=store)
    credential = token_credential(token_key)
    first = tokens.fetch(credential)
    now[0] += 3001  # older than the maximum age
    assert ProviderTokens(max_age=3000, clock=lambda: now[0], store=store).fetch(credential) != first
    other_key = fake_apns.new_token_key(team_id=token_key.team_id)  # the .p8 key replaced, same ids
    replaced = token_credential(TokenKey(team_id=token_key.team_id, key_id=token_key.key_id,
                                         key_pem=other_key.key_pem, public_key=other_key.public_key))
    latest = store.rows[(token_key.team_id, token_key.key_id)][1].token
    assert ProviderTokens(max_age=3000, clock=lambda: now[0], store=store).fetch(replaced) != latest


class BrokenStore(MemoryStore):
    def current(self, **names: object) -> SharedToken | None:  # type: ignore[override]
        raise ConnectionError("database down")


def test_a_store_that_fails_never_fails_the_push(token_key: TokenKey, caplog: pytest.LogCaptureFixture) -> None:
    tokens = ProviderTokens(max_age=3000, clock=lambda: 1_000_000.0, store=BrokenStore())
    assert tokens.fetch(token_credential(token_key)).count(".") == 2  # a JWT of this process's own
    assert "shared APNs provider tokens unavailable (ConnectionError)" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_shared_token_after_a_key_rotation(fake_apns: FakeApns, token_key: TokenKey, settings) -> None:
    """Key rotation: `credentials_reencrypt` rewrites the shared token with the new key; one written
    with a key since dropped is never sent as it is read (ciphertext): a fresh one is minted."""
    import io

    from cryptography.fernet import Fernet
    from django.core.management import call_command

    from core import fields

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [old]
    fields._fernet.cache_clear()
    _send_each(_clients(fake_apns, DatabaseTokenStore(), n=1), fake_apns, token_key)
    first = fake_apns.requests[-1].headers["authorization"]

    settings.FIELD_ENCRYPTION_KEY = [new, old]  # a new key prepended: the command rewrites with it
    fields._fernet.cache_clear()
    out = io.StringIO()
    call_command("credentials_reencrypt", stdout=out, stderr=io.StringIO())
    assert "re-encrypted 1 APNs provider token(s)" in out.getvalue()
    settings.FIELD_ENCRYPTION_KEY = [new]  # the old key dropped: the token still reads
    fields._fernet.cache_clear()
    row = ApnsProviderToken.objects.get()
    assert f"bearer {row.token}" == first

    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]  # now nothing decrypts it
    fields._fernet.cache_clear()
    assert DatabaseTokenStore().current(team_id=token_key.team_id, key_id=token_key.key_id,
                                        key_fingerprint=key_fingerprint(token_key.key_pem)) is None
    results = _send_each(_clients(fake_apns, DatabaseTokenStore(), n=1), fake_apns, token_key)
    assert [r[0] for r in results] == [Outcome.SENT]
    sent = fake_apns.requests[-1].headers["authorization"]
    assert sent != first and sent.count(".") == 2  # a JWT, not the stored ciphertext
    assert f"bearer {ApnsProviderToken.objects.get().token}" == sent  # and shared in its place

    out = io.StringIO()
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    fields._fernet.cache_clear()
    call_command("credentials_reencrypt", stdout=out, stderr=io.StringIO())
    assert "deleted 1 no key decrypts" in out.getvalue() and not ApnsProviderToken.objects.exists()
