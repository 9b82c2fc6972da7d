"""The API's JSON parser: DRF's, with a body size limit (413) and a nesting-depth limit (400), both
answered as JSON `{"detail": "...", "code": "..."}` instead of an HTML error page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers, status
from rest_framework.utils import json

from core.jsonlimits import MAX_JSON_DEPTH, json_depth_exceeds


class CodedError(exceptions.APIException):
    """An API error answered as `{"detail": "...", "code": "<default_code>"}` (DRF's handler
    answers a dict detail as it is)."""

    detail: dict[str, Any]  # always a dict: see __init__

    def __init__(self, detail: str) -> None:
        super().__init__({"detail": detail, "code": self.default_code})


class JsonTooDeep(CodedError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "json_too_deep"


class BodyTooLarge(CodedError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "body_too_large"


def body_limit() -> int | None:
    """The largest request body the API reads: Django's DATA_UPLOAD_MAX_MEMORY_SIZE (one limit for
    the API and for Django's own reading of a body; None = no limit)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def body_too_large(limit: int | None) -> BodyTooLarge:
    size = f"{limit} bytes" if limit is not None else "the limit"
    return BodyTooLarge(f"The request body is larger than {size}.")


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser (same media type, same strictness, same parse-error answer), refusing a
    body over `body_limit()` (413) and one nested deeper than `max_depth` (400) before decoding."""

    max_depth = MAX_JSON_DEPTH

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        limit = body_limit()
        raw = stream.read(limit + 1) if limit is not None else stream.read()
        if limit is not None and len(raw) > limit:
            raise body_too_large(limit)
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        if json_depth_exceeds(text, self.max_depth):
            raise JsonTooDeep(f"JSON nested deeper than {self.max_depth} levels.")
        try:
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
