from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def home(request: HttpRequest) -> HttpResponse:
    return redirect("admin:index")


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness + database reachability of the web process."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return JsonResponse({"status": "ok", "database": "ok"})
    except Exception as exc:  # any driver error means "not healthy", reported, never raised
        return JsonResponse({"status": "error", "database": type(exc).__name__}, status=503)


def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.PUSHER_METRICS_PUBLIC and not request.user.is_staff:
        return HttpResponseForbidden("metrics are restricted to staff")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
