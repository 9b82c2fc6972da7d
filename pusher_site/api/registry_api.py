"""REST API of the registry: User-Agent rules (with the tester and Kazoo's config import/export) and
devices with their push tokens.

Every write is input serializer -> service -> output serializer (STYLE rule 11).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from kazoo import config as kazoo_config
from kazoo import sync
from kazoo.uatest import user_agent_test
from push import services as push_services
from push.models import DeliverySource
from pusher_site.api.auth import ScopedAccess
from pusher_site.api.conventions import (
    MAX_INT,
    AccountRowsMixin,
    FilteredListMixin,
    JSONObjectField,
    Pagination,
    ServiceChangeMixin,
    ServiceWriteMixin,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    api_schema,
    audit_log,
    json_text_validator,
    perms_required,
)
from pusher_site.api.delivery_api import DeliverySerializer
from pusher_site.api.parsers import JSONParser
from registry import selectors, services
from registry.models import Device, PushToken, SyncStatus, TokenKind, UserAgentRule
from tenancy.models import Grant
from tenancy.scope import AccountScope

# --- User-Agent rules ------------------------------------------------------------------------------


class UserAgentRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = UserAgentRule
        fields = ["id", "name", "position", "enabled", "regex", "properties", "description", "created_at",
                  "updated_at"]
        read_only_fields = fields


class UserAgentRuleInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200)
    position = StrictIntegerField(required=False, min_value=-2147483648, max_value=2147483647,
                                        help_text="Lower first; the first match wins")
    enabled = StrictBooleanField(required=False)
    regex = StrictCharField(max_length=1000, trim_whitespace=False,
                                  help_text="Searched unanchored in the User-Agent (PCRE-like); use ^ to anchor")
    properties = serializers.DictField(
        child=StrictCharField(max_length=255), validators=[json_text_validator],
        help_text='Output key -> source name, e.g. {"Token-ID": "pn-tok", "Token-Type": "pn-type", '
        '"Token-App": "app-id"}',
    )
    description = StrictCharField(required=False, allow_blank=True, max_length=300)


class UserAgentRuleFilterSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    name = StrictCharField(required=False, max_length=200, help_text="Exact name")


class RuleMatchRequestSerializer(serializers.Serializer):
    user_agent = StrictCharField(max_length=1000, trim_whitespace=False, help_text="The REGISTER's User-Agent")
    contact = StrictCharField(max_length=8000, trim_whitespace=False,
                                    help_text="The REGISTER's Contact header value")
    # DRF's metaclass takes declared fields out of the class: this does not shadow Serializer.fields.
    fields = JSONObjectField(  # type: ignore[assignment]
        required=False,
        help_text="More reg_success fields, e.g. Proxy-Path (the source of Token-Proxy) or Custom-Channel-Vars "
        "with Account-ID / Authorizing-ID (placeholders are used when they are not given)",
    )


class MatchedTokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    type = serializers.CharField()
    app = serializers.CharField()
    kind = serializers.CharField(help_text='"voip", "remote" or "" (plain)')


class RuleMatchSerializer(serializers.Serializer):
    """What `manage.py match_user_agent` prints."""

    rule = serializers.CharField(allow_null=True, help_text="The rule that matched, or null")
    push = serializers.DictField(child=serializers.CharField(), allow_null=True,
                                 help_text="The device push object Kazoo would store, or null")
    tokens = MatchedTokenSerializer(many=True)
    reason = serializers.CharField(help_text='"ok", or why nothing would be stored')


class ImportSummarySerializer(serializers.Serializer):
    rules_created = serializers.IntegerField()
    rules_updated = serializers.IntegerField()
    rules_unchanged = serializers.IntegerField()
    apps_created = serializers.IntegerField()
    apps_updated = serializers.IntegerField()
    apps_unchanged = serializers.IntegerField()
    credentials_created = serializers.IntegerField()
    changed = serializers.BooleanField()
    warnings = serializers.ListField(child=serializers.CharField())


class KazooConfigSerializer(serializers.Serializer):
    """Kazoo's system_config/pusher document: {"default": {"User-Agents": {...}}, "<app-id>": {"apple":
    {...}, "firebase": {...}}}. Crossbar's envelope ({"data": {...}}) is accepted on import."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        try:
            json_text_validator(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"non_field_errors": exc.detail}) from None
        return data

    def to_representation(self, instance: Any) -> Any:
        return instance


