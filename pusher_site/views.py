import logging

from django.conf import settings
from django.contrib import admin
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect, render
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.events import EVENT_TYPES
from push.selectors import EXPIRY_WARN_DAYS
from push.services.credentials import credential_expiry_refresh
from pusher_site.dashboard import dashboard_summary

log = logging.getLogger(__name__)


def home(request: HttpRequest) -> HttpResponse:
    return redirect("admin:index")


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness + database reachability of the web process."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return JsonResponse({"status": "ok", "database": "ok"})
    except Exception as exc:  # noqa: BLE001 - any driver error means "not healthy", reported, never raised
        return JsonResponse({"status": "error", "database": type(exc).__name__}, status=503)


def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.PUSHER_METRICS_PUBLIC and not request.user.is_staff:
        return HttpResponseForbidden("metrics are restricted to staff")
    try:
        credential_expiry_refresh()
    except DatabaseError:  # a scrape still answers (with the last values) while the database is down
        log.warning("credential expiry gauge not refreshed: database unavailable", exc_info=True)
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


def dashboard(request: HttpRequest) -> HttpResponse:
    """The operations page in the admin (wrapped in admin.site.admin_view in urls.py: staff only).
    `?fragment=summary` renders only the figures, which the page re-fetches as pushes arrive."""
    context = {
        **admin.site.each_context(request),
        "title": "Operations dashboard",
        "summary": dashboard_summary(),
        "expiry_warn_days": EXPIRY_WARN_DAYS,
        "event_types": EVENT_TYPES,
    }
    if request.GET.get("fragment") == "summary":
        return render(request, "pusher/_dashboard_summary.html", context)
    return render(request, "pusher/dashboard.html", context)
