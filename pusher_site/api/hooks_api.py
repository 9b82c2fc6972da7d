"""REST API of webhooks and alerts (staff only: a subscription sends the platform's events out):
subscriptions, the webhook delivery log, "send test event", "retry now", the alerts raised.

Input serializer -> hooks.services -> output serializer, as the admin does it. The secret is
write-only: no serializer here reads WebhookSubscription.secret.
"""

from __future__ import annotations

from typing import Any

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from hooks import services
from hooks.models import (
    SUBSCRIBABLE_EVENTS,
    Alert,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEventType,
    WebhookSubscription,
)
from hooks.services.subscriptions import ACCOUNT_MAX, NAME_MAX, SECRET_MAX, SECRET_MIN
from hooks.wire import URL_MAX
from pusher_site.api.conventions import (
    MAX_INT,
    FilteredListMixin,
    ModelPermissions,
    Pagination,
    ServiceWriteMixin,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    api_schema,
    audit_log,
    perms_required,
)
from pusher_site.api.parsers import JSONParser

EVENT_CHOICES = [t.value for t in SUBSCRIBABLE_EVENTS]


class StaffModelPermissions(ModelPermissions):
    """Staff users (is_staff) with the model's permissions: a subscription sends the platform's
    events to any URL, so a user with model permissions alone is not enough."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_staff) and super().has_permission(request, view)


def staff_perms_required(*perms: str) -> type[permissions.BasePermission]:
    """`perms_required` (which keeps scoped tokens out as the view says), for staff users only."""

    class _StaffPerms(perms_required(*perms)):  # type: ignore[misc]
        def has_permission(self, request: Any, view: Any) -> bool:
            return bool(request.user and request.user.is_staff) and super().has_permission(request, view)

    _StaffPerms.__name__ = "StaffPerms_" + "_".join(p.replace(".", "_") for p in perms)
    return _StaffPerms


# --- Delivery log ------------------------------------------------------------------------------


class WebhookDeliverySerializer(serializers.ModelSerializer):
    """One event for one subscription and its delivery. `uuid` is the X-Pusher-Delivery header."""

    class Meta:
        model = WebhookDelivery
        fields = [
            "id", "uuid", "subscription", "subscription_name", "event_type", "event_key", "account_id", "payload",
            "status", "attempts", "next_attempt_at", "last_attempt_at", "last_http_status", "last_error",
            "created_at", "delivered_at",
        ]
        read_only_fields = fields


class WebhookDeliveryFilterSerializer(serializers.Serializer):
    subscription = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INT,
                                            help_text="Subscription id")
    status = serializers.ChoiceField(choices=WebhookDeliveryStatus.choices, required=False)
    event_type = serializers.ChoiceField(choices=WebhookEventType.choices, required=False)
    account = StrictCharField(required=False, max_length=ACCOUNT_MAX, help_text="Account-ID, exact")
    created_after = serializers.DateTimeField(required=False, help_text="Created at or after (ISO 8601)")
    created_before = serializers.DateTimeField(required=False, help_text="Created before (ISO 8601)")


class WebhookDeliveryViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    """The webhook delivery log, newest first: every event queued for a subscription, delivered or not."""

    queryset = WebhookDelivery.objects.all()
    serializer_class = WebhookDeliverySerializer
    filter_serializer_class = WebhookDeliveryFilterSerializer
    filter_lookups = {
        "subscription": "subscription_id", "status": "status", "event_type": "event_type", "account": "account_id",
        "created_after": "created_at__gte", "created_before": "created_at__lt",
    }
    permission_classes = [StaffModelPermissions]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["created_at", "status", "attempts", "next_attempt_at"]
    ordering = ["-created_at", "-id"]

    @extend_schema(
        request=None, responses={200: WebhookDeliverySerializer},
        summary="Retry now",
        description="One attempt now, whatever the schedule; a delivery that gave up gets one more attempt (and "
        "gives up again if it fails). Refused (400) for a delivered one, or one being sent right now.",
    )
    @action(detail=True, methods=["post"], url_path="retry",
            permission_classes=[staff_perms_required("hooks.view_webhookdelivery", "hooks.change_webhookdelivery")])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        delivery = services.webhook_delivery_retry(delivery=self.get_object())
        audit_log(request=request, action="change", obj=delivery,
                  message=f"retry: {delivery.status} (attempt {delivery.attempts})")
        return Response(WebhookDeliverySerializer(delivery).data)


# --- Alerts ------------------------------------------------------------------------------------


class AlertSerializer(serializers.ModelSerializer):
    """An alert: raised once (its event sent, its e-mail too), then left alone until it clears."""

    class Meta:
        model = Alert
        fields = ["id", "key", "event_type", "summary", "active", "raised_at", "cleared_at", "data", "email_wanted",
                  "emailed_at", "email_attempts", "email_error"]
        read_only_fields = fields


class AlertFilterSerializer(serializers.Serializer):
    active = serializers.BooleanField(required=False)
    event_type = serializers.ChoiceField(choices=WebhookEventType.choices, required=False)


class AlertViewSet(FilteredListMixin, viewsets.ReadOnlyModelViewSet):
    """Alerts raised, newest first (read-only: the checks raise and clear them)."""

    queryset = Alert.objects.all()
    serializer_class = AlertSerializer
    filter_serializer_class = AlertFilterSerializer
    filter_lookups = {"active": "active", "event_type": "event_type"}
    permission_classes = [StaffModelPermissions]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["raised_at", "cleared_at", "event_type"]
    ordering = ["-raised_at", "-id"]


# --- Subscriptions -----------------------------------------------------------------------------


class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    """A subscription. Its secret never comes back out."""

    event_types = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES), read_only=True)

    class Meta:
        model = WebhookSubscription
        fields = ["id", "name", "url", "event_types", "account_id", "enabled", "created_at", "updated_at"]
        read_only_fields = fields


class WebhookSubscriptionInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=NAME_MAX)
    url = StrictCharField(max_length=URL_MAX, help_text="http:// or https://, without user:password")
    secret = StrictCharField(
        required=False, write_only=True, trim_whitespace=False, min_length=SECRET_MIN, max_length=SECRET_MAX,
        help_text="Signs every request (X-Pusher-Signature); required to create, never returned",
    )
    event_types = serializers.ListField(child=StrictChoiceField(choices=EVENT_CHOICES), allow_empty=False,
                                        max_length=len(SUBSCRIBABLE_EVENTS) * 2)
    account_id = StrictCharField(required=False, allow_blank=True, max_length=ACCOUNT_MAX,
                                 help_text="Only this account's push and token events; blank = every account")
    enabled = StrictBooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None and "secret" not in attrs:
            raise serializers.ValidationError({"secret": ["A secret is required."]})
        # The service's rules, per field (the service checks again when it writes).
        problems = services.webhook_subscription_problems(subscription=self.instance, **attrs)
        if problems:
            raise serializers.ValidationError(
                {"non_field_errors" if name == "__all__" else name: [message] for name, message in problems.items()}
            )
        return attrs


@method_decorator(sensitive_post_parameters("secret"), name="dispatch")
class WebhookSubscriptionViewSet(ServiceWriteMixin, viewsets.ModelViewSet):
    """Webhook subscriptions: where pusher POSTs the events chosen, signed with the secret."""

    queryset = WebhookSubscription.objects.all()
    serializer_class = WebhookSubscriptionSerializer
    input_serializer_class = WebhookSubscriptionInputSerializer
    permission_classes = [StaffModelPermissions]
    parser_classes = [JSONParser]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["name", "enabled", "created_at", "updated_at"]
    ordering = ["name"]

    def service_create(self, data: dict[str, Any]) -> WebhookSubscription:
        return services.webhook_subscription_create(**data)

    def service_update(self, obj: WebhookSubscription, data: dict[str, Any]) -> WebhookSubscription:
        return services.webhook_subscription_update(subscription=obj, **data)

    def service_delete(self, obj: WebhookSubscription) -> None:
        services.webhook_subscription_delete(subscription=obj)

    @extend_schema(
        request=None, responses={200: WebhookDeliverySerializer},
        summary="Send a test event",
        description="A `webhook.test` event to this subscription (enabled or not), attempted now: the answer is "
        "its delivery, whatever the outcome (`status`, `last_http_status`, `last_error`).",
    )
    @action(detail=True, methods=["post"], url_path="test",
            permission_classes=[staff_perms_required("hooks.view_webhooksubscription",
                                                     "hooks.change_webhooksubscription")])
    def test(self, request: Request, pk: str | None = None) -> Response:
        subscription = self.get_object()
        delivery = services.webhook_test_send(subscription=subscription)
        audit_log(request=request, action="change", obj=subscription,
                  message=f"test event: {delivery.status} ({delivery.last_http_status or delivery.last_error})")
        return Response(WebhookDeliverySerializer(delivery).data)
