"""Test-only routes (pytest.mark.urls): the real URLconf plus plain Django views, under /api/ and
elsewhere, that fail outside DRF, to exercise the root URLconf's handler400 and handler500."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from pusher_site.urls import handler400, handler500
from pusher_site.urls import urlpatterns as site_urlpatterns

CANARY = "test-only failure with a secret-looking message 0xC0FFEE"


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(CANARY)


def read_body(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(len(request.body)))


urlpatterns = [
    path("api/test-only/boom", boom),
    path("api/test-only/body", read_body),
    path("test-only/boom", boom),
    path("test-only/body", read_body),
    *site_urlpatterns,
]

__all__ = ["handler400", "handler500", "urlpatterns"]
