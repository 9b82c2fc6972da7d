"""push.payloads: the provider payloads built from a push_req (pure, no Django)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from push.payloads import apns_body, apns_wire, fcm_data
from tests.fixtures import sample

NOW_MS = 1732700012345
STAMP = str(NOW_MS)
LEGACY = sample("push_req_kamailio_2015_legacy.json")["body"]
MASTER = sample("push_req_kamailio_master.json")["body"]
APNS_EXPECTED = sample("apns_request_constructed.json")["body"]
CALL_ID = LEGACY["Call-ID"]
CALLER = LEGACY["Alert-Body"]


def legacy(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(LEGACY)
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


# (id, push_req, expected APNs body, expected FCM data with its JSON-encoded values decoded)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "2015 Alert-Body: old Kazoo's IC_MSG alert, ring.caf, call-id at the top level",
        legacy(),
        {
            "aps": {"alert": {"loc-key": "IC_MSG", "loc-args": [CALLER]}, "sound": "ring.caf"},
            "call-id": CALL_ID,
            "utc_unix_timestamp_ms": STAMP,
        },
        {
            "alert": {"loc-key": "IC_MSG", "loc-args": [CALLER]},
            "Call-ID": CALL_ID,
            "utc_unix_timestamp_ms": STAMP,
        },
    ),
    (
        "2015 Alert-Body with a Sound of its own",
        legacy(Sound="bell.caf"),
        {
            "aps": {"alert": {"loc-key": "IC_MSG", "loc-args": [CALLER]}, "sound": "bell.caf"},
            "call-id": CALL_ID,
            "utc_unix_timestamp_ms": STAMP,
        },
        {
            "alert": {"loc-key": "IC_MSG", "loc-args": [CALLER]},
            "sound": "bell.caf",
            "Call-ID": CALL_ID,
            "utc_unix_timestamp_ms": STAMP,
        },
    ),
    (
        "2015 Alert-Body without a Call-ID",
        legacy(**{"Call-ID": None}),
        {
            "aps": {"alert": {"loc-key": "IC_MSG", "loc-args": [CALLER]}, "sound": "ring.caf"},
            "utc_unix_timestamp_ms": STAMP,
        },
        {"alert": {"loc-key": "IC_MSG", "loc-args": [CALLER]}, "utc_unix_timestamp_ms": STAMP},
    ),
    (
        "2015 Alert-Body that is a number: the argument is text",
        legacy(**{"Alert-Body": 15551234567}),
        {
            "aps": {"alert": {"loc-key": "IC_MSG", "loc-args": ["15551234567"]}, "sound": "ring.caf"},
            "call-id": CALL_ID,
            "utc_unix_timestamp_ms": STAMP,
        },
        {
            "alert": {"loc-key": "IC_MSG", "loc-args": ["15551234567"]},
            "Call-ID": CALL_ID,
            "utc_unix_timestamp_ms": STAMP,
        },
    ),
    (
        "2015 Alert-Body with a Payload: merged at the top level, the mapped call-id wins",
        legacy(Payload={"call-id": "other", "proxy": "sip:203.0.113.10:5060"}),
        {
            "aps": {"alert": {"loc-key": "IC_MSG", "loc-args": [CALLER]}, "sound": "ring.caf"},
            "call-id": CALL_ID,
            "proxy": "sip:203.0.113.10:5060",
            "utc_unix_timestamp_ms": STAMP,
        },
        {
            "alert": {"loc-key": "IC_MSG", "loc-args": [CALLER]},
            "call-id": "other",
            "proxy": "sip:203.0.113.10:5060",
            "Call-ID": CALL_ID,
            "utc_unix_timestamp_ms": STAMP,
        },
    ),
    (
        "Alert-Key beside an Alert-Body: the 4.x mapping, Alert-Body unused",
        legacy(**{"Alert-Key": "IC_SIL", "Alert-Params": ["x"]}),
        {
            "aps": {"alert": {"loc-key": "IC_SIL", "loc-args": ["x"]}, "call-id": CALL_ID},
            "utc_unix_timestamp_ms": STAMP,
        },
        {
            "alert": {"loc-key": "IC_SIL", "loc-args": ["x"]},
            "Call-ID": CALL_ID,
            "utc_unix_timestamp_ms": STAMP,
        },
    ),
    (
        "Kamailio master push_req: Kazoo 4.3's mapping (the constructed APNs sample)",
        copy.deepcopy(MASTER),
        {**APNS_EXPECTED, "utc_unix_timestamp_ms": STAMP},
        {
            **MASTER["Payload"],
            "alert": {"loc-key": "IC_SIL", "loc-args": MASTER["Alert-Params"]},
            "sound": "ring.caf",
            "Call-ID": MASTER["Call-ID"],
            "utc_unix_timestamp_ms": STAMP,
        },
    ),
]


@pytest.mark.parametrize("fields, apns, fcm", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_payloads(fields: dict[str, Any], apns: dict[str, Any], fcm: dict[str, Any]) -> None:
    assert apns_body(fields, now_ms=NOW_MS) == apns
    data = fcm_data(fields, now_ms=NOW_MS)
    assert all(isinstance(value, str) for value in data.values())  # FCM HTTP v1
    decoded = {key: json.loads(value) if value[:1] in "{[" else value for key, value in data.items()}
    assert decoded == fcm


def test_a_visible_push_shows_its_alert_body_as_text() -> None:
    """pusher's own visible push (a missed call, requested as an alert) carries its text in
    Alert-Body: shown as it is, not as a 2015 push_req's IC_MSG argument."""
    fields = legacy(Sound="default")
    assert apns_body(fields, now_ms=NOW_MS, visible=True) == {
        "aps": {"alert": CALLER, "sound": "default", "call-id": CALL_ID}, "utc_unix_timestamp_ms": STAMP,
    }
    assert fcm_data(fields, now_ms=NOW_MS, visible=True) == {
        "alert": CALLER, "sound": "default", "Call-ID": CALL_ID, "utc_unix_timestamp_ms": STAMP,
    }