KAZOO_CONFIG_SCHEMA = {
    "type": "object",
    "additionalProperties": {},
    "description": KazooConfigSerializer.__doc__,
    "example": {
        "default": {"User-Agents": {"AcmePhone": {"regex": "^AcmePhone", "properties": {
            "Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"}}}},
    },
}


class UserAgentRuleViewSet(FilteredListMixin, ServiceWriteMixin, viewsets.ModelViewSet):
    """Kazoo's `User-Agents` rules, in match order (position, then name): the first match wins."""

    queryset = UserAgentRule.objects.all()
    serializer_class = UserAgentRuleSerializer
    input_serializer_class = UserAgentRuleInputSerializer
    filter_serializer_class = UserAgentRuleFilterSerializer
    filter_lookups = {"enabled": "enabled", "name": "name"}
    parser_classes = [JSONParser]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["position", "name", "enabled", "created_at", "updated_at"]
    ordering = ["position", "name"]
    # Rules are no account's: a scoped token reads and tests them, and writes them with its grant; the
    # import writes apps and credentials too, and the export shows the apps.
    scoped_access = ScopedAccess(actions={
        **dict.fromkeys(("create", "update", "partial_update", "destroy"), (Grant.RULES_WRITE,)),
        "import_config": (Grant.RULES_WRITE, Grant.APPS, Grant.CREDENTIALS),
        "export_config": (Grant.APPS,),
    })

    def service_create(self, data: dict[str, Any]) -> UserAgentRule:
        return services.user_agent_rule_create(**data)

    def service_update(self, obj: UserAgentRule, data: dict[str, Any]) -> UserAgentRule:
        return services.user_agent_rule_update(rule=obj, **data)

    def service_delete(self, obj: UserAgentRule) -> None:
        services.user_agent_rule_delete(rule=obj)

    @extend_schema(
        request=RuleMatchRequestSerializer, responses={200: RuleMatchSerializer},
        summary="Test a User-Agent and Contact against the enabled rules",
        description="Runs them through the consumer's own matcher, as a reg_success would be, and answers what "
        "`manage.py match_user_agent` prints. Writes nothing.",
    )
    @action(detail=False, methods=["post"], url_path="match",
            permission_classes=[perms_required("registry.view_useragentrule")])
    def match(self, request: Request) -> Response:
        params = RuleMatchRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        result = user_agent_test(
            user_agent=data["user_agent"], contact=data["contact"], fields=data.get("fields")
        )
        return Response(RuleMatchSerializer(result.as_dict()).data)

    @extend_schema(
        request={"application/json": KAZOO_CONFIG_SCHEMA}, responses={200: ImportSummarySerializer},
        summary="Import Kazoo's system_config/pusher document",
        description="Its User-Agents rules and its per-app apple/firebase sections (with their certificates and "
        "keys). Idempotent. A certificate that does not parse is a warning; an invalid regex refuses the whole "
        "document (400, code rule_invalid).",
    )
    @action(detail=False, methods=["post"], url_path="import", permission_classes=[perms_required(
        "registry.add_useragentrule", "registry.change_useragentrule", "push.add_pushapp", "push.change_pushapp",
        "push.add_credential",
    )])
    def import_config(self, request: Request) -> Response:
        params = KazooConfigSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        summary = kazoo_config.kazoo_config_import(document=params.validated_data)
        if summary.changed:
            audit_log(request=request, action="change", model=UserAgentRule,
                      repr_text="Kazoo system_config/pusher import", message="; ".join(summary.lines()))
        return Response(ImportSummarySerializer(summary).data)

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT}, parameters=[],
        summary="Export the rules and apps as Kazoo's system_config/pusher document",
        description="Without any secret (no certificate, key or service account): write-only here.",
    )
    @action(detail=False, methods=["get"], url_path="export", pagination_class=None, filter_backends=[],
            permission_classes=[perms_required("registry.view_useragentrule", "push.view_pushapp")])
    def export_config(self, request: Request) -> Response:
        return Response(kazoo_config.kazoo_config_export())


