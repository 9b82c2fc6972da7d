"""Admin tools: Test a User-Agent, rule validation, Sync to Kazoo, test pushes (devices and apps)."""

from __future__ import annotations

import html
import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from kazoo.config import kazoo_config_import
from push import services
from push.models import Delivery, DeliverySource, DeliveryStatus, Provider, PushApp
from registry.models import Device, SyncStatus, UserAgentRule
from registry.services import registration_apply
from tests.fakes.apns import Answer
from tests.fixtures import sample

pytestmark = pytest.mark.django_db

REG = sample("reg_success_kamailio_master.json")["body"]
EXPECTED_PUSH = sample("device_push_object.json")["doc"]["push"]
APP = "com.acme.phone.voip.prod"
TEST_URL = "/admin/registry/useragentrule/test/"


def page(response) -> str:
    return html.unescape(response.content.decode())


def shown_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def kazoo_rules(db):
    kazoo_config_import(document=sample("system_config_pusher_constructed.json"))


@pytest.fixture
def device(kazoo_rules) -> Device:
    return registration_apply(fields=REG).device


@pytest.fixture
def apple_app(apns_trusting_fake, kazoo_rules) -> PushApp:
    """The imported app, its placeholder certificate replaced by one the fake trusts, pointed at the fake."""
    fake = apns_trusting_fake
    cert = fake.ca.issue_client_cert("com.acme.phone", voip=True)
    added = services.push_app_add(
        app_id=APP, provider=Provider.APPLE, kind="apns_certificate", data=cert.pem, host=fake.host, port=fake.port
    )
    return added.app


# --- Test a User-Agent --------------------------------------------------------------------------


def test_rule_changelist_links_to_the_tester(staff_client):
    response = staff_client.get(reverse("admin:registry_useragentrule_changelist"))
    assert response.status_code == 200
    assert reverse("admin:registry_useragentrule_test") == TEST_URL
    assert f'href="{TEST_URL}"' in page(response) and "Test a User-Agent" in page(response)


def test_tester_renders_empty(staff_client):
    response = staff_client.get(TEST_URL)
    assert response.status_code == 200
    assert "User-Agent" in page(response) and 'name="contact"' in page(response)


def test_tester_shows_the_rule_push_object_and_tokens(staff_client, kazoo_rules):
    response = staff_client.post(TEST_URL, {
        "user_agent": REG["User-Agent"],
        "contact": REG["Contact"],
        "extra_fields": json.dumps({"Proxy-Path": REG["Proxy-Path"]}),
    })

    assert response.status_code == 200
    result = response.context["result"]
    assert result.rule == "AcmePhone" and result.push == EXPECTED_PUSH
    body = page(response)
    # (key order follows the rule's properties, which PostgreSQL's jsonb stores in its own order)
    assert json.dumps(result.push, indent=2) in body
    assert EXPECTED_PUSH["Token-ID"] in body and "voip" in body
    assert not Device.objects.exists()  # nothing saved


def test_tester_reports_an_unparsable_contact(staff_client, kazoo_rules):
    response = staff_client.post(TEST_URL, {"user_agent": "AcmePhone 1", "contact": "<sip:broken"})
    assert response.status_code == 200 and response.context["result"] is None
    assert any("Contact does not parse" in m for m in shown_messages(response))


def test_tester_refuses_extra_fields_that_are_not_an_object(staff_client, kazoo_rules):
    response = staff_client.post(TEST_URL, {"user_agent": "AcmePhone", "contact": "<sip:a@b>", "extra_fields": "[1]"})
    assert response.context["form"].errors["extra_fields"]


def test_tester_needs_staff(client, db):
    assert client.get(TEST_URL).status_code == 302


# --- Rule validation ----------------------------------------------------------------------------


def rule_post(**changes: str) -> dict[str, str]:
    data = {"name": "Zoiper", "position": "30", "enabled": "on", "regex": "^Zoiper",
            "properties": json.dumps({"Token-ID": "pn-tok"}), "description": ""}
    data.update(changes)
    return data


def test_rule_form_refuses_an_invalid_regex(staff_client):
    response = staff_client.post(reverse("admin:registry_useragentrule_add"), rule_post(regex="^Zoiper("))
    assert response.status_code == 200
    assert "invalid User-Agent regex" in " ".join(response.context["adminform"].form.errors["regex"])
    assert not UserAgentRule.objects.exists()


@pytest.mark.parametrize("properties", ['["pn-tok"]', '{"Token-ID": 5}', '"pn-tok"'])
def test_rule_form_refuses_properties_that_are_not_string_to_string(staff_client, properties):
    response = staff_client.post(reverse("admin:registry_useragentrule_add"), rule_post(properties=properties))
    assert response.status_code == 200
    assert "JSON object" in " ".join(response.context["adminform"].form.errors["properties"])
    assert not UserAgentRule.objects.exists()


def test_rule_form_saves_a_valid_rule(staff_client):
    response = staff_client.post(reverse("admin:registry_useragentrule_add"), rule_post())
    assert response.status_code == 302
    assert UserAgentRule.objects.get().properties == {"Token-ID": "pn-tok"}


