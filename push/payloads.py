"""Pure builders of the provider requests from a push_req, keeping the payload contract the
mobile apps already rely on (PROTOCOL Appendix A.8)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# apns4erl's names, as Kazoo's `<app>.apple.headers` config uses them.
KAZOO_APNS_HEADER_NAMES = {
    "apns_id": "apns-id",
    "apns_expiration": "apns-expiration",
    "apns_priority": "apns-priority",
    "apns_topic": "apns-topic",
    "apns_collapse_id": "apns-collapse-id",
    "apns_push_type": "apns-push-type",
}
APNS_HEADER = re.compile(r"^[a-z0-9-]{1,64}$")


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# A 2015-era push_req (wapi_pusher: `Alert-Body` instead of `Alert-Key` + `Alert-Params`). Old
# Kazoo's pm_apple sent it as a localized alert, whatever else the push_req held: loc-key IC_MSG with
# the Alert-Body as its one argument, sound ring.caf, and the call id at the top level of the
# payload (apns4erl's `extra`), where the apps of that era read it. Its pm_google sent only
# `data.Call-ID`.
LEGACY_ALERT_LOC_KEY = "IC_MSG"
LEGACY_APNS_SOUND = "ring.caf"


def _alert_body_only(fields: Mapping[str, Any]) -> bool:
    """An Alert-Body and neither Alert-Key nor Alert-Params."""
    return (
        fields.get("Alert-Body") is not None
        and fields.get("Alert-Key") is None
        and fields.get("Alert-Params") is None
    )


def _mapped(fields: Mapping[str, Any], *, visible: bool) -> dict[str, Any]:
    """The Kazoo field mapping shared by both providers: alert, sound, call id. `visible`: a
    visible push pusher itself asks for (a missed call), whose Alert-Body is the text shown."""
    alert: Any = None
    if _alert_body_only(fields):
        body = fields["Alert-Body"]
        if visible:
            alert = body
        else:  # a 2015-era push_req
            alert = {"loc-key": LEGACY_ALERT_LOC_KEY, "loc-args": [body if isinstance(body, str) else str(body)]}
    elif fields.get("Alert-Key") is not None or fields.get("Alert-Params") is not None:
        alert = {}
        if fields.get("Alert-Key") is not None:
            alert["loc-key"] = fields["Alert-Key"]
        if fields.get("Alert-Params") is not None:
            alert["loc-args"] = fields["Alert-Params"]
    mapped: dict[str, Any] = {}
    if alert is not None:
        mapped["alert"] = alert
    if fields.get("Sound") is not None:
        mapped["sound"] = fields["Sound"]
    if fields.get("Call-ID") is not None:
        mapped["call-id"] = fields["Call-ID"]
    return mapped


def _payload(fields: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    payload = fields.get("Payload")
    payload = dict(payload) if isinstance(payload, Mapping) else {}
    # Kazoo's listener adds this (as a string) to every push since Sep 2019.
    payload["utc_unix_timestamp_ms"] = str(now_ms)
    return payload


def apns_body(fields: Mapping[str, Any], *, now_ms: int, visible: bool = False) -> dict[str, Any]:
    """aps.alert.loc-key/loc-args, aps.sound, aps.call-id; Payload merged at the top level,
    mapped values winning on clashes (as Kazoo's fold does). A 2015-era push_req (Alert-Body)
    is sent as old Kazoo sent it: aps.alert {loc-key IC_MSG, loc-args [Alert-Body]}, aps.sound
    (ring.caf unless the push_req names one) and `call-id` at the top level. `visible`: a visible
    push pusher asks for itself (a missed call), whose Alert-Body is the alert text."""
    mapped = _mapped(fields, visible=visible)
    if _alert_body_only(fields) and not visible:
        top: dict[str, Any] = {"aps": {"alert": mapped["alert"], "sound": mapped.get("sound", LEGACY_APNS_SOUND)}}
        if "call-id" in mapped:
            top["call-id"] = mapped["call-id"]
        return _deep_merge(_payload(fields, now_ms), top)
    aps = {}
    if "alert" in mapped:
        aps["alert"] = mapped["alert"]
    if "sound" in mapped:
        aps["sound"] = mapped["sound"]
    if "call-id" in mapped:
        aps["call-id"] = mapped["call-id"]
    return _deep_merge(_payload(fields, now_ms), {"aps": aps})


def fcm_data(fields: Mapping[str, Any], *, now_ms: int, visible: bool = False) -> dict[str, str]:
    """FCM HTTP v1 `data`: the legacy keys (alert, sound, Call-ID, Payload keys), every value a
    string because v1 allows nothing else; nested values are JSON-encoded. A 2015-era push_req
    keeps old Kazoo's `Call-ID` and carries its Alert-Body in the same `alert` object as APNs
    (loc-key IC_MSG); no sound unless the push_req names one (ring.caf is an iOS file).
    `visible`: as for `apns_body`."""
    mapped = _mapped(fields, visible=visible)
    data: dict[str, Any] = _payload(fields, now_ms)
    if "alert" in mapped:
        data["alert"] = mapped["alert"]
    if "sound" in mapped:
        data["sound"] = mapped["sound"]
    if "call-id" in mapped:
        data["Call-ID"] = mapped["call-id"]
    return {str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for k, v in data.items()}


def apns_topic(topic: str, push_type: str) -> str:
    """Apple requires VoIP pushes on `<bundle>.voip`."""
    if push_type == "voip" and not topic.endswith(".voip"):
        return topic + ".voip"
    return topic


def apns_wire(
    *, topic: str, push_type: str, headers: Mapping[str, str], requested: str | None = None
) -> tuple[str, str]:
    """(apns-push-type, apns-topic) of a push through an app whose topic (its own, else Kazoo's
    rule: Token-App minus .dev/.prod) is `topic`, whose push type is `push_type` and whose extra
    headers (as `apns_extra_headers` maps them) are `headers`:

    * `requested`, one push's own type, first: an alert (e.g. a missed call) goes to the bundle's
      own topic, `.voip` removed; voip to `<topic>.voip`;
    * then the app's push type when it is set: voip to `<topic>.voip` (Apple's rule for PushKit);
    * a blank push type is "as Kazoo": Kazoo sends no push type of its own, so the topic goes as
      it is (a configured apns-topic header included) and the type is the configured
      apns-push-type header, else voip when the topic ends in `.voip` (a VoIP certificate's
      topic), else alert.
    """
    if requested:
        if requested != "voip":
            return requested, topic.removesuffix(".voip")
        return "voip", apns_topic(topic, "voip")
    if push_type:
        return push_type, apns_topic(topic, push_type)
    topic = headers.get("apns-topic") or topic
    configured = headers.get("apns-push-type", "").strip()
    return configured or ("voip" if topic.endswith(".voip") else "alert"), topic


def apns_sandbox_requested(fields: Mapping[str, Any]) -> bool:
    """Whether a push_req names its token a development-build (APNs sandbox) one: Token-Type
    `apns.dev` (RFC 8599's pn-provider for sandbox, when a push object carries it as it is), or
    Kazoo's convention of a Token-App ending in `.dev` (Kazoo strips it from the topic with
    `\\.(?:dev|prod)$` and expects that app configured with the development host). Tokens the
    registry learnt from `pn-provider=apns.dev` reach the push_req as plain `apple` tokens; the push
    path asks the registry for those (push.services.appcache.apns_token_sandbox)."""
    token_type = fields.get("Token-Type")
    app = fields.get("Token-App")
    return (isinstance(token_type, str) and token_type.strip().lower() == "apns.dev") or (
        isinstance(app, str) and app.strip().endswith(".dev")
    )


def apns_extra_headers(configured: Mapping[str, Any] | None) -> dict[str, str]:
    """The app's extra headers with Kazoo's apns_* names mapped to the real header names. Anything
    but an object (a row stored before PushApp.clean refused it) is no headers: its app still
    pushes, and its pages still render so that it can be fixed."""
    out: dict[str, str] = {}
    if not isinstance(configured, Mapping):
        return out
    for name, value in configured.items():
        header = KAZOO_APNS_HEADER_NAMES.get(str(name).lower(), str(name).lower())
        if APNS_HEADER.match(header) and value is not None:
            out[header] = str(value)
    return out


def int_or_none(value: Any) -> int | None:
    """Kazoo's schemas say strings, Kamailio sends integers: accept both."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None
