"""JSON answers for the errors that escape the API's views: what DRF's exception handler does not
know (Django's RequestDataTooBig and other SuspiciousOperations, any unexpected exception), and
Django's own 400 and 500 handlers for paths under /api/. Elsewhere (the admin) Django's HTML pages
stay. No answer carries a traceback; the log has it."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.response import Response

from pusher_site.api.parsers import body_limit, body_too_large

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
SERVER_ERROR = {"detail": "Internal server error.", "code": "server_error"}
BAD_REQUEST = {"detail": "Bad request.", "code": "bad_request"}


def is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def _too_large() -> tuple[dict[str, str], int]:
    exc = body_too_large(body_limit())
    return {key: str(value) for key, value in exc.detail.items()}, exc.status_code


def unhandled_response(exc: Exception, context: dict[str, Any]) -> Response:
    """The answer for an exception DRF's handler leaves unanswered (it would become Django's HTML
    error page): 413 for a body over DATA_UPLOAD_MAX_MEMORY_SIZE, 400 for another suspicious
    request, else a 500 whose traceback goes to the log only."""
    from rest_framework.views import set_rollback  # circular at import time (see pusher_site.api.conventions)

    set_rollback()
    request = context.get("request")
    where = f"{request.method} {request.path}" if request is not None else "an API view"
    if isinstance(exc, RequestDataTooBig):
        log.warning("API request refused: %s: %s", where, exc)
        data, code = _too_large()
        return Response(data, status=code)
    if isinstance(exc, SuspiciousOperation):
        log.warning("API request refused: %s: %s: %s", where, type(exc).__name__, exc)
        return Response(BAD_REQUEST, status=status.HTTP_400_BAD_REQUEST)
    log.error("unexpected error answering %s", where, exc_info=exc)
    return Response(SERVER_ERROR, status=status.HTTP_500_INTERNAL_SERVER_ERROR)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's handler400 (a SuspiciousOperation raised outside DRF): JSON under /api/ (413 for a
    body over DATA_UPLOAD_MAX_MEMORY_SIZE), Django's page elsewhere."""
    if not is_api_path(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        data, code = _too_large()
        return JsonResponse(data, status=code)
    return JsonResponse(BAD_REQUEST, status=400)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's handler500: JSON under /api/, Django's page elsewhere. Django has logged the
    exception already."""
    if not is_api_path(request):
        return defaults.server_error(request)
    return JsonResponse(SERVER_ERROR, status=500)
