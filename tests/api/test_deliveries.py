"""/api/v1/deliveries/: the delivery log, read-only, filterable."""

from datetime import timedelta

import pytest
from django.utils import timezone

from push.models import Delivery

pytestmark = pytest.mark.django_db

URL = "/api/v1/deliveries/"


@pytest.fixture
def log(seed):
    now = timezone.now()
    rows = [
        Delivery.objects.create(created_at=now - timedelta(hours=2), source="api", status="sent", provider="apple",
                                app_id="com.a", account_id="acc1", call_id="call-1", token="t" * 64),
        Delivery.objects.create(created_at=now - timedelta(hours=1), source="amqp", status="token_invalid",
                                provider="firebase", app_id="com.b", account_id="acc2", call_id="call-2",
                                device_id="dev2"),
    ]
    return [seed.delivery, *rows]


def ids(api, **params):
    response = api.get(URL, params)
    assert response.status_code == 200, response.json()
    return [d["id"] for d in response.json()["results"]]


def test_newest_first_and_filters(log, admin_api) -> None:
    seeded, sent, invalid = log
    assert ids(admin_api) == [seeded.pk, invalid.pk, sent.pk]
    assert ids(admin_api, status="sent") == [sent.pk]
    assert ids(admin_api, provider="firebase") == [invalid.pk]
    assert ids(admin_api, source="amqp") == [seeded.pk, invalid.pk]
    assert ids(admin_api, app="com.a") == [sent.pk]
    assert ids(admin_api, account="acc2") == [invalid.pk]
    assert ids(admin_api, device="dev2") == [invalid.pk]
    assert ids(admin_api, call_id="call-1") == [sent.pk]
    assert ids(admin_api, token="t" * 64) == [sent.pk]
    cut = (timezone.now() - timedelta(minutes=90)).isoformat()
    assert ids(admin_api, created_after=cut) == [seeded.pk, invalid.pk]
    assert ids(admin_api, created_before=cut) == [sent.pk]
    assert ids(admin_api, ordering="created_at") == [sent.pk, invalid.pk, seeded.pk]


@pytest.mark.parametrize("params", [{"created_after": "yesterday"}, {"status": "lost"}, {"call_id": "a\x00b"}])
def test_bad_filters_are_400(log, admin_api, params) -> None:
    assert admin_api.get(URL, params).status_code == 400


def test_token_is_masked_and_log_read_only(log, admin_api) -> None:
    body = admin_api.get(f"{URL}{log[1].pk}/").json()
    assert body["token_masked"] == "tttttt…tttt" and "token" not in body
    assert admin_api.post(URL, {}, format="json").status_code == 405
    assert admin_api.delete(f"{URL}{log[1].pk}/").status_code == 405
