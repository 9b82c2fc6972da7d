"""REST API of the push side: apps, credentials, push_req over HTTP, and Kamailio's
push-notifications-role `POST /api/v1/send` (the delivery log: delivery_api.py).

Every write is input serializer -> service (push.services) -> output serializer, the same service
the admin and the commands call (STYLE rule 11). Secrets are write-only: no serializer here has a
field that reads Credential.secret.
"""

from __future__ import annotations

import json
from typing import Any, cast

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import authentication, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import PusherError
from push import services
from push.credentials import credential_secret_given
from push.models import (
    APNS_PRIORITIES,
    MAX_PUSH_LIFETIME_S,
    Credential,
    CredentialKind,
    DeliverySource,
    DeliveryStatus,
    Provider,
    PushApp,
)
from pusher_site.api.auth import ScopedAccess, ScopedTokenAuthentication, request_scope
from pusher_site.api.conventions import (
    MAX_INT,
    CanSendPush,
    ErrorSerializer,
    FilteredListMixin,
    JSONObjectField,
    Pagination,
    ServiceWriteMixin,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
    StrictModelSerializer,
    api_schema,
    audit_log,
    json_text_validator,
    perms_required,
)
from pusher_site.api.delivery_api import DeliverySerializer
from pusher_site.api.parsers import JSONParser
from tenancy.models import Grant

# --- Credentials ---------------------------------------------------------------------------------


class CredentialSerializer(serializers.ModelSerializer):
    """A credential's parsed, non-secret facts. The secret itself never comes back out."""

    days_to_expiry = serializers.IntegerField(read_only=True, allow_null=True)
    apps = cast(  # many=True makes a ManyRelatedField, which the stubs cannot say
        serializers.ManyRelatedField,
        serializers.PrimaryKeyRelatedField(many=True, read_only=True, help_text="Push apps using it"),
    )
    # False, with the reason, also when the stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY.
    usable = serializers.BooleanField(source="effectively_usable", read_only=True)
    unusable_reason = serializers.CharField(source="effective_unusable_reason", read_only=True)

    class Meta:
        model = Credential
        fields = [
            "id", "name", "kind", "subject", "topics", "environment", "not_before", "not_after", "days_to_expiry",
            "fingerprint_sha256", "key_id", "team_id", "project_id", "client_email", "usable", "unusable_reason",
            "warnings", "apps", "created_at", "updated_at",
        ]
        read_only_fields = fields


@extend_schema_field({
    "oneOf": [{"type": "string"}, {"type": "object", "additionalProperties": {}}],
    "writeOnly": True,
    "description": "The secret as text: PEM certificate + key, .p8 key, service-account JSON (as text or as an "
    "object), legacy server key, or a base64-encoded .p12. Alternatively upload it as `file` (multipart).",
})
class SecretField(serializers.Field):
    default_error_messages = {"invalid": "Expected the secret as text or (a service account) as a JSON object."}

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, dict):
            json_text_validator(data)
            return json.dumps(data)
        if not isinstance(data, str):
            self.fail("invalid")
        json_text_validator(data)
        return data

    def to_representation(self, value: Any) -> None:  # write-only: never rendered
        return None


MAX_SECRET_BYTES = 1024 * 1024


class CredentialInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200)
    kind = StrictChoiceField(choices=CredentialKind.choices)
    file = serializers.FileField(required=False, write_only=True, help_text="The secret as an uploaded file")
    data = SecretField(required=False, write_only=True)  # type: ignore[assignment]  # (as DeliveryFilterSerializer.source)
    password = StrictCharField(
        required=False, allow_blank=True, write_only=True, trim_whitespace=False, max_length=1000,
        help_text="PKCS#12 password, if any",
    )
    key_id = StrictCharField(required=False, allow_blank=True, max_length=64, help_text="APNs token key only")
    team_id = StrictCharField(required=False, allow_blank=True, max_length=64, help_text="APNs token key only")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        upload = attrs.pop("file", None)
        if upload is not None and upload.size > MAX_SECRET_BYTES:
            raise serializers.ValidationError({"file": ["A credential file is at most 1 MiB."]})
        try:
            given = credential_secret_given(uploaded=upload.read() if upload is not None else None,
                                            text=attrs.get("data"))
        except PusherError as exc:
            raise serializers.ValidationError(f"{exc.message} (`file` or `data`)") from exc
        if given is not None:
            attrs["data"] = given
        if self.instance is None and not attrs.get("data"):
            raise serializers.ValidationError("the secret is required: upload it as `file` or send it as `data`")
        return attrs


class CredentialFilterSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=CredentialKind.choices, required=False)
    usable = serializers.BooleanField(required=False)
    expires_before = serializers.DateTimeField(required=False, help_text="not_after before this time")


@method_decorator(sensitive_post_parameters("data", "password"), name="dispatch")
class CredentialViewSet(FilteredListMixin, ServiceWriteMixin, viewsets.ModelViewSet):
    """APNs certificates and token keys, FCM service accounts. Upload as multipart (`file`) or JSON
    (`data`); the answer carries only what was parsed from the secret."""

    queryset = Credential.objects.prefetch_related("apps")
    serializer_class = CredentialSerializer
    input_serializer_class = CredentialInputSerializer
    filter_serializer_class = CredentialFilterSerializer
    filter_lookups = {"kind": "kind", "usable": "usable", "expires_before": "not_after__lt"}
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["name", "kind", "not_after", "usable", "created_at", "updated_at"]
    ordering = ["name"]
    scoped_access = ScopedAccess(default=(Grant.CREDENTIALS,))  # credentials are no account's

    def service_create(self, data: dict[str, Any]) -> Credential:
        return services.credential_create(**data)

    def service_update(self, obj: Credential, data: dict[str, Any]) -> Credential:
        return services.credential_update(credential=obj, **data)

    def service_delete(self, obj: Credential) -> None:
        services.credential_delete(credential=obj)

    def added_message(self, obj: Credential) -> str:
        return f"added {obj.kind}"


# --- Push apps -----------------------------------------------------------------------------------


class CredentialSummarySerializer(serializers.ModelSerializer):
    usable = serializers.BooleanField(source="effectively_usable", read_only=True)

    class Meta:
        model = Credential
        fields = ["id", "name", "kind", "usable", "not_after"]
        read_only_fields = fields


