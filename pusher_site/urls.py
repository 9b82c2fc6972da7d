from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from pusher_site import report, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    # Before admin.site.urls, whose catch-all would answer 404 for it.
    path("admin/dashboard/", admin.site.admin_view(views.dashboard), name="pusher-dashboard"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("pusher_site.api.urls")),
    # Apps' push token reports (Acrobits' Push Token Reporter): with or without the trailing slash,
    # since a redirect would lose a POST body; the secret is the optional last segment.
    re_path(r"^report/(?P<slug>[-a-zA-Z0-9_]{1,64})(?:/(?P<secret>[^/]{1,256}))?/?$", report.token_report,
            name="token-report"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

# JSON under /api/, Django's pages elsewhere (pusher_site.api.errors).
handler400 = "pusher_site.api.errors.bad_request"
handler500 = "pusher_site.api.errors.server_error"
