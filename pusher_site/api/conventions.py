"""API conventions shared by every resource: permissions, the one exception handler, the audit log
helper, query-parameter filters and the OpenAPI schema class that documents the error answers."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import DataError, models, transaction
from django.db.models import Model, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import ErrorDetail
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import PusherError
from core.text import text_storable_problem
from pusher_site.api.auth import request_scope, scoped_token_of, scoped_token_permits
from tenancy.scope import AccountScope, OutOfScope

log = logging.getLogger(__name__)


# --- Permissions -------------------------------------------------------------------------------


# Every permission class of the API asks scoped_token_permits too: a scoped token (which acts as its
# owner) may use a view only as the view's `scoped_access` allows (pusher_site.api.auth).


class ModelPermissions(permissions.DjangoModelPermissions):
    """Django's model permissions, with `view` required for reads (DRF's default lets any
    authenticated user read)."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request: Any, view: Any) -> bool:
        return super().has_permission(request, view) and scoped_token_permits(request, view)


class CanSendPush(permissions.BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("push.send_push")
                    and scoped_token_permits(request, view))


class IsSuperuser(permissions.BasePermission):
    """Superusers only, and never through a scoped token (whose owner may be one): what grants
    access to accounts is not itself granted."""

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_superuser and scoped_token_of(request) is None)


def perms_required(*perms: str) -> type[permissions.BasePermission]:
    """A permission class requiring every one of `perms` (Django permission names), for actions whose
    HTTP method says nothing about the permission they need (a POST that only reads, a POST that
    changes a row)."""

    class _Perms(permissions.BasePermission):
        required = perms

        def has_permission(self, request: Any, view: Any) -> bool:
            user = request.user
            return bool(user and user.is_authenticated and user.has_perms(perms)
                        and scoped_token_permits(request, view))

    _Perms.__name__ = "Perms_" + "_".join(p.replace(".", "_") for p in perms)
    return _Perms


