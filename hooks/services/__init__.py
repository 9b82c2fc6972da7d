"""hooks' services: every face (admin, API, commands, the consumer's loop) calls these."""

from hooks.services.outbox import (
    WebhookEvent,
    alert_clear,
    alert_emails_send,
    alert_raise,
    webhook_event_record,
    webhook_events_queue,
)
from hooks.services.sending import (
    RetryPolicy,
    SendSummary,
    webhook_deliveries_send_due,
    webhook_delivery_retry,
    webhook_test_send,
)
from hooks.services.subscriptions import (
    webhook_secrets_reencrypt,
    webhook_subscription_create,
    webhook_subscription_delete,
    webhook_subscription_problems,
    webhook_subscription_scanned,
    webhook_subscription_update,
    webhook_subscriptions_for,
)

__all__ = [
    "RetryPolicy",
    "SendSummary",
    "WebhookEvent",
    "alert_clear",
    "alert_emails_send",
    "alert_raise",
    "webhook_deliveries_send_due",
    "webhook_delivery_retry",
    "webhook_event_record",
    "webhook_events_queue",
    "webhook_secrets_reencrypt",
    "webhook_subscription_create",
    "webhook_subscription_delete",
    "webhook_subscription_problems",
    "webhook_subscription_scanned",
    "webhook_subscription_update",
    "webhook_subscriptions_for",
    "webhook_test_send",
]