# --- Device actions -----------------------------------------------------------------------------


def device_action(staff_client, action: str, *devices: Device):
    return staff_client.post(
        reverse("admin:registry_device_changelist"),
        {"action": action, ACTION_CHECKBOX_NAME: [str(d.pk) for d in devices]},
        follow=True,
    )


def test_sync_to_kazoo_now(staff_client, device, fake_crossbar, settings):
    settings.KAZOO_CROSSBAR_URL = fake_crossbar.url
    settings.KAZOO_API_KEY = fake_crossbar.api_key

    response = device_action(staff_client, "sync_to_kazoo", device)

    assert "1 device(s) synced to Kazoo." in shown_messages(response)
    assert fake_crossbar.devices[(device.account_id, device.device_id)]["push"] == EXPECTED_PUSH
    device.refresh_from_db()
    assert device.sync_status == SyncStatus.SYNCED and device.push_synced_at is not None


def test_sync_to_kazoo_reports_failures(staff_client, device, fake_crossbar, settings):
    settings.KAZOO_CROSSBAR_URL = fake_crossbar.url
    settings.KAZOO_API_KEY = fake_crossbar.api_key
    fake_crossbar.fail_next(10, 500, only="/devices/")

    response = device_action(staff_client, "sync_to_kazoo", device)

    (message,) = shown_messages(response)
    assert message.startswith("1 device(s) failed to sync:") and str(device) in message
    device.refresh_from_db()
    assert device.sync_status == SyncStatus.FAILED


def test_sync_without_kazoo_configured(staff_client, device, settings):
    settings.KAZOO_CROSSBAR_URL = ""
    response = device_action(staff_client, "sync_to_kazoo", device)
    assert any("not configured" in m for m in shown_messages(response))


def test_device_test_push(staff_client, device, apple_app, apns_trusting_fake):
    response = device_action(staff_client, "send_test_push", device)

    (message,) = shown_messages(response)
    assert message.startswith(f"{device}: sent, HTTP 200, apns-id ")
    delivery = Delivery.objects.get()
    assert delivery.source == DeliverySource.ADMIN and delivery.status == DeliveryStatus.SENT
    (request,) = apns_trusting_fake.requests
    assert request.token == EXPECTED_PUSH["Token-ID"]
    assert request.body["proxy"] == EXPECTED_PUSH["Token-Proxy"]


def test_device_test_push_without_push_object(staff_client, device):
    device.push = None
    device.save()
    response = device_action(staff_client, "send_test_push", device)
    assert any("no push object" in m for m in shown_messages(response))
    assert not Delivery.objects.exists()


# --- PushApp test push (intermediate page) ------------------------------------------------------


def app_action(staff_client, app: PushApp, **extra: str):
    return staff_client.post(
        reverse("admin:push_pushapp_changelist"),
        {"action": "send_test_push", ACTION_CHECKBOX_NAME: [str(app.pk)], **extra},
        follow=True,
    )


def test_app_test_push_asks_for_a_token_then_sends(staff_client, apple_app, apns_trusting_fake):
    token = "a1" * 32
    asked = app_action(staff_client, apple_app)
    assert asked.status_code == 200
    assert 'name="token"' in page(asked) and "Send a test push from" in page(asked)
    assert not apns_trusting_fake.requests

    response = app_action(staff_client, apple_app, token=token, send="Send test push")

    (message,) = shown_messages(response)
    assert message.startswith(f"{apple_app}: sent, HTTP 200")
    (request,) = apns_trusting_fake.requests
    assert request.token == token and request.headers["apns-topic"] == "com.acme.phone.voip"
    assert request.body["aps"]["alert"] == {"loc-key": "IC_SIL", "loc-args": ["15555555555"]}
    delivery = Delivery.objects.get()
    assert (delivery.source, delivery.app_id, delivery.token_type) == (DeliverySource.ADMIN, APP, "apple")


def test_app_test_push_shows_the_providers_refusal(staff_client, apple_app, apns_trusting_fake):
    apns_trusting_fake.set_default(Answer.error(400, "BadDeviceToken"))
    response = app_action(staff_client, apple_app, token="b2" * 32, send="Send test push")
    (message,) = shown_messages(response)
    assert "failed" in message and "HTTP 400" in message and "BadDeviceToken" in message


def test_app_test_push_needs_exactly_one_app(staff_client, apple_app):
    other = services.push_app_upsert(app_id="com.acme.other", provider=Provider.APPLE)
    response = staff_client.post(
        reverse("admin:push_pushapp_changelist"),
        {"action": "send_test_push", ACTION_CHECKBOX_NAME: [str(apple_app.pk), str(other.pk)]},
        follow=True,
    )
    assert "Select exactly one app to send a test push from." in shown_messages(response)


def test_app_test_push_needs_the_send_push_permission(client, apple_app, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("viewer", password="viewer-password-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_pushapp", "change_pushapp"]))
    client.force_login(user)
    changelist = client.get(reverse("admin:push_pushapp_changelist"))
    assert changelist.status_code == 200 and "send_test_push" not in page(changelist)

    app_action(client, apple_app, token="c3" * 32, send="Send test push")
    assert not Delivery.objects.exists()
