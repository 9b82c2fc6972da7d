"""Encrypted-at-rest model field for secret material (certificates, keys, service accounts)."""

import logging
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models, transaction

PREFIX = "fernet:"
UNDECRYPTABLE_REASON = (
    "stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY (was the key changed without keeping the old one?)"
)

log = logging.getLogger(__name__)


class UndecryptableSecret(str):
    """What a row's secret loads as when no key of FIELD_ENCRYPTION_KEY decrypts it: a placeholder
    text (never the secret), with the ciphertext kept so that saving the row again writes it back
    unchanged (restoring the old key then still recovers it). Test with `is_undecryptable`."""

    stored: str

    def __new__(cls, stored: str) -> "UndecryptableSecret":
        marker = super().__new__(cls, f"<{UNDECRYPTABLE_REASON}>")
        marker.stored = stored
        return marker

    def __reduce__(self):  # copies and pickles keep the ciphertext, not the placeholder
        return (UndecryptableSecret, (self.stored,))


def is_undecryptable(value: object) -> bool:
    return isinstance(value, UndecryptableSecret)


@lru_cache(maxsize=256)
def _undecryptable_logged(stored: str, keys: tuple[str, ...]) -> None:
    # Once per ciphertext and key list, not on every page that lists the row.
    log.warning("a stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY; it loads as undecryptable "
                "(keep the old key in the list and run credentials_reencrypt, or upload the secret again)")


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be one or more comma-separated Fernet keys "
            "(32 url-safe base64-encoded bytes each; make one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEY))


def encrypt(value: str) -> str:
    return PREFIX + fernet().encrypt(value.encode()).decode()


class Undecryptable(ImproperlyConfigured):
    """No key of FIELD_ENCRYPTION_KEY decrypts a value this field wrote."""


def decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        raise ImproperlyConfigured("an encrypted field holds a value that was not written by this field")
    try:
        return fernet().decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken as exc:
        raise Undecryptable(
            "a stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY: "
            "was the key changed without keeping the old one in the list?"
        ) from exc


def rotate(stored: str) -> str:
    """Re-encrypt with the first key (MultiFernet.rotate), for key rotation."""
    return PREFIX + fernet().rotate(stored[len(PREFIX):].encode()).decode()


class EncryptedTextField(models.TextField):
    """Stores text encrypted with Fernet (AES-128-CBC + HMAC); the database row never holds it in clear.

    Decryption happens when the row is loaded; never put this field in list_display, serializers'
    readable fields or logs. A value no key decrypts (the key was changed without keeping the old
    one) loads as an UndecryptableSecret rather than failing every query that loads the row.
    """

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        try:
            return decrypt(value)
        except Undecryptable:  # (a malformed key list, or a value this field never wrote, still raise)
            _undecryptable_logged(value, tuple(settings.FIELD_ENCRYPTION_KEY))
            return UndecryptableSecret(value)

    def get_prep_value(self, value):
        if is_undecryptable(value):
            return value.stored  # written back as it was read: the ciphertext is not ours to lose
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)


def rows_reencrypt(model: type[models.Model], *, field: str, label: str) -> tuple[int, tuple[str, ...]]:
    """Rewrite `field` (an EncryptedTextField) of every row of `model` with the first
    FIELD_ENCRYPTION_KEY, the key rotation step (`manage.py credentials_reencrypt`): reading
    decrypts with any key of the list, writing encrypts with the first. Rows locked meanwhile, in
    one transaction. Returns (rows rewritten, `label` of each row no key decrypts, left as it is)."""
    count, undecryptable = 0, []
    with transaction.atomic():
        rows = model._default_manager.select_for_update().values_list("pk", label, field).order_by(label)
        for pk, name, stored in rows.iterator():
            if is_undecryptable(stored):
                undecryptable.append(str(name))
                continue
            model._default_manager.filter(pk=pk).update(**{field: stored})
            count += 1
    return count, tuple(undecryptable)