# --- Devices -----------------------------------------------------------------------------------------


class PushTokenSerializer(serializers.ModelSerializer):
    """A device's push token, in full: provisioning needs it (this is no credential)."""

    kind = serializers.CharField(read_only=True, help_text='"voip" (PushKit), "remote" (visible) or "" (plain)')

    class Meta:
        model = PushToken
        fields = ["id", "token", "token_type", "app", "kind", "sandbox", "proxy", "active", "deactivated_at",
                  "deactivated_reason", "first_seen_at", "last_seen_at"]
        read_only_fields = fields


class DeviceSerializer(serializers.ModelSerializer):
    tokens = PushTokenSerializer(many=True, read_only=True)
    in_sync = serializers.BooleanField(read_only=True, help_text="Kazoo holds the push object (or sync is off)")
    push = serializers.DictField(child=serializers.CharField(), allow_null=True, read_only=True,
                                 help_text="The push object Kazoo's device document holds (null: none)")

    class Meta:
        model = Device
        fields = [
            "id", "account_id", "device_id", "username", "realm", "push", "push_changed_at", "rule_name",
            "sync_status", "in_sync", "push_synced_at", "sync_attempts", "sync_next_at", "sync_error",
            "last_user_agent", "last_contact", "last_proxy_path", "last_registration_at", "last_seen_at", "created_at",
            "tokens",
        ]
        read_only_fields = fields


class DeviceInputSerializer(serializers.Serializer):
    """What an operator may correct on a device (registry.services.DEVICE_EDITABLE): the rest is
    Kazoo's (account, device id) or comes from registrations (push object, tokens)."""

    username = StrictCharField(max_length=255, allow_blank=True, help_text="SIP username (the AOR's user part)")
    realm = StrictCharField(max_length=255, allow_blank=True, help_text="SIP realm (the AOR's domain)")


class DeviceFilterSerializer(serializers.Serializer):
    account_id = StrictCharField(required=False, max_length=64, help_text="Exact")
    device_id = StrictCharField(required=False, max_length=64, help_text="Exact (Authorizing-ID)")
    username = StrictCharField(required=False, max_length=255, help_text="Exact SIP username")
    realm = StrictCharField(required=False, max_length=255, help_text="Realm, case-insensitive")
    token = StrictCharField(required=False, max_length=1024, help_text="Has this push token (exact)")
    active = serializers.BooleanField(required=False,
                                      help_text="Has (true) / has no (false) active push token")
    in_sync = serializers.BooleanField(required=False,
                                       help_text="Kazoo holds the current push object (or sync is off)")
    sync_status = serializers.ChoiceField(choices=SyncStatus.choices, required=False)
    rule = StrictCharField(required=False, max_length=200, help_text="Matched User-Agent rule name")


_IN_SYNC = Q(sync_status__in=[SyncStatus.SYNCED, SyncStatus.LOCAL])


def _active(queryset: Any, value: bool) -> Any:
    has_active = Exists(PushToken.objects.filter(device=OuterRef("pk"), active=True))
    return queryset.filter(has_active) if value else queryset.filter(~has_active)


def _token(queryset: Any, value: str) -> Any:
    return queryset.filter(Exists(PushToken.objects.filter(device=OuterRef("pk"), token=value)))


def _in_sync(queryset: Any, value: bool) -> Any:
    return queryset.filter(_IN_SYNC) if value else queryset.exclude(_IN_SYNC)


