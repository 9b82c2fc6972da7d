"""A registration naming a Token-Type pusher cannot push to is refused like a malformed token: the
device's stored push object, its tokens and its sync state are left alone, with one line saying why."""

from __future__ import annotations

import copy
import json
import logging

import pytest

from kazoo.wire import RawMessage, message_process
from registry.models import Device, PushToken
from tests.fixtures import sample

pytestmark = pytest.mark.django_db

REG = sample("reg_success_kamailio_master.json")


@pytest.mark.parametrize("pn_type", ["blackberry", "webpush"])
def test_an_unknown_pn_type_leaves_a_working_device_alone(registered_device, caplog, pn_type) -> None:
    device_before = Device.objects.values().get(pk=registered_device.pk)
    tokens_before = list(PushToken.objects.values().order_by("pk"))
    assert device_before["push"]["Token-Type"] == "apple"
    body = copy.deepcopy(REG["body"])
    body["Contact"] = body["Contact"].replace("pn-type=apple", f"pn-type={pn_type}")
    body["Msg-ID"] = "reg-unknown-type"
    caplog.set_level(logging.INFO, logger="pusher.messages")

    handled = message_process(RawMessage(body=json.dumps(body).encode()))

    assert (handled.action, handled.outcome) == ("ack", "ignored")  # acked: a phone's choice, not a bad message
    assert f"Token-Type '{pn_type}' is none pusher can push to" in handled.reason
    assert Device.objects.values().get(pk=registered_device.pk) == device_before
    assert list(PushToken.objects.values().order_by("pk")) == tokens_before
    (line,) = [r.getMessage() for r in caplog.records if "reg-unknown-type" in r.getMessage()]
    assert "outcome=ignored" in line and f"Token-Type '{pn_type}' is none pusher can push to" in line
