"""REST API of the token reporters (apps that report their push token over HTTP: Acrobits' Push
Token Reporter). Input serializer -> registry.reporting -> output serializer; the secret is
write-only, as a credential's."""

from __future__ import annotations

from typing import Any

from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from rest_framework import serializers, viewsets

from pusher_site.api.conventions import (
    FilteredListMixin,
    JSONObjectField,
    Pagination,
    ServiceWriteMixin,
    StrictBooleanField,
    StrictCharField,
    api_schema,
)
from pusher_site.api.parsers import JSONParser
from registry import reporting
from registry.models import ReporterAuth, TokenEncoding, TokenReporter
from registry.reporter import SECRET_MAX_CHARS, acrobits_url_template


class TokenReporterSerializer(serializers.ModelSerializer):
    url_template = serializers.SerializerMethodField(
        help_text="The pushTokenReporterUrl to provision an Acrobits app with, relative to pusher's address "
        '("<secret>" stands for the secret)'
    )

    class Meta:
        model = TokenReporter
        fields = ["id", "slug", "enabled", "description", "auth", "parameters", "fixed", "token_encoding",
                  "user_agent_regex", "proxy", "url_template", "created_at", "updated_at"]
        read_only_fields = fields

    def get_url_template(self, obj: TokenReporter) -> str:
        return acrobits_url_template(slug=obj.slug, parameters=obj.parameters or {},
                                     signed=obj.auth == ReporterAuth.SIGNATURE)


class TokenReporterInputSerializer(serializers.Serializer):
    slug = serializers.SlugField(max_length=64, help_text="Its URL: /report/<slug>/...")
    secret = StrictCharField(
        write_only=True, max_length=SECRET_MAX_CHARS, trim_whitespace=False,
        help_text="24 to 128 letters, digits, '-' or '_': in the report URL's path, or the key of the request "
        "signature. Write-only: never shown again.",
    )
    enabled = StrictBooleanField(required=False)
    description = StrictCharField(required=False, allow_blank=True, max_length=300)
    auth = serializers.ChoiceField(choices=ReporterAuth.choices, required=False)
    parameters = JSONObjectField(
        required=False, help_text='Key -> the request parameter holding it, e.g. {"Username": "username", "Realm": '
        '"realm", "Token-ID": "pushToken", "VoIP-Token-ID": "pushTokenIncomingCall", "Token-App": "pushappid"} '
        "(default: Acrobits' variable names)",
    )
    fixed = JSONObjectField(required=False, help_text='Values no request carries, e.g. {"Token-Type": "apple"}')
    token_encoding = serializers.ChoiceField(choices=TokenEncoding.choices, required=False)
    user_agent_regex = StrictCharField(
        required=False, allow_blank=True, max_length=1000, trim_whitespace=False,
        help_text="Registrations whose User-Agent matches are remembered without a token so that reports find their "
        "device; only those devices take this reporter's reports",
    )
    proxy = StrictCharField(required=False, allow_blank=True, max_length=500,
                            help_text="Token-Proxy of the push objects stored (default: the device's last Proxy-Path)")


class TokenReporterUpdateSerializer(TokenReporterInputSerializer):
    secret = StrictCharField(write_only=True, required=False, max_length=SECRET_MAX_CHARS, trim_whitespace=False,
                             help_text="A new secret; leave out to keep the stored one")


class TokenReporterFilterSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    slug = StrictCharField(required=False, max_length=64, help_text="Exact")


@method_decorator(sensitive_post_parameters("secret"), name="dispatch")
class TokenReporterViewSet(FilteredListMixin, ServiceWriteMixin, viewsets.ModelViewSet):
    """Apps whose push tokens come over HTTP instead of in their Contact (Acrobits' Push Token Reporter:
    Groundwire and white-label apps). Reports go to /report/<slug>/<secret>/ (not under /api/)."""

    queryset = TokenReporter.objects.all()
    serializer_class = TokenReporterSerializer
    input_serializer_class = TokenReporterInputSerializer
    update_serializer_class = TokenReporterUpdateSerializer
    filter_serializer_class = TokenReporterFilterSerializer
    filter_lookups = {"enabled": "enabled", "slug": "slug"}
    parser_classes = [JSONParser]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["slug", "enabled", "created_at", "updated_at"]
    ordering = ["slug"]

    def service_create(self, data: dict[str, Any]) -> TokenReporter:
        return reporting.token_reporter_create(**data)

    def service_update(self, obj: TokenReporter, data: dict[str, Any]) -> TokenReporter:
        return reporting.token_reporter_update(reporter=obj, **data)

    def service_delete(self, obj: TokenReporter) -> None:
        reporting.token_reporter_delete(reporter=obj)
