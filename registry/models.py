"""User-Agent rules, Kazoo devices and their push tokens."""

from django.core.exceptions import ValidationError
from django.core.validators import EMPTY_VALUES
from django.db import models

from core.fields import EncryptedTextField
from core.jsonlimits import json_object_fields_clean
from core.text import mask_token, text_storable_problem


def validate_rule_regex(value: str) -> None:
    from core.errors import RuleError
    from registry.pushobject import rule_regex_check

    # Spaces alone compile, and match any User-Agent holding them: a regex left blank by mistake.
    # (An empty reporter regex, "any device", never reaches a validator: Django skips empty values.)
    if isinstance(value, str) and not value.strip():
        raise ValidationError("a regex is required, not only whitespace")
    try:
        rule_regex_check(value)
    except RuleError as exc:
        raise ValidationError(exc.message) from exc


RULE_PROPERTIES_SHAPE = (
    'properties must be a JSON object of output key -> source name strings, e.g. {"Token-ID": "pn-tok"}'
)


def validate_rule_properties(value: object) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValidationError(RULE_PROPERTIES_SHAPE)
    problem = text_storable_problem(value)
    if problem:
        raise ValidationError(f"value {problem}")


class UserAgentRule(models.Model):
    """Kazoo's `User-Agents` entry: a regex over the User-Agent and a map of push object keys
    to the Contact parameter (or reg_success field) that holds each value.

    Sources named after RFC 8599 parameters (pn-provider, pn-prid, pn-param) are decoded
    (Linphone's `tok:voip&tok:remote` pairs, `TEAMID.bundle.voip` params)."""

    name = models.CharField(max_length=200, unique=True)
    position = models.IntegerField(default=100, db_index=True, help_text="Lower first; the first match wins")
    enabled = models.BooleanField(default=True)
    regex = models.CharField(
        max_length=1000, validators=[validate_rule_regex],
        help_text="Searched unanchored in the User-Agent; use ^ to anchor",
    )
    # {} is allowed, as Kazoo allows a rule without properties: its User-Agents match and nothing is
    # stored (a later rule does not get them). The Kazoo config import brings such rules in.
    properties = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_rule_properties],
        help_text='Output key -> source name, e.g. {"Token-ID": "pn-tok", "Token-Type": "pn-type", '
        '"Token-App": "app-id"}; {} matches and stores nothing',
    )
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "name"]
        verbose_name = "User-Agent rule"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # Django skips a blank field's validators for the values it counts as empty, null and []
        # among them: no object either (null failed in the services, [] was stored as {}).
        if not isinstance(self.properties, dict) and self.properties in EMPTY_VALUES:
            raise ValidationError({"properties": RULE_PROPERTIES_SHAPE})


class SyncStatus(models.TextChoices):
    LOCAL = "local", "local only (Kazoo not configured)"
    PENDING = "pending", "waiting to sync"
    SYNCED = "synced", "in sync"
    FAILED = "failed", "sync failing"


class Device(models.Model):
    """A Kazoo device (account + Authorizing-ID) and the push object Kazoo should hold for it."""

    account_id = models.CharField(max_length=64)
    device_id = models.CharField(max_length=64, help_text="Kazoo's Authorizing-ID (the device doc id)")
    username = models.CharField(max_length=255, blank=True, db_index=True)
    realm = models.CharField(max_length=255, blank=True, db_index=True)
    # Exactly the object Kazoo stores under the device doc's `push` key; null = none.
    push = models.JSONField(null=True, blank=True)
    push_changed_at = models.DateTimeField(null=True, blank=True)
    rule_name = models.CharField(max_length=200, blank=True)
    # Hash of everything a registration sets (push object, tokens, UA, names): an unchanged
    # re-REGISTER is recognised from this one column and costs no write.
    registration_digest = models.CharField(max_length=64, blank=True)

    sync_status = models.CharField(max_length=16, choices=SyncStatus.choices, default=SyncStatus.LOCAL)
    push_synced_at = models.DateTimeField(null=True, blank=True, help_text="When the push object last reached Kazoo")
    sync_attempts = models.PositiveIntegerField(default=0)
    sync_next_at = models.DateTimeField(null=True, blank=True, db_index=True)
    sync_error = models.CharField(max_length=500, blank=True)

    last_user_agent = models.CharField(max_length=500, blank=True)
    last_contact = models.TextField(blank=True)
    last_proxy_path = models.CharField(
        "last Proxy-Path", max_length=500, blank=True,
        help_text="The Kamailio that took the device's last registration (its reg_success's Proxy-Path)",
    )
    last_registration_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["account_id", "device_id"]
        constraints = [
            models.UniqueConstraint(fields=["account_id", "device_id"], name="device_unique_account_device")
        ]
        indexes = [
            # The devices waiting to reach Kazoo, oldest change first (the dashboard, every refresh):
            # a few rows among all the devices, so an index of those alone (bench.retention: 115-150 ms
            # for two scans of 100,000 devices before, per dashboard view).
            models.Index(
                fields=["push_changed_at", "id"], name="device_waiting_sync_idx",
                condition=models.Q(sync_status__in=["pending", "failed"]),
            ),
            # The prune's candidates (registry.retention): a device with no push object is rare among
            # live ones; without it each prune round read every device (0.6 s a round at 1M).
            models.Index(fields=["id"], name="device_no_push_idx", condition=models.Q(push__isnull=True)),
        ]

    def __str__(self) -> str:
        name = f"{self.username}@{self.realm}" if self.username else self.device_id
        return f"{name} ({self.account_id})"

    @property
    def in_sync(self) -> bool:
        return self.sync_status in (SyncStatus.SYNCED, SyncStatus.LOCAL)


