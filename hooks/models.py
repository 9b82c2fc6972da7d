"""Webhook subscriptions, the webhook delivery log (the outbox the sender works through), and alerts
(conditions raised once until they clear)."""

import uuid

from django.db import models
from django.utils import timezone

from core.fields import EncryptedTextField


class WebhookEventType(models.TextChoices):
    PUSH_FAILED = "push.failed", "push failed (provider error or dead token)"
    PUSH_EXPIRED = "push.expired", "push expired (not delivered in time)"
    TOKEN_DEACTIVATED = "token.deactivated", "device token deactivated"
    CREDENTIAL_EXPIRING = "credential.expiring", "credential expiring"
    CREDENTIAL_UNUSABLE = "credential.unusable", "credential unusable"
    CONSUMER_DOWN = "consumer.down", "no consumer connected"
    CONSUMER_UP = "consumer.up", "a consumer connected again"
    TEST = "webhook.test", "test event"


# What a subscription may choose: every event but the test, which goes to one subscription on demand.
SUBSCRIBABLE_EVENTS = tuple(t for t in WebhookEventType if t != WebhookEventType.TEST)
# The events read from the push delivery log, from each subscription's cursor (push_scan_from).
PUSH_LOG_EVENTS = frozenset({WebhookEventType.PUSH_FAILED, WebhookEventType.PUSH_EXPIRED})


class WebhookSubscription(models.Model):
    """An operator's receiver: pusher POSTs the chosen events to `url`, signed with `secret`
    (encrypted at rest, never shown again after saving). Written by hooks.services only."""

    name = models.CharField(max_length=200, unique=True)
    url = models.CharField("URL", max_length=2000, help_text="http:// or https:// (no user:password in it)")
    secret = EncryptedTextField(editable=False)
    event_types = models.JSONField(default=list, help_text="The events sent here (hooks.models.SUBSCRIBABLE_EVENTS)")
    account_id = models.CharField(
        max_length=64, blank=True,
        help_text="Only this account's push and token events; blank = every account. Platform events "
        "(credentials, consumers) carry no account and reach every subscription that chose them.",
    )
    enabled = models.BooleanField(default=True)
    # Push outcomes created before this were queued already (or came before the subscription).
    push_scan_from = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "webhook subscription"

    def __str__(self) -> str:
        return self.name


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    DELIVERED = "delivered", "delivered"
    FAILED = "failed", "failed, will retry"
    GAVE_UP = "gave_up", "gave up"


class WebhookDelivery(models.Model):
    """One event for one subscription, and its delivery: queued as `pending`, `delivered` only on a
    2xx answer, else `failed` and retried with backoff until it is `gave_up`. Rows are never
    deleted by the sender: this is the delivery log."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False,
                            help_text="X-Pusher-Delivery: the same on every attempt, for the receiver's idempotency")
    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries"
    )
    subscription_name = models.CharField(max_length=200, help_text="Kept when the subscription is deleted")
    event_type = models.CharField(max_length=32, choices=WebhookEventType.choices)
    event_key = models.CharField(max_length=200, help_text="The event's identity: queued once per subscription")
    account_id = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(default=dict, help_text="The event's `data`")
    status = models.CharField(max_length=16, choices=WebhookDeliveryStatus.choices,
                              default=WebhookDeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When the next attempt is due; while an attempt is under way, when its sender's lease ends (a
    # sender that died mid-attempt leaves the row due again then).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sending_until = models.DateTimeField(null=True, blank=True, help_text="An attempt is under way until then")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["subscription", "event_key"], name="webhookdelivery_unique_event"),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhookdelivery_due_idx")]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.subscription_name} ({self.get_status_display()})"


class Alert(models.Model):
    """A condition worth telling operators about once, not on every check: raised (its event queued
    for the subscriptions, its e-mail sent) when first seen, then left alone until it clears.
    Keys name the condition: `consumer.down`, `credential.unusable:<id>`,
    `credential.expiring:<id>:<not_after>:<days>`."""

    key = models.CharField(max_length=200, unique=True)
    event_type = models.CharField(max_length=32, choices=WebhookEventType.choices)
    active = models.BooleanField(default=True)
    summary = models.CharField(max_length=500)
    data = models.JSONField(default=dict)
    raised_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)
    # E-mail to PUSHER_ALERT_EMAILS: wanted, sent, or failing (retried on the next checks).
    email_wanted = models.BooleanField(default=False)
    email_text = models.TextField(blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    email_attempts = models.PositiveSmallIntegerField(default=0)
    email_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-raised_at"]

    def __str__(self) -> str:
        return self.summary
