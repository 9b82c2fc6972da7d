"""The whole API against its own OpenAPI schema, property-based (schemathesis, in-process over WSGI).

Every operation gets generated requests (valid and invalid) as an admin: no answer may be a 5xx,
and every answer must match the schema (status code, content type, headers, body), and a request
the schema forbids must be refused. (Not checked: that every schema-valid request is accepted. A
regex that does not compile or a certificate that does not parse is schema-valid text, refused by
the domain with a 400.) Nothing real is reached:
the seeded apps are disabled or point at a closed local port, FCM and Kazoo are unconfigured."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.api.conftest import Seed

pytestmark = pytest.mark.slow

# Per operation; PUSHER_SCHEMATHESIS_EXAMPLES=500 for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("PUSHER_SCHEMATHESIS_EXAMPLES", "25"))


@pytest.fixture(autouse=True)
def _short_deadlines(settings) -> None:
    settings.PUSHER_PUSH_DEADLINE_S = 2.0


@pytest.fixture(autouse=True)
def _keep_the_test_connection() -> Iterator[None]:
    """The real WSGI handler closes "old" connections at each request's start and end, and inside the
    test's transaction PostgreSQL's connection counts as old. Django's test client detaches the
    same handler for the same reason."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def admin_token(users) -> str:
    return Token.objects.get_or_create(user=users["admin"])[0].key


# Built at import (pytest-django has set Django up by then; generating the schema reads no table),
# from the same generator that serves /api/schema/ (which needs a login, so it is not fetched).
# schemathesis.pytest.from_fixture would load it per test, but relies on a pytest internal
# (Node._nodeid) that pytest 9.2 no longer has.
schema = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
)
schema.app = get_wsgi_application()
schema.location = "/api/schema/"


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_api_conforms_to_its_schema(case, admin_token: str, seed: Seed) -> None:
    response = case.call_and_validate(
        headers={"Authorization": f"Token {admin_token}"}, excluded_checks=[positive_data_acceptance]
    )
    body = response.text
    for secret in seed.secrets:
        assert secret not in body
