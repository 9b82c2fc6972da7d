"""Webhooks and alerts in the admin: subscriptions (the secret write-only), the webhook delivery log
(read-only, with "Retry now") and the alerts raised. Every write goes through hooks.services."""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from core.errors import PusherError
from hooks import services
from hooks.models import (
    SUBSCRIBABLE_EVENTS,
    Alert,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookSubscription,
)
from hooks.wire import url_origin

ACTION_MAX = 10  # rows one action attempts at once: each may wait for a receiver's timeouts


def delivery_outcome_text(delivery: WebhookDelivery) -> str:
    """One line after an attempt made from the admin."""
    if delivery.status == WebhookDeliveryStatus.DELIVERED:
        return f"delivered (HTTP {delivery.last_http_status})"
    then = "gave up" if delivery.status == WebhookDeliveryStatus.GAVE_UP else "will retry"
    return f"not delivered: {delivery.last_error or 'no answer'} ({then}; attempt {delivery.attempts})"


def _more_than_max(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    count = queryset.count()
    if count > ACTION_MAX:
        model_admin.message_user(request, f"{count} selected: the first {ACTION_MAX} are tried; run the action again "
                                 "for the others", messages.WARNING)


class WebhookSubscriptionForm(forms.ModelForm):
    """The secret is write-only: typed once, never rendered back; empty on a change keeps it."""

    event_types = forms.MultipleChoiceField(
        choices=[(t.value, f"{t.value}: {t.label}") for t in SUBSCRIBABLE_EVENTS],
        widget=forms.CheckboxSelectMultiple,
    )
    new_secret = forms.CharField(
        label="Secret", required=False, strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Signs every request (X-Pusher-Signature), 16 to 500 characters; it is never shown again. "
        "Leave empty to keep the stored one.",
    )

    class Meta:
        model = WebhookSubscription
        fields = ["name", "url", "event_types", "account_id", "enabled"]
        widgets = {"url": forms.URLInput(attrs={"size": 90})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["new_secret"].help_text = ("Signs every request (X-Pusher-Signature), 16 to 500 characters; "
                                                   "it is never shown again.")

    def clean(self) -> dict[str, Any]:
        """The service's own checks, asked here so that a refusal shows on its field (save_model's
        service checks again)."""
        super().clean()
        cleaned = self.cleaned_data
        fields: dict[str, Any] = {name: cleaned[name] for name in ("name", "url", "event_types", "account_id",
                                                                   "enabled") if name in cleaned}
        secret = cleaned.get("new_secret") or ""
        if secret:
            fields["secret"] = secret
        elif self.instance.pk is None:
            self.add_error("new_secret", "A secret is required.")
        problems = services.webhook_subscription_problems(
            subscription=self.instance if self.instance.pk else None, **fields
        )
        for name, message in problems.items():
            self.add_error("new_secret" if name == "secret" else None if name == "__all__" else name, message)
        return cleaned

    def validate_unique(self) -> None:
        pass  # the service's check (above) names the clash


@admin.register(WebhookSubscription)
@method_decorator(sensitive_post_parameters("new_secret"), name="changeform_view")
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ["name", "enabled", "receiver", "events_shown", "account_id", "updated_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "url", "account_id"]
    readonly_fields = ["delivery_log", "created_at", "updated_at"]
    actions = ["send_test_event"]

    def get_fields(self, request, obj=None):
        fields = ["name", "url", "new_secret", "event_types", "account_id", "enabled"]
        return fields + self.readonly_fields if obj is not None else fields

    @admin.display(description="receiver")
    def receiver(self, obj: WebhookSubscription) -> str:
        return url_origin(obj.url)

    @admin.display(description="events")
    def events_shown(self, obj: WebhookSubscription) -> str:
        return ", ".join(obj.event_types)

    @admin.display(description="delivery log")
    def delivery_log(self, obj: WebhookSubscription) -> str:
        counts = {status: obj.deliveries.filter(status=status).count() for status in WebhookDeliveryStatus}
        url = reverse("admin:hooks_webhookdelivery_changelist") + f"?subscription__id__exact={obj.pk}"
        text = ", ".join(f"{counts[status]} {status.label}" for status in WebhookDeliveryStatus)
        return format_html('<a href="{}">{}</a>', url, text)

    def save_model(self, request: HttpRequest, obj: WebhookSubscription, form: Any, change: bool) -> None:
        cleaned = form.cleaned_data
        fields: dict[str, Any] = {name: cleaned[name] for name in ("name", "url", "event_types", "account_id",
                                                                   "enabled")}
        if cleaned.get("new_secret"):
            fields["secret"] = cleaned["new_secret"]
        if change:
            saved = services.webhook_subscription_update(subscription=obj, **fields)
        else:
            saved = services.webhook_subscription_create(**fields)
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: WebhookSubscription) -> None:
        services.webhook_subscription_delete(subscription=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        for subscription in queryset:
            services.webhook_subscription_delete(subscription=subscription)

    @admin.action(description="Send a test event", permissions=["change"])
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        _more_than_max(self, request, queryset)
        for subscription in queryset[:ACTION_MAX]:
            delivery = services.webhook_test_send(subscription=subscription)
            level = messages.SUCCESS if delivery.status == WebhookDeliveryStatus.DELIVERED else messages.ERROR
            self.message_user(request, f"{subscription}: test event {delivery_outcome_text(delivery)}", level)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The webhook delivery log: read-only (written by the sender alone), every row kept."""

    list_display = ["created_at", "event_type", "subscription_name", "status", "attempts", "last_http_status",
                    "next_attempt_at", "error_short"]
    list_filter = ["status", "event_type", "subscription"]
    search_fields = ["subscription_name", "event_key", "account_id", "uuid"]
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "uuid", "subscription", "subscription_name", "event_type", "event_key", "account_id", "status", "attempts",
        "next_attempt_at", "last_attempt_at", "last_http_status", "last_error", "created_at", "delivered_at",
        "payload_shown",
    )
    actions = ["retry_now"]

    @admin.display(description="last error")
    def error_short(self, obj: WebhookDelivery) -> str:
        return obj.last_error[:80]

    @admin.display(description="data")
    def payload_shown(self, obj: WebhookDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, ensure_ascii=False))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("hooks.change_webhookdelivery")

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        _more_than_max(self, request, queryset)
        for delivery in queryset.order_by("created_at")[:ACTION_MAX]:
            try:
                delivery = services.webhook_delivery_retry(delivery=delivery)
            except PusherError as exc:
                self.message_user(request, exc.message, messages.WARNING)
                continue
            level = messages.SUCCESS if delivery.status == WebhookDeliveryStatus.DELIVERED else messages.ERROR
            self.message_user(request, f"{delivery.event_type} to {delivery.subscription_name}: "
                              f"{delivery_outcome_text(delivery)}", level)


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """Alerts raised (once, until their condition clears): read-only."""

    list_display = ["raised_at", "summary", "event_type", "active", "cleared_at", "emailed"]
    list_filter = ["active", "event_type"]
    search_fields = ["summary", "key"]
    fields = readonly_fields = ("key", "event_type", "summary", "active", "raised_at", "cleared_at", "emailed",
                                "email_error", "data")

    @admin.display(description="e-mailed")
    def emailed(self, obj: Alert) -> str:
        if not obj.email_wanted:
            return "—"
        if obj.emailed_at is not None:
            return f"{obj.emailed_at:%Y-%m-%d %H:%M}"
        return f"not yet ({obj.email_attempts} attempt(s))"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

