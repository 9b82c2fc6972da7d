"""REST API of scoped API tokens, for superusers only (never through a scoped token): list, make
(the answer is the only one that carries the key), revoke. Every write goes through
tenancy.services, as the admin's do."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import PusherError
from pusher_site.api.conventions import (
    FilteredListMixin,
    IsSuperuser,
    Pagination,
    StrictBooleanField,
    StrictCharField,
    api_schema,
    audit_log,
)
from pusher_site.api.parsers import JSONParser
from tenancy import selectors, services
from tenancy.models import Grant, ScopedToken, TokenState
from tenancy.scope import SCOPE_ACCOUNTS_MAX, account_ids_clean


class ScopedTokenSerializer(serializers.ModelSerializer):
    """A scoped token, without its key (only a hash is kept; the key was shown once)."""

    owner = serializers.CharField(source="owner.get_username", read_only=True, help_text="The owner's username")
    account_ids = serializers.ListField(child=serializers.CharField(), read_only=True)
    # ScopedToken.state() now: active, expired or revoked.
    state = serializers.ChoiceField(choices=TokenState.choices, read_only=True)

    class Meta:
        model = ScopedToken
        fields = ["id", "name", "owner", "key_prefix", "account_ids", "grant_apps",
                  "grant_credentials", "grant_rules_write", "state", "created_at", "last_used_at", "expires_at",
                  "revoked_at"]
        read_only_fields = fields


class ScopedTokenCreatedSerializer(ScopedTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="The key, shown this once: `Authorization: Bearer <key>`")

    class Meta(ScopedTokenSerializer.Meta):
        fields = [*ScopedTokenSerializer.Meta.fields, "key"]
        read_only_fields = fields


class UsernameField(serializers.SlugRelatedField):
    """A user by username; a username is text (5 is refused, not read as "5")."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ScopedTokenInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=services.NAME_MAX_LENGTH,
                           help_text="Who holds it, e.g. the reseller's provisioning system")
    owner = UsernameField(
        slug_field=get_user_model().USERNAME_FIELD, queryset=get_user_model().objects.all(),
        help_text="The owner's username: the token acts as this user, never with more than the user's permissions",
    )
    account_ids = serializers.ListField(
        child=StrictCharField(max_length=32, min_length=32), min_length=1, max_length=SCOPE_ACCOUNTS_MAX,
        help_text="Kazoo account ids (32 lowercase hex digits): the accounts whose rows the token sees",
    )
    grant_apps = StrictBooleanField(default=False, help_text=Grant.APPS.label)
    grant_credentials = StrictBooleanField(default=False, help_text=Grant.CREDENTIALS.label)
    grant_rules_write = StrictBooleanField(default=False, help_text=Grant.RULES_WRITE.label)
    expires_at = serializers.DateTimeField(required=False, allow_null=True,
                                           help_text="Refused from then on; null or absent: never")

    def validate_account_ids(self, value: list[str]) -> list[str]:
        # The service's own check, asked here so the refusal names the field (the service checks again).
        try:
            return list(account_ids_clean(value))
        except PusherError as exc:
            raise serializers.ValidationError(exc.message) from exc


class ScopedTokenFilterSerializer(serializers.Serializer):
    owner = StrictCharField(required=False, max_length=150, help_text="Owner's username, exact")
    state = serializers.ChoiceField(choices=TokenState.choices, required=False)


def _in_state(queryset: Any, value: str) -> Any:
    return selectors.scoped_tokens_in_state(state=value, queryset=queryset)


class ScopedTokenViewSet(FilteredListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                         viewsets.GenericViewSet):
    """API tokens limited to a set of Kazoo accounts (`Authorization: Bearer <key>`), for resellers'
    provisioning systems. Superusers only. A token is made and revoked, never edited or deleted."""

    queryset = ScopedToken.objects.select_related("owner")
    serializer_class = ScopedTokenSerializer
    filter_serializer_class = ScopedTokenFilterSerializer
    filter_lookups = {"owner": f"owner__{get_user_model().USERNAME_FIELD}", "state": _in_state}
    permission_classes = [IsSuperuser]
    parser_classes = [JSONParser]
    pagination_class = Pagination
    schema = api_schema()
    ordering_fields = ["created_at", "name", "last_used_at", "expires_at"]
    ordering = ["-created_at", "-id"]

    @extend_schema(
        request=ScopedTokenInputSerializer, responses={201: ScopedTokenCreatedSerializer},
        summary="Make a scoped token",
        description="The answer carries the key, this once: only a hash of it is kept.",
    )
    def create(self, request: Request) -> Response:
        params = ScopedTokenInputSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        created = services.scoped_token_create(
            name=data["name"], owner=data["owner"], account_ids=data["account_ids"],
            grants=[grant for grant in Grant.values if data[f"grant_{grant}"]], expires_at=data.get("expires_at"),
        )
        token = created.token
        audit_log(request=request, action="add", obj=token,
                  message=f"accounts {', '.join(token.account_ids)}; grants {', '.join(token.grants) or 'none'}")
        answer = ScopedTokenCreatedSerializer(token).data
        answer["key"] = created.key
        return Response(answer, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None, responses={200: ScopedTokenSerializer},
        summary="Revoke a scoped token",
        description="Refused from its next request on (401). Revoking a revoked token changes nothing.",
    )
    @action(detail=True, methods=["post"], url_path="revoke")
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        token = services.scoped_token_revoke(token=self.get_object())
        audit_log(request=request, action="change", obj=token, message="revoked")
        return Response(ScopedTokenSerializer(token).data)
