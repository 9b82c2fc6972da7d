"""Scoped API tokens: a key limited to a set of Kazoo accounts, held by a reseller's provisioning system."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenancy.scope import AccountScope


class Grant(models.TextChoices):
    """What a scoped token may do beyond its accounts' devices, tokens and deliveries. Push apps,
    credentials and User-Agent rules are global (no account owns them), so each needs its grant."""

    APPS = "apps", "push apps (read and write)"
    CREDENTIALS = "credentials", "credentials (read and write)"
    RULES_WRITE = "rules_write", "User-Agent rules (write; reading needs no grant)"


class TokenState(models.TextChoices):
    ACTIVE = "active", "active"
    EXPIRED = "expired", "expired"
    REVOKED = "revoked", "revoked"


class ScopedToken(models.Model):
    """An API key that acts as its owner, within its accounts and grants. Only a hash of the key is
    stored: the key is shown once, when the token is made (tenancy.services.scoped_token_create)."""

    name = models.CharField(max_length=100, help_text="Who holds it, e.g. the reseller's provisioning system")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scoped_tokens",
        help_text="The token acts as this user: never with more than the user's permissions",
    )
    key_prefix = models.CharField(max_length=16, editable=False,
                                  help_text="The key's first characters, to tell tokens apart")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    account_ids = models.JSONField(default=list, help_text="The Kazoo accounts whose rows it sees")
    grant_apps = models.BooleanField(default=False, help_text=Grant.APPS.label)
    grant_credentials = models.BooleanField(default=False, help_text=Grant.CREDENTIALS.label)
    grant_rules_write = models.BooleanField(default=False, help_text=Grant.RULES_WRITE.label)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from then on; empty: never")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "scoped API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @property
    def scope(self) -> AccountScope:
        return AccountScope.of(self.account_ids)

    def granted(self, grant: str) -> bool:
        return bool(getattr(self, f"grant_{Grant(grant).value}"))

    @property
    def grants(self) -> tuple[str, ...]:
        return tuple(grant.value for grant in Grant if self.granted(grant))

    def state(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return TokenState.REVOKED
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return TokenState.EXPIRED
        return TokenState.ACTIVE
