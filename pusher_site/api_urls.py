"""/api/v1/ routes; each app contributes its own router entries."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()
urlpatterns = router.urls
