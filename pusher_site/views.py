import logging
from collections.abc import Iterator

from django.conf import settings
from django.contrib import admin
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from core.events import EVENT_TYPES
from kazoo.selectors import consumers_alive
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


# Gauges a consumer process sets about itself: in this process they would say 0 whatever the
# consumers do, so the web process exports the consumers' heartbeats instead.
_CONSUMER_PROCESS_ONLY = frozenset({"pusher_consumer_connected"})


class _WebMetrics:
    """What the web process's /metrics shows: this process's registry without the consumer-only
    gauges, plus the consumers' state from their heartbeat rows (None: not readable now)."""

    def __init__(self, connected_flags: list[bool] | None) -> None:
        self._connected_flags = connected_flags

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            if family.name not in _CONSUMER_PROCESS_ONLY:
                yield family
        if self._connected_flags is not None:
            yield GaugeMetricFamily(
                "pusher_consumers_alive", "Consumer processes whose heartbeat is fresh",
                value=len(self._connected_flags),
            )
            yield GaugeMetricFamily(
                "pusher_consumers_connected",
                "Consumer processes whose heartbeat is fresh and says connected to RabbitMQ and consuming",
                value=sum(self._connected_flags),
            )


def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.PUSHER_METRICS_PUBLIC and not request.user.is_staff:
        return HttpResponseForbidden("metrics are restricted to staff")
    try:
        credential_expiry_refresh()
    except DatabaseError:  # a scrape still answers (with the last values) while the database is down
        log.warning("credential expiry gauge not refreshed: database unavailable", exc_info=True)
    connected_flags: list[bool] | None = None
    try:
        connected_flags = list(consumers_alive(now=timezone.now()).values_list("connected", flat=True))
    except DatabaseError:  # the consumer gauges are left out rather than made up
        log.warning("consumer gauges not exported: database unavailable", exc_info=True)
    return HttpResponse(generate_latest(_WebMetrics(connected_flags)), content_type=CONTENT_TYPE_LATEST)


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