# --- Errors ------------------------------------------------------------------------------------


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Domain errors -> 400 with a stable code; DRF's errors as DRF answers them; anything else as
    JSON too (pusher_site.api.errors: 413 for a body too large, else a 500 without the traceback).

    DataError is the database refusing a value no validator caught (a character PostgreSQL cannot
    store, a number out of range): bad input, so 400 rather than a 500."""
    from rest_framework.views import exception_handler as drf_exception_handler  # circular at import time

    from pusher_site.api.errors import unhandled_response

    if isinstance(exc, OutOfScope):
        # As a row that does not exist: a scoped token learns nothing of other accounts.
        return Response({"code": exc.code, "message": exc.message}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, PusherError):
        return Response({"code": exc.code, "message": exc.message}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DataError):
        log.warning("API request refused by the database: %s", exc)
        return Response(
            {"code": "invalid_data", "message": "a value cannot be stored (invalid characters or out of range)"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return unhandled_response(exc, context)
    response.data = error_text_encodable(response.data)
    return response


# U+D800..U+DFFF: in a str decoded from JSON, always a lone surrogate (a valid pair decodes to one
# character), which UTF-8 cannot encode.
_SURROGATE = re.compile("[\ud800-\udfff]")


def error_text_encodable(data: Any) -> Any:
    """An error answer's data with every lone surrogate replaced by U+FFFD. DRF's messages echo the
    value refused (`"\\ud800" is not a valid choice.`), and the renderer's UTF-8 encoding of such a
    value raised: a 500 for any field, where the client is owed the field's 400. Replaced here, in
    the one handler every error answer goes through, rather than field by field. An ErrorDetail
    keeps its code."""
    if isinstance(data, str):
        if not _SURROGATE.search(data):
            return data
        text = _SURROGATE.sub("\ufffd", data)
        return ErrorDetail(text, code=data.code) if isinstance(data, ErrorDetail) else text
    if isinstance(data, dict):
        return {error_text_encodable(key): error_text_encodable(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [error_text_encodable(item) for item in data]
    return data


class ErrorSerializer(serializers.Serializer):
    """Every error answer is an object: `{"code", "message"}` for domain errors, `{"detail"}` for
    authentication/permission/not-found errors, `{"<field>": ["..."]}` for validation errors."""

    code = serializers.CharField(required=False, help_text="Stable machine code of a domain error")
    message = serializers.CharField(required=False, help_text="What went wrong, for an operator")
    detail = serializers.CharField(required=False, help_text="Authentication, permission or not-found error")


@cache
def _api_schema_class() -> type:
    # Imported here: DRF imports this module (DEFAULT_PERMISSION_CLASSES) while rest_framework.views
    # is still loading, and drf_spectacular.openapi needs rest_framework.views.
    from drf_spectacular.openapi import AutoSchema

    class ApiSchema(AutoSchema):
        """drf-spectacular's schema plus the error answers every operation can give, so a generated
        client (and schemathesis) knows them."""

        def get_tags(self) -> list[str]:
            # One tag per resource (/api/v1/<resource>/...), whatever the common path prefix is.
            match = re.match(r"^/api/v\d+/([^/{]+)", self.path)
            return [match.group(1)] if match else super().get_tags()

        def _get_serializer_field_meta(self, field: Any, direction: Any) -> dict[str, Any]:
            # A text field that may not be blank says so (minLength), so a client knows "" is refused.
            meta = super()._get_serializer_field_meta(field, direction)
            if isinstance(field, serializers.CharField) and not field.allow_blank and not field.read_only:
                meta.setdefault("minLength", 1)
            return meta

        def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
            responses = super()._get_response_bodies(direction)
            codes = ["400", "401", "403"]
            if "{" in self.path:
                codes.append("404")
            for code in codes:
                if code not in responses:
                    responses[code] = self._get_response_for_code(ErrorSerializer, code, direction=direction)
            return responses

    return ApiSchema


def api_schema() -> Any:
    """The schema every API view uses (`schema = api_schema()`)."""
    return _api_schema_class()()


MAX_INT = 2**31 - 1


class Pagination(LimitOffsetPagination):
    """LimitOffsetPagination that refuses (400) a limit or offset that is not a number, instead of
    silently serving the first page: a client with a bug learns it at once."""

    max_limit = 1000

    def _param(self, request: Request, name: str, *, minimum: int) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise serializers.ValidationError({name: [f"A whole number of at least {minimum} is required."]}) from None
        if not minimum <= value <= MAX_INT:
            raise serializers.ValidationError({name: [f"Ensure this value is between {minimum} and {MAX_INT}."]})
        return value

    def get_limit(self, request: Request) -> int | None:
        limit = self._param(request, self.limit_query_param, minimum=1)
        if limit is None:
            return self.default_limit
        return min(limit, self.max_limit)

    def get_offset(self, request: Request) -> int:
        return self._param(request, self.offset_query_param, minimum=0) or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            minimum = 1 if parameter["name"] == self.limit_query_param else 0
            parameter["schema"] = {"type": "integer", "minimum": minimum, "maximum": MAX_INT}
        return parameters


# --- Input hygiene -----------------------------------------------------------------------------

# JSON bodies are typed: a number where the schema says text (or "true" where it says a boolean)
# is refused, not coerced, so the OpenAPI schema is the whole contract. (Query parameters are
# text by nature and keep DRF's parsing.)


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        # The schema's maxLength counts what was sent, before whitespace is trimmed.
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    """A choice whose value must also have the type of the choices (10, not "10")."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not any(type(data) is type(choice) for choice in self.choices):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose generated fields are the strict ones above."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.BooleanField: StrictBooleanField,
        models.IntegerField: StrictIntegerField,
        models.PositiveIntegerField: StrictIntegerField,
        models.PositiveSmallIntegerField: StrictIntegerField,
        models.SmallIntegerField: StrictIntegerField,
        models.BigIntegerField: StrictIntegerField,
    }
    serializer_choice_field = StrictChoiceField


def json_text_validator(value: Any) -> None:
    """Every string (keys included) in a JSON value must be storable (core.text's one rule)."""
    problem = text_storable_problem(value)
    if problem:
        raise serializers.ValidationError(f"value {problem}")