class PushAppSerializer(serializers.ModelSerializer):
    credential = CredentialSummarySerializer(read_only=True, allow_null=True)
    effective_topic = serializers.CharField(read_only=True, help_text="The topic used: topic, or the app id "
                                            "without a trailing .dev/.prod (Kazoo's rule)")
    warnings = serializers.SerializerMethodField(
        help_text="What to fix before it can push: its credential cannot send, or its certificate does not cover "
        "the topic it pushes to (push.services.push_app_warnings, as the admin and the commands show them)"
    )

    class Meta:
        model = PushApp
        fields = [
            "id", "app_id", "provider", "enabled", "credential", "description", "host", "port", "topic",
            "effective_topic", "push_type", "priority", "expiration", "collapse_id", "extra_headers", "project_id",
            "android_priority", "ttl_s", "flagged_reason", "bad_device_token_count", "warnings", "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_warnings(self, app: PushApp) -> list[str]:
        return list(services.push_app_warnings(app=app))


class StrictPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(data)


class PushAppInputSerializer(StrictModelSerializer):
    credential = StrictPrimaryKeyRelatedField(
        queryset=Credential.objects.all(), allow_null=True, required=False, help_text="Credential id"
    )
    # Checked by the service (push.services.push_app_address), which also splits a `host:port`.
    host = StrictCharField(max_length=255, required=False,
                           help_text="APNs host name or IP address; `host:port` sets the port too")
    port = StrictIntegerField(min_value=1, max_value=65535, required=False)
    # The model's rule (PushApp.clean), repeated for the schema and per-field errors.
    priority = StrictChoiceField(choices=[(p, str(p)) for p in APNS_PRIORITIES], required=False,
                                       help_text="apns-priority: 10 immediate, 5 power-considerate, 1 lowest")
    extra_headers = serializers.DictField(
        child=StrictCharField(allow_blank=True, max_length=1000), required=False,
        validators=[json_text_validator], help_text="Extra APNs headers; Kazoo's apns_* names are accepted",
    )
    expiration = StrictIntegerField(min_value=0, max_value=MAX_PUSH_LIFETIME_S, allow_null=True, required=False,
                                          help_text="Seconds the push stays valid at Apple; 0 = now or never")
    ttl_s = StrictIntegerField(min_value=0, max_value=MAX_PUSH_LIFETIME_S, required=False, help_text="FCM TTL (s)")

    class Meta:
        model = PushApp
        fields = [
            "app_id", "provider", "enabled", "credential", "description", "host", "port", "topic", "push_type",
            "priority", "expiration", "collapse_id", "extra_headers", "project_id", "android_priority", "ttl_s",
        ]


class PushAppUpdateSerializer(PushAppInputSerializer):
    class Meta(PushAppInputSerializer.Meta):
        fields = [*PushAppInputSerializer.Meta.fields, "flagged_reason"]


class PushAppFilterSerializer(serializers.Serializer):
    provider = serializers.ChoiceField(choices=Provider.choices, required=False)
    enabled = serializers.BooleanField(required=False)
    app_id = StrictCharField(required=False, max_length=255, help_text="Token-App, exact")
    credential = serializers.IntegerField(required=False, min_value=1, max_value=MAX_INT, help_text="Credential id")
    flagged = serializers.BooleanField(required=False,
                                       help_text="Flagged by repeated BadDeviceToken answers")


class AppTestPushSerializer(serializers.Serializer):
    token = StrictCharField(max_length=1024, help_text="A device token of this app")


def _flagged(queryset: Any, value: bool) -> Any:
    return queryset.exclude(flagged_reason="") if value else queryset.filter(flagged_reason="")


class PushAppViewSet(FilteredListMixin, ServiceWriteMixin, viewsets.ModelViewSet):
    """Push apps, keyed as Kazoo keys them: (Token-App, provider)."""

    queryset = PushApp.objects.select_related("credential")
    serializer_class = PushAppSerializer
    input_serializer_class = PushAppInputSerializer
    update_serializer_class = PushAppUpdateSerializer
    filter_serializer_class = PushAppFilterSerializer
    filter_lookups = {
        "provider": "provider", "enabled": "enabled", "app_id": "app_id", "credential": "credential_id",
        "flagged": _flagged,
    }
    parser_classes = [JSONParser]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["app_id", "provider", "enabled", "created_at", "updated_at"]
    ordering = ["app_id", "provider"]
    scoped_access = ScopedAccess(default=(Grant.APPS,))  # apps are no account's

    def service_create(self, data: dict[str, Any]) -> PushApp:
        return services.push_app_upsert(**data)

    def service_update(self, obj: PushApp, data: dict[str, Any]) -> PushApp:
        return services.push_app_update(app=obj, **data)

    def service_delete(self, obj: PushApp) -> None:
        services.push_app_delete(app=obj)

    @extend_schema(
        request=AppTestPushSerializer, responses={200: DeliverySerializer},
        summary="Send a test call push from this app to a device token",
        description="Kazoo's synthetic push_req (as `sup pusher_maintenance push` builds it) through the real push "
        "path; the answer is the delivery, whatever its outcome. Needs the push.send_push permission.",
    )
    @action(detail=True, methods=["post"], url_path="push",
            permission_classes=[perms_required("push.view_pushapp", "push.send_push")])
    def push(self, request: Request, pk: str | None = None) -> Response:
        app = self.get_object()
        params = AppTestPushSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        delivery = services.push_app_test_send(app=app, token=params.validated_data["token"],
                                               source=DeliverySource.API, scope=request_scope(request))
        audit_log(request=request, action="change", obj=app,
                  message=f"test push: delivery #{delivery.pk} {delivery.status}")
        return Response(DeliverySerializer(delivery).data)


# --- push_req over HTTP --------------------------------------------------------------------------

# Field names are Kazoo's wire names (push_req, PROTOCOL §4), hyphens included: built with type()
# because they are not Python identifiers.
PushRequestSerializer = type("PushRequestSerializer", (serializers.Serializer,), {
    "__doc__": "A push_req body as Kamailio publishes it on AMQP (the envelope fields may be left out).",
    "Token-ID": StrictCharField(max_length=1024, help_text="The device token"),
    "Token-Type": StrictCharField(max_length=32, help_text="apple/apns/apns.dev or firebase/google/android/fcm/gcm"),
    "Token-App": StrictCharField(max_length=255, help_text="The app id a push app is configured for"),
    "Payload": JSONObjectField(required=False, help_text="Merged into the APNs body / FCM data"),
    "Call-ID": StrictCharField(required=False, allow_blank=True, max_length=255),
    "Msg-ID": StrictCharField(required=False, max_length=255,
                                    help_text="Deduplication: a second push_req with the same Msg-ID is not sent"),
    "Alert-Key": StrictCharField(required=False, allow_blank=True, max_length=255),
    "Alert-Params": serializers.ListField(child=StrictCharField(allow_blank=True, max_length=1000),
                                          required=False, max_length=20),
    "Alert-Body": StrictCharField(required=False, allow_blank=True, max_length=2000,
                                        help_text="2015-era alert text (instead of Alert-Key/Alert-Params)"),
    "Sound": StrictCharField(required=False, allow_blank=True, max_length=255),
    "Account-ID": StrictCharField(required=False, allow_blank=True, max_length=64),
    "Endpoint-ID": StrictCharField(required=False, allow_blank=True, max_length=64),
    "Expires": StrictIntegerField(required=False, min_value=0, max_value=3600,
                                        help_text="Seconds the push may take (default PUSHER_PUSH_DEADLINE_S)"),
})


class PushRequestViewSet(viewsets.ViewSet):
    """push_req over HTTP: handled exactly as the AMQP consumer handles one."""

    permission_classes = [CanSendPush]
    parser_classes = [JSONParser]
    schema = api_schema()
    scoped_access = ScopedAccess()

    @extend_schema(
        request=PushRequestSerializer, responses={200: DeliverySerializer},
        summary="Send a push_req",
        description="The same fields Kamailio's pusher role publishes on AMQP, handled by the same code "
        "(push_request_handle): the answer is the delivery, synchronously, within the push deadline; its "
        "`status` says whether the provider accepted it. Needs the push.send_push permission.",
    )
    def create(self, request: Request) -> Response:
        params = PushRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        delivery = services.push_request_handle_in_scope(
            fields=dict(params.validated_data), source=DeliverySource.API, scope=request_scope(request)
        )
        return Response(DeliverySerializer(delivery).data)


# --- Kamailio's push-notifications-role: POST /api/v1/send ---------------------------------------

SEND_PAYLOAD_KEYS = (
    "remote_name", "remote_number", "local_number", "inception_number", "token_proxy", "push_id", "ring_tone",
)


@extend_schema_field({
    "type": "object",
    "properties": {key: {"type": "string"} for key in SEND_PAYLOAD_KEYS},
    "additionalProperties": {"type": "string"},
    "description": "Passed to the phone app as is (plus Kazoo's call-id, proxy, caller-id-number, caller-id-name).",
})
class SendPayloadField(serializers.DictField):
    child = StrictCharField(allow_blank=True, max_length=2000, trim_whitespace=False)


class SendRequestSerializer(serializers.Serializer):
    """The JSON kazoo-configs-kamailio's push-notifications-role.cfg POSTs (routes NEWCALL_PUSH and
    MISSED_CALL_PUSH)."""

    name = StrictCharField(max_length=600, help_text="The callee's AOR (X-KAZOO-AOR): sip:user@realm")
    app_name = StrictCharField(required=False, allow_blank=True, max_length=255,
                                     help_text="PUSH_NOTIFICATIONS_APP_NAME; informational (each token names its app)")
    type = StrictChoiceField(choices=services.NOTIFY_KINDS)
    expiry = StrictIntegerField(required=False, min_value=0, max_value=3600,
                                      help_text="Seconds the push is worth sending (20 for incoming_call)")
    silent = StrictBooleanField(required=False, help_text="Sent with incoming_call (a VoIP push is silent)")
    mutable = StrictBooleanField(required=False, help_text="missed_call: APNs mutable-content")
    sound = StrictCharField(required=False, allow_blank=True, max_length=255)
    text = StrictCharField(required=False, allow_blank=True, max_length=1000,
                                 help_text="missed_call: the notification text")
    payload = SendPayloadField(required=False, validators=[json_text_validator])


class SendResponseSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=["sent", "push_failed"])
    message = serializers.CharField()
    name = serializers.CharField()
    type = serializers.CharField()
    sent = serializers.IntegerField(help_text="How many pushes a provider accepted")
    deliveries = DeliverySerializer(many=True)


