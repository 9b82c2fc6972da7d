"""A push app's limits (apns-priority 1, 5 or 10; expiration and TTL at most 28 days) hold through
the admin and the API alike: one rule, PushApp.clean, which the services' full_clean runs."""

from __future__ import annotations

import pytest
from django.urls import reverse

from push.models import PushApp
from tests.test_admin_json_fields import APP, admin_add, api, api_post, app_form, form_errors

pytestmark = pytest.mark.django_db

__all__ = ["api"]  # a fixture


APP_LIMITS = [("priority", 7), ("ttl_s", 1000000000), ("expiration", 99999999999), ("ttl_s", 2419201),
              ("expiration", 2419201)]


@pytest.mark.parametrize(("field", "value"), APP_LIMITS)
def test_an_app_setting_out_of_range_is_refused_by_admin_and_api(staff_client, api, field, value) -> None:
    errors = admin_add(staff_client, "push_pushapp", app_form(**{field: str(value)}))
    assert field in errors
    response = api_post(api, "/api/v1/apps/", {"app_id": APP, "provider": "apple", field: value})
    assert response.status_code == 400 and field in response.json()
    assert not PushApp.objects.exists()


def test_an_app_setting_out_of_range_is_refused_on_update_too(staff_client, api) -> None:
    app = PushApp.objects.create(app_id=APP, provider="apple")
    response = staff_client.post(reverse("admin:push_pushapp_change", args=[app.pk]), app_form(priority="7"))
    assert "priority" in form_errors(response)
    assert api.patch(f"/api/v1/apps/{app.pk}/", {"ttl_s": 2419201}, format="json").status_code == 400
    app.refresh_from_db()
    assert (app.priority, app.ttl_s) == (10, 30)


@pytest.mark.parametrize(("field", "value"), [("priority", 1), ("priority", 5), ("ttl_s", 2419200),
                                              ("expiration", 0), ("expiration", 2419200)])
def test_an_app_setting_in_range_is_saved(staff_client, field, value) -> None:
    assert admin_add(staff_client, "push_pushapp", app_form(**{field: str(value)})) == {"saved": []}
    assert getattr(PushApp.objects.get(), field) == value
