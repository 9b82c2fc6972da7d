"""/api/v1/ routes; each app contributes its own router entries."""

from django.http import HttpRequest, JsonResponse
from django.urls import Resolver404, path, re_path, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework import permissions, routers

from pusher_site.api.delivery_api import DeliveryViewSet
from pusher_site.api.hooks_api import AlertViewSet, WebhookDeliveryViewSet, WebhookSubscriptionViewSet
from pusher_site.api.push_api import (
    CredentialViewSet,
    PushAppViewSet,
    PushRequestViewSet,
    SendViewSet,
)
from pusher_site.api.registry_api import DeviceViewSet, PushTokenViewSet, UserAgentRuleViewSet
from pusher_site.api.reporter_api import TokenReporterViewSet
from pusher_site.api.schema import ScopedTokenScheme  # noqa: F401 - registers the scheme with drf-spectacular
from pusher_site.api.tenancy_api import ScopedTokenViewSet


class ApiRootView(routers.APIRootView):
    """The list of resources; like every endpoint, for authenticated users only."""

    permission_classes = [permissions.IsAuthenticated]


class Router(routers.DefaultRouter):
    APIRootView = ApiRootView
    include_format_suffixes = False


router = Router()
router.register("apps", PushAppViewSet, basename="pushapp")
router.register("credentials", CredentialViewSet, basename="credential")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("user-agent-rules", UserAgentRuleViewSet, basename="useragentrule")
router.register("devices", DeviceViewSet, basename="device")
router.register("tokens", PushTokenViewSet, basename="pushtoken")
router.register("token-reporters", TokenReporterViewSet, basename="tokenreporter")
router.register("push", PushRequestViewSet, basename="push")
router.register("scoped-tokens", ScopedTokenViewSet, basename="scopedtoken")
router.register("webhooks", WebhookSubscriptionViewSet, basename="webhooksubscription")
router.register("webhook-deliveries", WebhookDeliveryViewSet, basename="webhookdelivery")
router.register("alerts", AlertViewSet, basename="alert")


@csrf_exempt  # answers 404 to every method; nothing to protect
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /api/v1/ answers JSON, like the API, not Django's HTML 404 page (which
    also answers in place of APPEND_SLASH's redirect: a POST body would not survive one)."""
    detail = "Not found."
    if not request.path.endswith("/"):
        try:
            resolve(request.path + "/")
        except Resolver404:
            pass
        else:
            detail = f"Not found. Did you mean {request.path}/ (with a trailing slash)?"
    return JsonResponse({"detail": detail}, status=404)


urlpatterns = [
    # Kamailio's push-notifications-role POSTs to exactly /api/v1/send: no trailing slash (a redirect
    # would lose the POST body).
    path("send", SendViewSet.as_view({"post": "create"}), name="send"),
    *router.urls,
    re_path(r"^(?P<rest>.*)$", not_found),
]
