"""Push apps, their credentials, and the delivery log."""

import ipaddress
import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from core.fields import UNDECRYPTABLE_REASON, EncryptedTextField, is_undecryptable
from core.jsonlimits import json_object_fields_clean
from core.text import mask_token
from push.payloads import apns_extra_headers, apns_wire


class Provider(models.TextChoices):
    APPLE = "apple", "Apple (APNs)"
    FIREBASE = "firebase", "Google (FCM)"


class CredentialKind(models.TextChoices):
    APNS_CERTIFICATE = "apns_certificate", "APNs certificate (PEM or PKCS#12)"
    APNS_TOKEN = "apns_token", "APNs token key (.p8)"
    FCM_SERVICE_ACCOUNT = "fcm_service_account", "FCM service account (HTTP v1)"
    FCM_LEGACY_KEY = "fcm_legacy_key", "FCM legacy server key (unusable)"


class Credential(models.Model):
    """A certificate or key. The secret is encrypted at rest and never shown again after saving;
    the parsed, non-secret facts are stored beside it so the admin and API can show them."""

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=32, choices=CredentialKind.choices)
    secret = EncryptedTextField(editable=False)

    # Parsed facts (non-secret), set by push.services.credential_save only.
    subject = models.CharField(max_length=500, blank=True)
    topics = models.JSONField(default=list, blank=True)
    environment = models.CharField(max_length=20, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField(null=True, blank=True, db_index=True)
    fingerprint_sha256 = models.CharField("SHA-256 fingerprint", max_length=64, blank=True)
    key_id = models.CharField(max_length=64, blank=True)
    team_id = models.CharField(max_length=64, blank=True)
    project_id = models.CharField(max_length=200, blank=True)
    client_email = models.CharField(max_length=300, blank=True)
    usable = models.BooleanField(default=True)
    unusable_reason = models.CharField(max_length=500, blank=True)
    warnings = models.JSONField(default=list, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def days_to_expiry(self) -> int | None:
        if self.not_after is None:
            return None
        return (self.not_after - timezone.now()).days

    @property
    def secret_readable(self) -> bool:
        """False when no key of FIELD_ENCRYPTION_KEY decrypts the stored secret (it loaded as
        core.fields.UndecryptableSecret): the row is shown, it cannot send."""
        return not is_undecryptable(self.secret)

    @property
    def effectively_usable(self) -> bool:
        """`usable` (as parsed) and the secret readable: what the admin and the API show."""
        return self.usable and self.secret_readable

    @property
    def effective_unusable_reason(self) -> str:
        return self.unusable_reason if self.secret_readable else UNDECRYPTABLE_REASON

    def cannot_send_reason(self) -> str:
        """Why this credential cannot send right now, or "" if it can."""
        if not self.secret_readable:
            return UNDECRYPTABLE_REASON
        if not self.usable:
            return self.unusable_reason or "credential marked unusable"
        if self.not_after is not None and self.not_after <= timezone.now():
            return f"certificate expired on {self.not_after:%Y-%m-%d}"
        return ""


TOPIC_SUFFIX = re.compile(r"\.(?:dev|prod)$")

# A DNS label (underscores allowed: internal relays have them), and a name of such labels.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_HOST_PORT = re.compile(r"\[(?P<v6>[^\]]+)\](?::(?P<v6port>\d{1,5}))?|(?P<host>[^:\[\]]+):(?P<port>\d{1,5})")


def host_problem(value: str) -> str:
    """Why `value` is not a host name or an IP address (what a push app's `host` must be), or ""."""
    if not value:
        return "a host is required"
    host, port = host_port_split(value)
    if port is not None:
        return f"{value!r} holds a port: give the host ({host}) and the port ({port}) separately"
    if host != value:
        return f"{value!r}: write the IPv6 address without brackets ({host})"
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return ""
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return f"{value!r} is not a host name or an IP address"
    if labels[-1].isdigit():  # 10.0.0.300 is a broken address, not a name
        return f"{value!r} is not a valid IP address"
    return ""


def host_port_split(value: str) -> tuple[str, int | None]:
    """`name:port`, `1.2.3.4:port`, `[v6]:port` or `[v6]` -> (host, port or None); anything else is
    (value, None), a bare IPv6 address included. Neither part is checked here."""
    match = _HOST_PORT.fullmatch(value)
    if match is None:
        return value, None
    if match["v6"] is not None:
        return match["v6"], int(match["v6port"]) if match["v6port"] else None
    return match["host"], int(match["port"])


def validate_push_host(value: str) -> None:
    problem = host_problem(value)
    if problem:
        raise ValidationError(problem)


# apns-priority's values (Apple: 10 immediate, 5 power-considerate, 1 lowest).
APNS_PRIORITIES = (1, 5, 10)
# The longest a push may wait at the provider: APNs and FCM both keep one at most 28 days.
MAX_PUSH_LIFETIME_S = 2419200


class PushApp(models.Model):
    """One mobile app on one provider, keyed as Kazoo keys it: (Token-App, provider)."""

    app_id = models.CharField(
        max_length=255, help_text="The Token-App value Kazoo carries, e.g. com.acme.phone.voip.prod"
    )
    provider = models.CharField(max_length=16, choices=Provider.choices)
    enabled = models.BooleanField(default=True)
    credential = models.ForeignKey(
        Credential, on_delete=models.PROTECT, null=True, blank=True, related_name="apps"
    )
    description = models.CharField(max_length=300, blank=True)

    # Apple
    host = models.CharField(
        max_length=255,
        default="api.push.apple.com",
        validators=[validate_push_host],
        help_text="api.push.apple.com, api.sandbox.push.apple.com or a relay (Kazoo's apple_host): a host name "
        "or an IP address, without the port",
    )
    port = models.PositiveIntegerField(default=443, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    topic = models.CharField(
        max_length=255, blank=True, help_text="Blank = app id without a trailing .dev/.prod (Kazoo's rule)"
    )
    push_type = models.CharField(
        max_length=32, default="voip", blank=True,
        help_text="voip, alert, ...; blank = as Kazoo sent it (apps imported from Kazoo without an "
        "apns_push_type header): voip when the topic ends in .voip, else alert, on the topic as it is",
    )
    priority = models.PositiveSmallIntegerField(default=10)
    expiration = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds the push stays valid at Apple; 0 = deliver now or never"
    )
    collapse_id = models.CharField(max_length=64, blank=True)
    extra_headers = models.JSONField(
        default=dict, blank=True, help_text="Extra APNs headers; Kazoo's apns_* names are accepted"
    )

    # Firebase
    project_id = models.CharField(max_length=200, blank=True, help_text="Blank = the service account's")
    android_priority = models.CharField(
        max_length=8, choices=[("high", "high"), ("normal", "normal")], default="high"
    )
    ttl_s = models.PositiveIntegerField("TTL (s)", default=30)

    # Set by the push path when BadDeviceToken repeats (a sandbox/production mix-up, usually).
    flagged_reason = models.CharField(max_length=300, blank=True)
    bad_device_token_count = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["app_id", "provider"]
        constraints = [models.UniqueConstraint(fields=["app_id", "provider"], name="pushapp_unique_app_provider")]
        permissions = [("send_push", "Can send pushes")]

    def __str__(self) -> str:
        return f"{self.app_id} ({self.provider})"

    def clean(self) -> None:
        # Here rather than as field choices and validators, which would take a migration; every face's
        # write runs full_clean (the admin's form, and the services for the API, the commands, the import).
        errors: dict[str, str] = {}
        if self.priority not in APNS_PRIORITIES:
            errors["priority"] = f"apns-priority must be one of {', '.join(map(str, APNS_PRIORITIES))}"
        for name in ("expiration", "ttl_s"):
            value = getattr(self, name)
            if isinstance(value, int) and value > MAX_PUSH_LIFETIME_S:
                errors[name] = f"at most {MAX_PUSH_LIFETIME_S} seconds (28 days)"
        if errors:
            raise ValidationError(errors)
        json_object_fields_clean(self, "extra_headers")

    @property
    def effective_topic(self) -> str:
        return self.topic or TOPIC_SUFFIX.sub("", self.app_id)

    def apns_wire(self, requested: str | None = None) -> tuple[str, str]:
        """(apns-push-type, apns-topic) of this app's pushes (`requested`: one push's own type);
        see push.payloads.apns_wire."""
        return apns_wire(
            topic=self.effective_topic, push_type=self.push_type, headers=apns_extra_headers(self.extra_headers),
            requested=requested,
        )


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    SENT = "sent", "sent"
    FAILED = "failed", "failed"
    TOKEN_INVALID = "token_invalid", "token invalid"
    EXPIRED = "expired", "expired"
    DUPLICATE = "duplicate", "duplicate"


class DeliverySource(models.TextChoices):
    AMQP = "amqp", "AMQP push_req"
    API = "api", "REST API"
    HTTP_SEND = "http_send", "HTTP /api/v1/send"
    ADMIN = "admin", "admin"
    COMMAND = "command", "management command"


class Delivery(models.Model):
    """One row per push attempt chain (retries included)."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=DeliverySource.choices)
    # Unique so a redelivered push_req (same Msg-ID) is claimed by one process only.
    msg_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    # Lease of the process sending this push; a redelivered push_req takes over only an expired
    # lease (its sender died), so a live send is never duplicated.
    claimed_at = models.DateTimeField(null=True, blank=True)
    reply_to = models.CharField(max_length=255, blank=True, help_text="Server-ID for a legacy push_resp")
    replied_at = models.DateTimeField(null=True, blank=True)
    call_id = models.CharField(max_length=255, blank=True, db_index=True)
    account_id = models.CharField(max_length=64, blank=True)
    device_id = models.CharField(max_length=64, blank=True)
    push_app = models.ForeignKey(
        PushApp, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries"
    )
    app_id = models.CharField(max_length=255, blank=True)
    provider = models.CharField(max_length=16, choices=Provider.choices, blank=True)
    token = models.CharField(max_length=1024, blank=True)
    token_type = models.CharField(max_length=32, blank=True)
    push_type = models.CharField(max_length=32, blank=True)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["provider", "created_at"]),
            models.Index(fields=["token"], name="delivery_token_idx"),
            # An account's or a device's pushes, newest first (the API's filters, the admin's search),
            # read from the index alone however long the log: with account_id's own index, a big
            # account's page sorted all its rows; device_id had none (a full scan).
            models.Index(fields=["account_id", "created_at"], name="delivery_account_created_idx"),
            models.Index(fields=["device_id", "created_at"], name="delivery_device_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_status_display()} {self.app_id} {self.call_id}"

    @property
    def token_masked(self) -> str:
        return mask_token(self.token)

    @property
    def expired(self) -> bool:
        return self.deadline_at is not None and timezone.now() > self.deadline_at




class ApnsProviderToken(models.Model):
    """The APNs provider token (JWT) every consumer process and host uses for one team and key, so
    that they renew one token an hour between them rather than one each (Apple answers
    TooManyProviderTokenUpdates to a key renewed too often). A bearer secret for an hour: encrypted."""

    team_id = models.CharField(max_length=20)
    key_id = models.CharField(max_length=20)
    key_fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the signing key's PEM")
    token = EncryptedTextField()
    issued_at = models.FloatField(help_text="the token's iat, seconds since the epoch")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team_id", "key_id"], name="apnsprovidertoken_team_key")]

    def __str__(self) -> str:
        return f"{self.team_id}/{self.key_id}"