class SendViewSet(viewsets.ViewSet):
    """Kamailio's HTTP push service: kazoo-configs-kamailio `kamailio/push-notifications-role.cfg`
    (2024, PUSH_NOTIFICATIONS_ROLE) calls `http_connect("pushsrv", "/api/v1/send", "application/json",
    $var(payload), "$avp(result)")` with `pushsrv=>PUSH_NOTIFICATIONS_URL`.

    Request, built by string concatenation in the cfg (a backslash in a display name makes it
    invalid JSON: 400):
      route[NEWCALL_PUSH]:  {"name": "<X-KAZOO-AOR: sip:user@realm>", "app_name": "<PUSH_NOTIFICATIONS_APP_NAME>",
                             "expiry": 20, "type": "incoming_call", "silent": true,
                             "payload": {"remote_name", "remote_number", "local_number", "inception_number",
                                         "token_proxy" (newer cfg), "push_id": <Call-ID>, "ring_tone"?}}
      route[MISSED_CALL_PUSH]: {"name", "app_name", "type": "missed_call", "mutable": true, "sound": "default",
                             "text": "Missed call from <From user>",
                             "payload": {"remote_name", "remote_number", "local_number", "push_id"}}
    Answer: Kamailio reads only the status. NEWCALL_PUSH treats anything but 200 as a failure (logs
    it, replies 404 Not Found to the caller); MISSED_CALL_PUSH ignores it. So: 200 when a provider
    accepted a push, 502 when every push failed, 404 (unknown_aor / no_token) when there was nothing
    to push to. Details: docs/api.md.

    Kamailio's http_client cannot add headers, so it authenticates with HTTP Basic (user:password in
    PUSH_NOTIFICATIONS_URL); Basic is listed first so a 401 challenges for it (curl then answers)."""

    authentication_classes = [
        authentication.BasicAuthentication, authentication.TokenAuthentication, ScopedTokenAuthentication,
        authentication.SessionAuthentication,
    ]
    permission_classes = [CanSendPush]
    parser_classes = [JSONParser]
    schema = api_schema()
    scoped_access = ScopedAccess()

    @extend_schema(
        operation_id="v1_send_create",
        request=SendRequestSerializer,
        responses={
            200: SendResponseSerializer,
            404: OpenApiResponse(ErrorSerializer, description="No device for the AOR, or none with a suitable token "
                                 "(code unknown_aor / no_token)"),
            502: OpenApiResponse(SendResponseSerializer, description="Every push failed (code push_failed)"),
        },
        summary="Push to the devices of an AOR (Kamailio push-notifications-role)",
        description="`incoming_call`: the app's VoIP / high-priority call push. `missed_call`: a visible "
        "notification, on iOS to the device's remote token with apns-push-type alert, never a VoIP push. "
        "Kamailio treats any answer but 200 as a failure (NEWCALL_PUSH replies 404 to the caller). "
        "Needs the push.send_push permission.",
    )
    def create(self, request: Request) -> Response:
        params = SendRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        try:
            notification = services.Notification(
                kind=data["type"], payload=data.get("payload", {}), expiry=data.get("expiry"),
                sound=data.get("sound", ""), text=data.get("text", ""), mutable=data.get("mutable", False),
            )
            deliveries = services.push_notify_aor(
                aor=data["name"], notification=notification, source=DeliverySource.HTTP_SEND,
                scope=request_scope(request),
            )
        except PusherError as exc:
            if exc.code in ("unknown_aor", "no_token"):
                return Response({"code": exc.code, "message": exc.message}, status=status.HTTP_404_NOT_FOUND)
            raise
        sent = sum(1 for d in deliveries if d.status == DeliveryStatus.SENT)
        answer = {
            "code": "sent" if sent else "push_failed",
            "message": f"{sent} of {len(deliveries)} push(es) accepted",
            "name": data["name"],
            "type": data["type"],
            "sent": sent,
            "deliveries": DeliverySerializer(deliveries, many=True).data,
        }
        return Response(answer, status=status.HTTP_200_OK if sent else status.HTTP_502_BAD_GATEWAY)
