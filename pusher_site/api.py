"""API conventions shared by every resource: permissions and the one exception handler."""

import logging
from typing import Any

from rest_framework import permissions, status
from rest_framework.response import Response

from pusher_site.errors import PusherError

log = logging.getLogger(__name__)


class ModelPermissions(permissions.DjangoModelPermissions):
    """Django's model permissions, with `view` required for reads (DRF's default lets any
    authenticated user read)."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }


class CanSendPush(permissions.BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm("push.send_push"))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Domain errors -> 400 with a stable code; everything else as DRF does."""
    from rest_framework.views import exception_handler as drf_exception_handler  # circular at import time

    if isinstance(exc, PusherError):
        return Response({"code": exc.code, "message": exc.message}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