class DeviceViewSet(FilteredListMixin, AccountRowsMixin, ServiceChangeMixin, viewsets.ReadOnlyModelViewSet):
    """Kazoo devices seen registering with push parameters, their push object and tokens. Registrations
    create them; an operator may correct the SIP username and realm, or delete one (its next
    registration brings it back)."""

    queryset = Device.objects.prefetch_related("tokens")
    serializer_class = DeviceSerializer
    input_serializer_class = DeviceInputSerializer
    filter_serializer_class = DeviceFilterSerializer
    filter_lookups = {
        "account_id": "account_id", "device_id": "device_id", "username": "username", "realm": "realm__iexact",
        "token": _token, "active": _active, "in_sync": _in_sync, "sync_status": "sync_status", "rule": "rule_name",
    }
    parser_classes = [JSONParser]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["account_id", "device_id", "username", "realm", "last_registration_at", "last_seen_at",
                       "created_at", "sync_status"]
    ordering = ["account_id", "device_id"]
    scoped_access = ScopedAccess()

    def rows_in_scope(self, queryset: Any, scope: AccountScope) -> Any:
        return selectors.devices_in_scope(scope=scope, queryset=queryset)

    def service_update(self, obj: Device, data: dict[str, Any]) -> Device:
        services.device_update(device=obj, **data)
        return self.get_queryset().get(pk=obj.pk)

    def service_delete(self, obj: Device) -> None:
        services.device_delete(device=obj)

    @extend_schema(
        request=None, responses={200: DeliverySerializer},
        summary="Send a test call push to the device",
        description="Kazoo 4.3's `sup pusher_maintenance push AccountId DeviceId`: a synthetic push_req to the "
        "device's push object through the real push path. The answer is the delivery, whatever its outcome; "
        "400 (code pusher_error) when the device has no push object. Needs the push.send_push permission.",
    )
    @action(detail=True, methods=["post"], url_path="push",
            permission_classes=[perms_required("registry.view_device", "push.send_push")])
    def push(self, request: Request, pk: str | None = None) -> Response:
        device = self.get_object()
        delivery = push_services.push_test_send(device=device, source=DeliverySource.API)
        audit_log(request=request, action="change", obj=device,
                  message=f"test push: delivery #{delivery.pk} {delivery.status}")
        return Response(DeliverySerializer(delivery).data)

    @extend_schema(
        request=None, responses={200: DeviceSerializer},
        summary="Push the device's push object to Kazoo now",
        description="Writes the device document's `push` key through Crossbar and answers the device with its "
        "sync state (sync_status local when Kazoo sync is not configured).",
    )
    @action(detail=True, methods=["post"], url_path="sync",
            permission_classes=[perms_required("registry.view_device", "registry.change_device")])
    def sync(self, request: Request, pk: str | None = None) -> Response:
        device = sync.device_sync(device=self.get_object())
        audit_log(request=request, action="change", obj=device, message=f"Kazoo sync: {device.sync_status}")
        device = self.get_queryset().get(pk=device.pk)
        return Response(DeviceSerializer(device).data)



# --- Push tokens ---------------------------------------------------------------------------------------


class PushTokenDetailSerializer(serializers.ModelSerializer):
    """A push token with its device. `token` in full follows the device API: a user who may view
    devices reads full tokens there already (provisioning needs them); to anyone else it is null,
    and `token_masked` is what they see."""

    token = serializers.SerializerMethodField(
        help_text="The full token for users with the registry.view_device permission (GET /devices/ shows it to "
        "them), else null"
    )
    token_masked = serializers.CharField(read_only=True)
    kind = serializers.CharField(read_only=True, help_text='"voip" (PushKit), "remote" (visible) or "" (plain)')
    account_id = serializers.CharField(source="device.account_id", read_only=True)
    device_id = serializers.CharField(source="device.device_id", read_only=True,
                                      help_text="Kazoo's device id (Authorizing-ID)")

    class Meta:
        model = PushToken
        fields = ["id", "device", "account_id", "device_id", "token", "token_masked", "token_type", "app", "kind",
                  "sandbox", "proxy", "active", "deactivated_at", "deactivated_reason", "first_seen_at",
                  "last_seen_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_token(self, obj: PushToken) -> str | None:
        request = self.context.get("request")
        user = getattr(request, "user", None)
        return obj.token if user is not None and user.has_perm("registry.view_device") else None


class PushTokenFilterSerializer(serializers.Serializer):
    device = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INT, help_text="Device id")
    account_id = StrictCharField(required=False, max_length=64, help_text="Exact")
    device_id = StrictCharField(required=False, max_length=64, help_text="Exact (Authorizing-ID)")
    token = StrictCharField(required=False, max_length=1024, help_text="Exact")
    app = StrictCharField(required=False, max_length=255, help_text="Token-App, exact")
    token_type = StrictCharField(required=False, max_length=32, help_text="Token-Type, exact")
    kind = serializers.ChoiceField(choices=["voip", "remote", "plain"], required=False,
                                   help_text='"plain": the tokens whose kind is ""')
    active = serializers.BooleanField(required=False)
    sandbox = serializers.BooleanField(required=False)