# (topic, app push type, extra headers, one push's own type) -> (apns-push-type, apns-topic)
WIRE_CASES = [
    # As Kazoo (blank push type): the topic as it is, the type from the headers or the topic.
    ("com.acme.alertonly", "", {}, None, ("alert", "com.acme.alertonly")),
    ("com.acme.phone.voip", "", {}, None, ("voip", "com.acme.phone.voip")),
    ("com.acme.phone", "", {"apns-push-type": "voip"}, None, ("voip", "com.acme.phone")),
    ("com.acme.phone", "", {"apns-push-type": "background"}, None, ("background", "com.acme.phone")),
    ("com.acme.phone", "", {"apns-topic": "com.acme.phone.voip"}, None, ("voip", "com.acme.phone.voip")),
    # The app's own push type: Apple's .voip rule for voip.
    ("com.acme.phone", "voip", {}, None, ("voip", "com.acme.phone.voip")),
    ("com.acme.phone.voip", "voip", {}, None, ("voip", "com.acme.phone.voip")),
    ("com.acme.phone", "alert", {}, None, ("alert", "com.acme.phone")),
    # One push's own type first (a missed call's alert): the bundle topic.
    ("com.acme.phone.voip", "", {}, "alert", ("alert", "com.acme.phone")),
    ("com.acme.phone.voip", "voip", {}, "alert", ("alert", "com.acme.phone")),
    ("com.acme.alertonly", "", {}, "voip", ("voip", "com.acme.alertonly.voip")),
]


@pytest.mark.parametrize("topic, push_type, headers, requested, expected", WIRE_CASES)
def test_apns_wire(topic, push_type, headers, requested, expected) -> None:
    assert apns_wire(topic=topic, push_type=push_type, headers=headers, requested=requested) == expected
