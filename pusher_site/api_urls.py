"""/api/v1/ routes; each app contributes its own router entries."""

from django.urls import path
from rest_framework import permissions, routers

from push.api import CredentialViewSet, DeliveryViewSet, PushAppViewSet, PushRequestViewSet, SendViewSet
from registry.api import DeviceViewSet, UserAgentRuleViewSet


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
router.register("push", PushRequestViewSet, basename="push")

urlpatterns = [
    # Kamailio's push-notifications-role POSTs to exactly /api/v1/send: no trailing slash (a redirect
    # would lose the POST body).
    path("send", SendViewSet.as_view({"post": "create"}), name="send"),
    *router.urls,
]
