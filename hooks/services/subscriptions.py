"""Webhook subscriptions: their rules (one place, asked by every face) and their writes."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import InvalidInput
from core.fields import rows_reencrypt
from core.text import text_storable_problem
from hooks.models import (
    PUSH_LOG_EVENTS,
    SUBSCRIBABLE_EVENTS,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookSubscription,
)
from hooks.wire import url_origin, url_problem

log = logging.getLogger(__name__)

WEBHOOK_FIELDS = ("name", "url", "secret", "event_types", "account_id", "enabled")
SECRET_MIN = 16
SECRET_MAX = 500
NAME_MAX = 200
ACCOUNT_MAX = 64


def webhook_subscription_problems(*, subscription: WebhookSubscription | None = None,
                                  **fields: Any) -> dict[str, str]:
    """What is wrong with these subscription fields (those given), per field: {} when nothing.
    The admin form shows them on its fields; the services raise the first as InvalidInput."""
    problems: dict[str, str] = {}
    unknown = sorted(set(fields) - set(WEBHOOK_FIELDS))
    if unknown:
        problems["__all__"] = f"not a subscription field: {', '.join(unknown)}"
    for name in ("name", "url", "secret", "account_id"):
        if name in fields and not isinstance(fields[name], str):
            problems[name] = "must be text"
    if "name" in fields and "name" not in problems:
        name = fields["name"].strip()
        if not name:
            problems["name"] = "a name is required"
        elif len(name) > NAME_MAX or text_storable_problem(name):
            problems["name"] = f"a name is at most {NAME_MAX} characters of storable text"
        elif WebhookSubscription.objects.filter(name=name).exclude(
                pk__in=[subscription.pk] if subscription else []).exists():
            problems["name"] = f"a subscription named {name!r} exists already"
    if "url" in fields and "url" not in problems:
        problem = url_problem(fields["url"].strip())
        if problem:
            problems["url"] = problem
    if "secret" in fields and "secret" not in problems:
        secret = fields["secret"]
        if not SECRET_MIN <= len(secret) <= SECRET_MAX:
            problems["secret"] = f"the secret must be {SECRET_MIN} to {SECRET_MAX} characters"
        elif text_storable_problem(secret) or not secret.isprintable():
            problems["secret"] = "the secret holds control characters or is not valid Unicode"
    if "event_types" in fields:
        chosen = fields["event_types"]
        if not isinstance(chosen, list | tuple) or not all(isinstance(t, str) for t in chosen):
            problems["event_types"] = "a list of event types is required"
        elif not chosen:
            problems["event_types"] = f"choose at least one event: {', '.join(SUBSCRIBABLE_EVENTS)}"
        elif unknown_types := sorted(set(chosen) - set(SUBSCRIBABLE_EVENTS)):
            problems["event_types"] = (f"unknown event type(s) {', '.join(map(repr, unknown_types))[:200]}; "
                                       f"known: {', '.join(SUBSCRIBABLE_EVENTS)}")
    if "account_id" in fields and "account_id" not in problems:
        account = fields["account_id"].strip()
        if len(account) > ACCOUNT_MAX or text_storable_problem(account) or not account.isprintable():
            problems["account_id"] = f"an account id is at most {ACCOUNT_MAX} printable characters"
    if "enabled" in fields and not isinstance(fields["enabled"], bool):
        problems["enabled"] = "must be true or false"
    return problems


def _checked(subscription: WebhookSubscription | None, fields: dict[str, Any]) -> dict[str, Any]:
    problems = webhook_subscription_problems(subscription=subscription, **fields)
    if problems:
        field, message = next(iter(problems.items()))
        raise InvalidInput(message if field == "__all__" else f"{field}: {message}")
    cleaned = dict(fields)
    for name in ("name", "url", "account_id"):
        if name in cleaned:
            cleaned[name] = cleaned[name].strip()
    if "event_types" in cleaned:  # stored in the fixed list's order, once each
        cleaned["event_types"] = [t for t in SUBSCRIBABLE_EVENTS if t in cleaned["event_types"]]
    return cleaned


@transaction.atomic
def webhook_subscription_create(*, name: str, url: str, secret: str, event_types: list[str], account_id: str = "",
                                enabled: bool = True) -> WebhookSubscription:
    """A new subscription. Events that happen from now on reach it (none from before)."""
    fields = _checked(None, {"name": name, "url": url, "secret": secret, "event_types": event_types,
                             "account_id": account_id, "enabled": enabled})
    subscription = WebhookSubscription(**fields, push_scan_from=timezone.now())
    subscription.save(force_insert=True)
    log.info("webhook subscription %r added: %s for %s", subscription.name, url_origin(subscription.url),
             ", ".join(subscription.event_types))
    return subscription


@transaction.atomic
def webhook_subscription_update(*, subscription: WebhookSubscription, **changes: Any) -> WebhookSubscription:
    """Change some of name, url, secret (a new one; the old one is never shown), event_types,
    account_id, enabled. Deliveries still to be sent go to the new URL, signed with the new secret."""
    changes = _checked(subscription, changes)
    subscription = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    reading_before = _reads_push_log(subscription)
    for name, value in changes.items():
        setattr(subscription, name, value)
    fields = [*changes, "updated_at"]  # the secret is rewritten only when changed
    if _reads_push_log(subscription) and not reading_before:
        # Push outcomes from now on, as for a new subscription: not those of the time it was off
        # (or chose none), which the other events of that time did not reach either.
        subscription.push_scan_from = timezone.now()
        fields.append("push_scan_from")
    subscription.save(update_fields=fields)
    log.info("webhook subscription %r changed (%s)", subscription.name, ", ".join(sorted(changes)) or "nothing")
    return subscription


def _reads_push_log(subscription: WebhookSubscription) -> bool:
    return subscription.enabled and bool(PUSH_LOG_EVENTS & set(subscription.event_types))


@transaction.atomic
def webhook_subscription_delete(*, subscription: WebhookSubscription) -> None:
    """Delete a subscription. Its delivery log stays (under its name); deliveries not yet sent are
    marked gave_up, with that reason."""
    name = subscription.name
    WebhookDelivery.objects.filter(
        subscription=subscription, status__in=[WebhookDeliveryStatus.PENDING, WebhookDeliveryStatus.FAILED],
    ).update(status=WebhookDeliveryStatus.GAVE_UP, next_attempt_at=None, last_error="subscription deleted")
    subscription.delete()
    log.info("webhook subscription %r deleted", name)


def webhook_subscriptions_for(*, event_types: set[str] | frozenset[str]) -> list[WebhookSubscription]:
    """Enabled subscriptions that chose any of `event_types` (a handful of rows: filtered here,
    as SQLite's JSON has no `contains`)."""
    # The secret is left undecrypted: none of the callers signs here (a token deactivation on the
    # push path asks too).
    return [s for s in WebhookSubscription.objects.filter(enabled=True).defer("secret").order_by("pk")
            if event_types & set(s.event_types)]


def webhook_subscription_scanned(*, subscription: WebhookSubscription, until: Any) -> None:
    """Push outcomes created before `until` have been queued for this subscription (hooks'
    scanning cursor; it only moves forward, whichever process scans)."""
    behind = Q(push_scan_from__lt=until) | Q(push_scan_from__isnull=True)
    WebhookSubscription.objects.filter(behind, pk=subscription.pk).update(push_scan_from=until)


def webhook_secrets_reencrypt() -> tuple[int, list[str]]:
    """Rewrite every subscription's secret with the first FIELD_ENCRYPTION_KEY (the key rotation
    step of `manage.py credentials_reencrypt`). Returns (how many, names of those no key decrypts,
    left as they are)."""
    count, undecryptable = rows_reencrypt(WebhookSubscription, field="secret", label="name")
    return count, list(undecryptable)
