"""Text no store or peer takes (a lone surrogate, `\\ud800` in JSON) is refused with a 400, through
every face: an error answer that echoes it back is still rendered, and nothing stores it."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db

SURROGATE = "\ud800"


def post(client, path: str, body: object):
    """`body` as JSON text with its surrogates escaped, as a client sends them (the test client's own
    renderer would fail to encode them)."""
    return client.post(path, json.dumps(body), content_type="application/json")

# Each DRF choice field echoes a bad value in its message (`"\ud800" is not a valid choice.`).
CHOICE_FIELDS = [
    ("/api/v1/apps/", {"app_id": "x", "provider": SURROGATE}, "provider"),
    ("/api/v1/apps/", {"app_id": "x", "provider": "apple", "priority": SURROGATE}, "priority"),
    ("/api/v1/apps/", {"app_id": "x", "provider": "firebase", "android_priority": SURROGATE}, "android_priority"),
    ("/api/v1/credentials/", {"name": "c", "kind": SURROGATE, "data": "x"}, "kind"),
    ("/api/v1/token-reporters/", {"slug": "s", "secret": "s" * 30, "auth": SURROGATE}, "auth"),
    ("/api/v1/token-reporters/", {"slug": "s", "secret": "s" * 30, "token_encoding": SURROGATE}, "token_encoding"),
    ("/api/v1/send", {"name": "sip:a@b", "type": SURROGATE}, "type"),
    ("/api/v1/webhooks/", {"name": "w", "url": "http://127.0.0.1:9/", "secret": "s" * 40,
                           "event_types": ["a" + SURROGATE]}, "event_types"),
]


@pytest.mark.parametrize(("path", "body", "field"), CHOICE_FIELDS, ids=[f"{p}:{f}" for p, _, f in CHOICE_FIELDS])
def test_a_lone_surrogate_in_a_choice_is_a_field_error(seed, admin_api, path, body, field) -> None:
    response = post(admin_api, path, body)
    assert response.status_code == 400, response.content[:300]
    errors = response.json()
    assert field in errors
    assert SURROGATE not in response.content.decode("utf-8")