class TokenKind(models.TextChoices):
    VOIP = "voip", "VoIP (PushKit)"
    REMOTE = "remote", "remote (visible)"
    PLAIN = "", "plain"


class PushToken(models.Model):
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="tokens")
    token = models.CharField(max_length=1024)
    token_type = models.CharField(max_length=32)
    app = models.CharField(max_length=255)
    kind = models.CharField(max_length=8, choices=TokenKind.choices, blank=True, default="")
    sandbox = models.BooleanField(default=False)
    proxy = models.CharField("Token-Proxy", max_length=500, blank=True)
    active = models.BooleanField(default=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivated_reason = models.CharField(max_length=300, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [models.UniqueConstraint(fields=["device", "token"], name="pushtoken_unique_device_token")]
        indexes = [
            models.Index(fields=["token"], name="pushtoken_token_idx"),
            # The prune's candidates (registry.retention): the inactive tokens, few among all.
            models.Index(fields=["id"], name="pushtoken_inactive_idx", condition=models.Q(active=False)),
        ]

    def __str__(self) -> str:
        return f"{self.token_masked} ({self.token_type} {self.app})"

    @property
    def token_masked(self) -> str:
        return mask_token(self.token)


def reporter_parameters_default() -> dict[str, str]:
    from registry.reporter import DEFAULT_PARAMETERS

    return dict(DEFAULT_PARAMETERS)


class ReporterAuth(models.TextChoices):
    URL_SECRET = "url_secret", "secret in the URL path"
    SIGNATURE = "signature", "HMAC-SHA256 signature (X-Pusher-Timestamp, X-Pusher-Signature)"


class TokenEncoding(models.TextChoices):
    AS_SENT = "as_sent", "as sent"
    BASE64 = "base64", "base64 (APNs tokens decoded to hex)"


class TokenReporter(models.Model):
    """An app whose push tokens come over HTTP instead of in its Contact (Acrobits' Push Token
    Reporter: Groundwire and white-label apps): the URL it reports to (/report/<slug>/), the secret
    that authenticates it, and how its parameters map to a device's push object, as a User-Agent
    rule maps Contact parameters. registry.reporting stores each report as a reg_success would."""

    slug = models.SlugField(max_length=64, unique=True, help_text="Its URL: /report/<slug>/...")
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=300, blank=True)
    auth = models.CharField(max_length=16, choices=ReporterAuth.choices, default=ReporterAuth.URL_SECRET)
    # Write-only: set through registry.reporting, never shown again.
    secret = EncryptedTextField(editable=False)
    parameters = models.JSONField(
        default=reporter_parameters_default,
        help_text='Key -> the request parameter holding it, e.g. {"Username": "username", "Realm": "realm", '
        '"Token-ID": "pushToken", "VoIP-Token-ID": "pushTokenIncomingCall", "Token-App": "pushappid"}',
    )
    fixed = models.JSONField(
        default=dict, blank=True,
        help_text='Values no request carries, e.g. {"Token-Type": "apple"}; a fixed Realm also limits the reporter '
        "to that realm",
    )
    token_encoding = models.CharField(max_length=8, choices=TokenEncoding.choices, default=TokenEncoding.AS_SENT)
    user_agent_regex = models.CharField(
        "User-Agent regex", max_length=1000, blank=True, validators=[validate_rule_regex],
        help_text="Registrations whose User-Agent this matches are remembered without a token (account, device, "
        "SIP username and realm), so that a report finds its device; and only those devices take this "
        "reporter's reports. Empty: any device pusher knows",
    )
    proxy = models.CharField(
        "Token-Proxy", max_length=500, blank=True,
        help_text="Token-Proxy of the push objects stored (the Kamailio the woken app registers with). Empty: the "
        "Proxy-Path of the device's last registration",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "token reporter"

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        json_object_fields_clean(self, "parameters", "fixed")
