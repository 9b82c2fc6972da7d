"""Webhooks through their faces: the admin, the API, the command and the consumer's loop, each through
hooks.services; the secret never comes back out (pages, answers, logs)."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import pytest
from cryptography.fernet import Fernet
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from core import fields
from hooks import services
from hooks.models import Alert, WebhookDelivery, WebhookSubscription
from hooks.services import WebhookEvent
from kazoo import alerting
from tests.hooks.receiver import Receiver

SECRET = "whsec-face-0123456789-SECRETCANARY"
NEW_SECRET = "whsec-face-rotated-NEWCANARY-0000"


def raw_secret(subscription: WebhookSubscription) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM hooks_webhooksubscription WHERE id = %s", [subscription.pk])
        return cursor.fetchone()[0]


def subscribe(url: str, **kwargs: object) -> WebhookSubscription:
    values: dict = {"name": "ops", "url": url, "secret": SECRET, "event_types": ["consumer.down"]}
    values.update(kwargs)
    return services.webhook_subscription_create(**values)


def happen(key: str = "e1") -> None:
    services.webhook_event_record(event=WebhookEvent("consumer.down", key, {"what": key}))


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- Admin ------------------------------------------------------------------------------------------


def admin_form(**changes: object) -> dict:
    data = {"name": "ops", "url": "https://hooks.example.com/pusher", "new_secret": SECRET,
            "event_types": ["push.failed", "consumer.down"], "account_id": "", "enabled": "on"}
    data.update(changes)
    return data


@pytest.mark.django_db
def test_admin_adds_a_subscription_and_never_shows_its_secret(staff_client, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        response = staff_client.post(reverse("admin:hooks_webhooksubscription_add"), admin_form(), follow=True)

    assert response.status_code == 200 and not response.context.get("errors")
    subscription = WebhookSubscription.objects.get()
    assert subscription.event_types == ["push.failed", "consumer.down"] and subscription.secret == SECRET
    assert raw_secret(subscription).startswith("fernet:") and SECRET not in raw_secret(subscription)
    for url in (reverse("admin:hooks_webhooksubscription_changelist"),
                reverse("admin:hooks_webhooksubscription_change", args=[subscription.pk])):
        page = staff_client.get(url).content.decode()
        assert SECRET not in page
    assert SECRET not in caplog.text


@pytest.mark.django_db
@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"url": "https://user:pw@hooks.example.com/"}, "url", "user name or password"),
    ({"url": "ftp://hooks.example.com/"}, "url", "only http:// and https://"),
    ({"new_secret": ""}, "new_secret", "A secret is required"),
    ({"new_secret": "short"}, "new_secret", "16 to 500 characters"),
    ({"event_types": []}, "event_types", "required"),
])
def test_admin_shows_the_services_refusal_on_its_field(staff_client, changes, field, words) -> None:
    response = staff_client.post(reverse("admin:hooks_webhooksubscription_add"), admin_form(**changes))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(words in error for error in errors[field]), errors
    assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db
def test_admin_change_keeps_the_secret_unless_a_new_one_is_typed(staff_client) -> None:
    subscription = subscribe("https://hooks.example.com/a")
    stored = raw_secret(subscription)
    url = reverse("admin:hooks_webhooksubscription_change", args=[subscription.pk])

    staff_client.post(url, admin_form(url="https://hooks.example.com/b", new_secret=""), follow=True)
    subscription.refresh_from_db()
    assert subscription.url == "https://hooks.example.com/b" and raw_secret(subscription) == stored

    staff_client.post(url, admin_form(new_secret=NEW_SECRET), follow=True)
    subscription.refresh_from_db()
    assert subscription.secret == NEW_SECRET


@pytest.mark.django_db
def test_admin_sends_a_test_event(staff_client, receiver: Receiver) -> None:
    subscription = subscribe(receiver.url)

    response = staff_client.post(reverse("admin:hooks_webhooksubscription_changelist"), {
        "action": "send_test_event", ACTION_CHECKBOX_NAME: [str(subscription.pk)]}, follow=True)

    assert messages_of(response) == ["ops: test event delivered (HTTP 200)"]
    assert receiver.header(0, "X-Pusher-Event") == "webhook.test"
    assert WebhookDelivery.objects.get().event_type == "webhook.test"


@pytest.mark.django_db
def test_admin_delivery_log_is_read_only_with_retry_now(staff_client, down_receiver: Receiver, settings) -> None:
    settings.PUSHER_WEBHOOK_MAX_ATTEMPTS = 1
    subscribe(down_receiver.url)
    happen()
    services.webhook_deliveries_send_due()
    row = WebhookDelivery.objects.get()
    assert row.status == "gave_up"
    changelist = reverse("admin:hooks_webhookdelivery_changelist")
    assert staff_client.get(changelist).status_code == 200
    detail = staff_client.get(reverse("admin:hooks_webhookdelivery_change", args=[row.pk]))
    assert detail.status_code == 200 and "ConnectError" in detail.content.decode()
    assert staff_client.get(reverse("admin:hooks_webhookdelivery_add")).status_code == 403
    assert staff_client.post(reverse("admin:hooks_webhookdelivery_delete", args=[row.pk])).status_code == 403

    down_receiver.start()
    response = staff_client.post(changelist, {"action": "retry_now", ACTION_CHECKBOX_NAME: [str(row.pk)]},
                                 follow=True)

    assert messages_of(response) == ["consumer.down to ops: delivered (HTTP 200)"]
    row.refresh_from_db()
    assert row.status == "delivered" and len(down_receiver.received) == 1


@pytest.mark.django_db
def test_admin_delete_goes_through_the_service(staff_client) -> None:
    subscription = subscribe("http://127.0.0.1:9/in")
    happen()

    staff_client.post(reverse("admin:hooks_webhooksubscription_delete", args=[subscription.pk]), {"post": "yes"})

    assert not WebhookSubscription.objects.exists()
    row = WebhookDelivery.objects.get()
    assert (row.status, row.last_error, row.subscription_name) == ("gave_up", "subscription deleted", "ops")


@pytest.mark.django_db
def test_admin_alerts_are_listed(staff_client) -> None:
    services.alert_raise(key="consumer.down", event_type="consumer.down", summary="no consumer connected", data={})
    response = staff_client.get(reverse("admin:hooks_alert_changelist"))
    assert response.status_code == 200 and "no consumer connected" in response.content.decode()
    assert staff_client.get(reverse("admin:hooks_alert_change", args=[Alert.objects.get().pk])).status_code == 200


# --- API --------------------------------------------------------------------------------------------


@pytest.fixture
def api(staff_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.mark.django_db
def test_api_subscriptions_crud_never_answers_the_secret(api, receiver: Receiver, caplog) -> None:
    answers = []
    with caplog.at_level(logging.DEBUG):
        created = api.post("/api/v1/webhooks/", {"name": "ops", "url": receiver.url, "secret": SECRET,
                                                  "event_types": ["consumer.down", "push.failed"]}, format="json")
        answers.append(created)
        assert created.status_code == 201, created.content
        pk = created.json()["id"]
        assert "secret" not in created.json()
        assert created.json()["event_types"] == ["push.failed", "consumer.down"]
        answers.append(api.get("/api/v1/webhooks/"))
        answers.append(api.get(f"/api/v1/webhooks/{pk}/"))
        patched = api.patch(f"/api/v1/webhooks/{pk}/", {"secret": NEW_SECRET, "enabled": False}, format="json")
        answers.append(patched)
        assert patched.status_code == 200 and patched.json()["enabled"] is False
        assert WebhookSubscription.objects.get().secret == NEW_SECRET
        put = api.put(f"/api/v1/webhooks/{pk}/", {"name": "ops2", "url": receiver.url,
                                                  "event_types": ["consumer.down"], "enabled": True}, format="json")
        answers.append(put)
        assert put.status_code == 200 and put.json()["name"] == "ops2"
        assert WebhookSubscription.objects.get().secret == NEW_SECRET  # a PUT without a secret keeps it
        tested = api.post(f"/api/v1/webhooks/{pk}/test/")
        answers.append(tested)
        assert tested.status_code == 200 and tested.json()["status"] == "delivered"
        assert tested.json()["last_http_status"] == 200
        listed = api.get(f"/api/v1/webhook-deliveries/?subscription={pk}&event_type=webhook.test")
        answers.append(listed)
        assert [d["uuid"] for d in listed.json()["results"]] == [tested.json()["uuid"]]
        assert api.delete(f"/api/v1/webhooks/{pk}/").status_code == 204
    for answer in answers:
        assert SECRET not in answer.content.decode() and NEW_SECRET not in answer.content.decode()
    assert SECRET not in caplog.text and NEW_SECRET not in caplog.text
    # The receiver checks the test event with the secret it was given.
    assert receiver.header(0, "X-Pusher-Delivery") == tested.json()["uuid"]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field"), [
    ({"url": "https://u:p@hooks.example.com/"}, "url"),
    ({"url": "gopher://hooks.example.com/"}, "url"),
    ({"secret": "too-short"}, "secret"),
    ({"event_types": []}, "event_types"),
    ({"event_types": ["push.sent"]}, "event_types"),
    ({"event_types": ["webhook.test"]}, "event_types"),
    ({"secret": None}, "secret"),
])
def test_api_refuses_bad_input_field_by_field(api, body, field) -> None:
    values = {"name": "ops", "url": "https://hooks.example.com/", "secret": SECRET, "event_types": ["push.failed"]}
    values.update(body)
    if values.get("secret") is None:
        values.pop("secret")

    response = api.post("/api/v1/webhooks/", values, format="json")

    assert response.status_code == 400 and field in response.json(), response.content
    assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db
def test_api_a_duplicate_name_is_refused(api) -> None:
    subscribe("https://hooks.example.com/")
    response = api.post("/api/v1/webhooks/", {"name": "ops", "url": "https://hooks.example.com/", "secret": SECRET,
                                              "event_types": ["push.failed"]}, format="json")
    assert response.status_code == 400 and "exists already" in response.json()["name"][0]


@pytest.mark.django_db
def test_api_retry_now(api, down_receiver: Receiver, settings) -> None:
    settings.PUSHER_WEBHOOK_MAX_ATTEMPTS = 1
    subscribe(down_receiver.url)
    happen()
    services.webhook_deliveries_send_due()
    row = WebhookDelivery.objects.get()
    down_receiver.start()

    response = api.post(f"/api/v1/webhook-deliveries/{row.pk}/retry/")
    assert response.status_code == 200 and response.json()["status"] == "delivered"
    again = api.post(f"/api/v1/webhook-deliveries/{row.pk}/retry/")
    assert again.status_code == 400 and again.json()["code"] == "webhook_delivered"


@pytest.mark.django_db
def test_api_is_for_staff_only(django_user_model) -> None:
    user = django_user_model.objects.create_user("operator", password="x-pass-123456")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="hooks"))
    client = APIClient()
    client.force_authenticate(user)
    subscription = subscribe("https://hooks.example.com/")

    assert client.get("/api/v1/webhooks/").status_code == 403
    assert client.get("/api/v1/webhook-deliveries/").status_code == 403
    assert client.post(f"/api/v1/webhooks/{subscription.pk}/test/").status_code == 403

    user.is_staff = True
    user.save()
    assert client.get("/api/v1/webhooks/").status_code == 200


# --- Commands and the consumer's loop --------------------------------------------------------------------


@pytest.mark.django_db
def test_send_webhooks_command_runs_a_round(receiver: Receiver) -> None:
    subscribe(receiver.url)
    happen()
    out = io.StringIO()

    call_command("send_webhooks", stdout=out)

    assert "1 delivered" in out.getvalue() and len(receiver.received) == 1


@pytest.mark.django_db
def test_send_webhooks_loop_needs_an_interval(settings) -> None:
    settings.PUSHER_WEBHOOK_INTERVAL_S = 0
    with pytest.raises(CommandError, match="PUSHER_WEBHOOK_INTERVAL_S"):
        call_command("send_webhooks", "--loop")


@pytest.mark.django_db
def test_a_failing_step_does_not_stop_the_round(receiver: Receiver, monkeypatch, caplog) -> None:
    subscribe(receiver.url)
    happen()

    def broken(**kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(alerting, "push_outcomes_enqueue", broken)
    summary = alerting.alerting_round()

    assert summary.errors == ["push events: RuntimeError: database hiccup"]
    assert summary.sent.delivered == 1  # the steps after it still ran
    assert "push events failed" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_the_consumers_loop_sends_on_its_own_thread(receiver: Receiver, settings) -> None:
    subscribe(receiver.url)
    happen()
    stop = threading.Event()
    thread = threading.Thread(target=alerting.alerting_loop, args=(stop,), kwargs={"interval": 0.1})
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.get().status == "delivered"


@pytest.mark.django_db
def test_credentials_reencrypt_rewrites_webhook_secrets(settings) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [old]
    fields._fernet.cache_clear()
    try:
        subscription = subscribe("https://hooks.example.com/")
        before = raw_secret(subscription)
        settings.FIELD_ENCRYPTION_KEY = [new, old]
        fields._fernet.cache_clear()
        out = io.StringIO()

        call_command("credentials_reencrypt", stdout=out, stderr=io.StringIO())

        assert "1 webhook secret(s)" in out.getvalue()
        assert raw_secret(subscription) != before
        settings.FIELD_ENCRYPTION_KEY = [new]
        fields._fernet.cache_clear()
        assert WebhookSubscription.objects.get().secret == SECRET
    finally:
        fields._fernet.cache_clear()


@pytest.mark.django_db
def test_an_event_payload_is_json_the_receiver_can_read(receiver: Receiver) -> None:
    subscribe(receiver.url)
    happen("e-1")
    services.webhook_deliveries_send_due()
    assert json.loads(receiver.received[0].body)["data"] == {"what": "e-1"}
