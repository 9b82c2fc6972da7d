"""/api/docs/ works offline: Swagger UI's files come from pusher itself (drf-spectacular-sidecar), not a CDN."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db

# Every URL the page loads: src/href attributes and url(...) in its inline script and style.
URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""")


def test_docs_page_references_no_external_host(client, django_user_model) -> None:
    client.force_login(django_user_model.objects.create_user("reader", password="x-pass-123456"))
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()

    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html, re.IGNORECASE), "a URL with a host"
    urls = [a or b for a, b in URL.findall(html)]
    static = [url for url in urls if url.startswith(settings.STATIC_URL)]
    assert any(url.endswith("swagger-ui-bundle.js") for url in static), urls
    assert any(url.endswith(".css") for url in static), urls
    for url in static:
        # Each asset is one of our static files (WhiteNoise serves it; collectstatic gathers it).
        assert finders.find(url.removeprefix(settings.STATIC_URL)), f"{url} is not a static file of pusher"