class JSONObjectField(serializers.JSONField):
    """A JSON object (not a list or scalar) whose strings are storable."""

    default_error_messages = {"not_object": "Expected a JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        json_text_validator(value)
        return value


def filters_apply(
    queryset: QuerySet, request: Request, filter_serializer: type[serializers.Serializer], lookups: Mapping[str, Any]
) -> QuerySet:
    """Validate the list's query parameters with `filter_serializer` (a bad value is a 400 in the
    usual validation shape, never a 500) and apply them: `lookups` maps a parameter to an ORM
    lookup, or to a callable (queryset, value) -> queryset. Absent/null parameters don't filter."""
    params = filter_serializer(data=request.query_params.dict())
    params.is_valid(raise_exception=True)
    for name, value in params.validated_data.items():
        if value is None or name not in lookups:
            continue
        lookup = lookups[name]
        queryset = lookup(queryset, value) if callable(lookup) else queryset.filter(**{lookup: value})
    return queryset


# --- Audit log ---------------------------------------------------------------------------------

_ACTION_FLAGS = {"add": ADDITION, "change": CHANGE, "delete": DELETION}


def audit_log(
    *, request: Request, action: str, obj: Model | None = None, model: type[Model] | None = None, message: str = "",
    repr_text: str = "",
) -> LogEntry:
    """Record an API write in Django's admin log (the admin's "Recent actions" and object history),
    with the acting user. `obj` is the row written (for a deletion: before it is deleted); for a
    write over many rows (an import) give `model` and `repr_text` instead."""
    model = type(obj) if obj is not None else model
    assert model is not None
    assert request.user.is_authenticated  # (every API write needs a login: see the permission classes)
    token = scoped_token_of(request)
    if token is not None:  # the user is the token's owner; the record names the token too
        message = f"{message} (scoped token #{token.pk} {token.name!r})".lstrip()
    return LogEntry.objects.create(
        user_id=request.user.pk,
        content_type_id=ContentType.objects.get_for_model(model, for_concrete_model=False).pk,
        object_id=str(obj.pk) if obj is not None else None,
        object_repr=(repr_text or str(obj))[:200],
        action_flag=_ACTION_FLAGS[action],
        change_message=f"[API] {message}" if message else "[API]",
    )


def changed_fields(data: Mapping[str, Any]) -> str:
    """The change message of an update: the names of the fields given (a secret is named, never shown)."""
    return f"changed {', '.join(sorted(data))}" if data else "no change"


# --- Viewset shapes ----------------------------------------------------------------------------

# Mixins rather than ModelViewSet subclasses: DRF imports this module (DEFAULT_PERMISSION_CLASSES)
# while rest_framework.views is still loading, so it cannot import the viewsets. Each mixin also
# documents itself in the OpenAPI schema from the serializers its viewset names.
if TYPE_CHECKING:
    from rest_framework.viewsets import GenericViewSet

    _ViewSet = GenericViewSet[Any]  # what the mixins are mixed into, for the type checker only
else:
    _ViewSet = object


class FilteredListMixin(_ViewSet):
    """A list filtered by query parameters: `filter_serializer_class` validates them and
    `filter_lookups` applies them (see filters_apply). Other actions see the whole queryset."""

    filter_serializer_class: type[serializers.Serializer]
    filter_lookups: Mapping[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "filter_serializer_class" in cls.__dict__:
            extend_schema_view(list=extend_schema(parameters=[cls.filter_serializer_class]))(cls)

    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        return filters_apply(queryset, self.request, self.filter_serializer_class, self.filter_lookups)


class AccountRowsMixin(_ViewSet):
    """Rows of Kazoo accounts: every action (list, detail, write, count) sees only the rows of the
    request's account scope (pusher_site.api.auth.request_scope), so another account's row answers
    404 as a row that does not exist would. `rows_in_scope` is the domain's selector for the model
    (it knows which field holds the account). Put it after FilteredListMixin: filters narrow the
    scoped rows."""

    def rows_in_scope(self, queryset: QuerySet, scope: AccountScope) -> QuerySet:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet:
        return self.rows_in_scope(super().get_queryset(), request_scope(self.request))


class ServiceChangeMixin(_ViewSet):
    """Update and delete as STYLE rule 11 has them: `input_serializer_class` (or
    `update_serializer_class`, when an update takes other fields) validates, one service writes
    (`service_update`, `service_delete`), `serializer_class` answers, and the audit log records the
    write with the acting user. For resources created elsewhere (devices come from registrations)."""

    serializer_class: type[serializers.Serializer]
    input_serializer_class: type[serializers.Serializer]
    update_serializer_class: type[serializers.Serializer] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "input_serializer_class" in cls.__dict__:
            update = cls.update_serializer_class or cls.input_serializer_class
            extend_schema_view(
                update=extend_schema(request=update, responses={200: cls.serializer_class}),
                partial_update=extend_schema(request=update, responses={200: cls.serializer_class}),
            )(cls)

    def service_update(self, obj: Any, data: dict[str, Any]) -> Model:
        raise NotImplementedError

    def service_delete(self, obj: Any) -> None:
        raise NotImplementedError

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        obj = self.get_object()
        input_class = self.update_serializer_class or self.input_serializer_class
        params = input_class(obj, data=request.data, partial=kwargs.get("partial", False))
        params.is_valid(raise_exception=True)
        obj = self.service_update(obj, dict(params.validated_data))
        audit_log(request=request, action="change", obj=obj, message=changed_fields(params.validated_data))
        return Response(self.serializer_class(obj, context=self.get_serializer_context()).data)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        obj = self.get_object()
        # Recorded before the row goes (it names its pk); a refused deletion takes the record with it.
        with transaction.atomic():
            audit_log(request=request, action="delete", obj=obj)
            self.service_delete(obj)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ServiceWriteMixin(ServiceChangeMixin):
    """ServiceChangeMixin plus create: `input_serializer_class` validates, `service_create` writes."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "input_serializer_class" in cls.__dict__:
            extend_schema_view(
                create=extend_schema(request=cls.input_serializer_class, responses={201: cls.serializer_class}),
            )(cls)

    def service_create(self, data: dict[str, Any]) -> Model:
        raise NotImplementedError

    def added_message(self, obj: Any) -> str:
        return "added"

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        params = self.input_serializer_class(data=request.data)
        params.is_valid(raise_exception=True)
        obj = self.service_create(dict(params.validated_data))
        audit_log(request=request, action="add", obj=obj, message=self.added_message(obj))
        return Response(self.serializer_class(obj, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)