def _kind(queryset: Any, value: str) -> Any:
    return queryset.filter(kind=TokenKind.PLAIN if value == "plain" else value)


class TokenDeactivateSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, max_length=300,
                             help_text='Recorded as the deactivation reason (default "deactivated by <user>")')


class PushTokenViewSet(FilteredListMixin, AccountRowsMixin, viewsets.ReadOnlyModelViewSet):
    """Devices' push tokens, as registrations brought them (tokens/ of a device are in its `tokens`
    too). Deactivate one to stop pushing to it (a push object built on it is cleared, as for a token a
    provider declares dead); reactivate to push to it again."""

    queryset = PushToken.objects.select_related("device")
    serializer_class = PushTokenDetailSerializer
    filter_serializer_class = PushTokenFilterSerializer
    filter_lookups = {
        "device": "device_id", "account_id": "device__account_id", "device_id": "device__device_id",
        "token": "token", "app": "app", "token_type": "token_type", "kind": _kind, "active": "active",
        "sandbox": "sandbox",
    }
    parser_classes = [JSONParser]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["last_seen_at", "first_seen_at", "deactivated_at", "app", "token_type", "active"]
    ordering = ["-last_seen_at", "-id"]
    scoped_access = ScopedAccess()

    def rows_in_scope(self, queryset: Any, scope: AccountScope) -> Any:
        return selectors.push_tokens_in_scope(scope=scope, queryset=queryset)

    @extend_schema(
        request=TokenDeactivateSerializer, responses={200: PushTokenDetailSerializer},
        summary="Deactivate a token: stop pushing to it",
        description="registry.services.push_token_deactivate, as the admin's action: the token is marked inactive "
        "with the reason, and the device's push object is cleared when it is built on this token (Kazoo stops "
        "building push endpoints for it; the phone's next REGISTER brings one back). An inactive token is left "
        "as it is.",
    )
    @action(detail=True, methods=["post"], url_path="deactivate",
            permission_classes=[perms_required("registry.view_pushtoken", "registry.change_pushtoken")])
    def deactivate(self, request: Request, pk: str | None = None) -> Response:
        token = self.get_object()
        params = TokenDeactivateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        reason = params.validated_data.get("reason") or f"deactivated by {request.user.get_username()}"
        token = services.push_token_deactivate(token=token, reason=reason)
        audit_log(request=request, action="change", obj=token, message=f"deactivated: {token.deactivated_reason}")
        return Response(self.get_serializer(token).data)

    @extend_schema(
        request=None, responses={200: PushTokenDetailSerializer},
        summary="Reactivate a token: push to it again",
        description="registry.services.push_token_reactivate, as the admin's action. A push object cleared with "
        "it is rebuilt by the phone's next REGISTER. An active token is left as it is.",
    )
    @action(detail=True, methods=["post"], url_path="reactivate",
            permission_classes=[perms_required("registry.view_pushtoken", "registry.change_pushtoken")])
    def reactivate(self, request: Request, pk: str | None = None) -> Response:
        token = services.push_token_reactivate(token=self.get_object())
        audit_log(request=request, action="change", obj=token, message="reactivated")
        return Response(self.get_serializer(token).data)
