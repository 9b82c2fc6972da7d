"""Pushes asked for by people and peers rather than by Kamailio's push_req: test pushes (commands,
admin) and Kamailio's push-notifications-role (POST /api/v1/send)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import PusherError
from push.models import (
    Delivery,
    DeliverySource,
    Provider,
    PushApp,
)

if TYPE_CHECKING:
    from registry.models import Device as RegistryDevice
from push.services.policy import PROVIDER_OF_TOKEN_TYPE
from push.services.sending import PushRequest, push_request_handle, push_requests_handle
from tenancy.scope import EVERY_ACCOUNT, AccountScope, OutOfScope

log = logging.getLogger(__name__)

# What Kazoo 4.3's `sup pusher_maintenance push` puts in its synthetic push_req.
TEST_PUSH_CALLER_NUMBER = "15555555555"


TEST_PUSH_CALLER_NAME = "this is a push test"


def _test_push_fields(
    *, token: str, token_type: str, app_id: str, proxy: str, account_id: str = "", device_id: str = ""
) -> dict[str, Any]:
    """A push_req shaped like the one Kamailio's pusher role publishes (and Kazoo 4.3's
    `pusher_maintenance:push/2` injects), so the phone sees exactly what a real call sends."""
    call_id = str(uuid.uuid4())
    fields: dict[str, Any] = {
        "Event-Category": "notification",
        "Event-Name": "push_req",
        "App-Name": "Kamailio",
        "App-Version": "pusher-test",
        "Msg-ID": uuid.uuid4().hex,
        "Call-ID": call_id,
        "Token-ID": token,
        "Token-Type": token_type,
        "Token-App": app_id,
        "Alert-Key": "IC_SIL",
        "Alert-Params": [TEST_PUSH_CALLER_NUMBER],
        "Sound": "ring.caf",
        "Payload": {
            "call-id": call_id,
            "proxy": proxy,
            "caller-id-number": TEST_PUSH_CALLER_NUMBER,
            "caller-id-name": TEST_PUSH_CALLER_NAME,
            "registration-token": str(uuid.uuid4()),
        },
    }
    if account_id:
        fields["Account-ID"] = account_id
    if device_id:
        fields["Endpoint-ID"] = device_id
    return fields


def push_test_send(*, device: RegistryDevice, source: str = DeliverySource.COMMAND) -> Delivery:
    """Kazoo 4.3's `sup pusher_maintenance push AccountId DeviceId`: a synthetic call push to the
    device's push object, through the real push path (delivery log, token handling included).
    Raises PusherError when the device has no push object."""
    push = device.push or {}
    if not push.get("Token-ID"):
        raise PusherError(
            f"device {device.account_id}/{device.device_id} has no push object: it has not registered "
            "with push parameters that a User-Agent rule maps"
        )
    fields = _test_push_fields(
        token=str(push.get("Token-ID", "")),
        token_type=str(push.get("Token-Type", "")),
        app_id=str(push.get("Token-App", "")),
        proxy=str(push.get("Token-Proxy", "")),
        account_id=device.account_id,
        device_id=device.device_id,
    )
    return push_request_handle(fields=fields, source=source)


def push_app_test_send(
    *, app: PushApp, token: str, source: str = DeliverySource.ADMIN, scope: AccountScope = EVERY_ACCOUNT
) -> Delivery:
    """A synthetic call push from `app` to a device token given by hand (an app alone has no
    token). Raises PusherError for an empty token. A restricted `scope` pushes only to a token a
    device of its accounts holds (else OutOfScope), and the delivery names that device."""
    token = (token or "").strip()
    if not token:
        raise PusherError("a device token is required to send a test push")
    fields = _test_push_fields(token=token, token_type=app.provider, app_id=app.app_id, proxy="")
    return push_request_handle(fields=_fields_in_scope(fields=fields, scope=scope), source=source)


def push_request_handle_in_scope(*, fields: Mapping[str, Any], source: str, scope: AccountScope) -> Delivery:
    """push_request_handle for a principal limited to `scope` (the API's push_req): see
    `_fields_in_scope`. Unrestricted, it is push_request_handle itself."""
    return push_request_handle(fields=_fields_in_scope(fields=fields, scope=scope), source=source)


def _fields_in_scope(*, fields: Mapping[str, Any], scope: AccountScope) -> Mapping[str, Any]:
    """A push_req a scoped principal may send: its Token-ID is held by a device of the scope's
    accounts (the Account-ID and Endpoint-ID it gives, if any, name that device), and the push is
    recorded with that device's Account-ID and Endpoint-ID, so the delivery is in the scope too.
    Raises OutOfScope otherwise: for a token of another account as for a token nobody holds."""
    if not scope.restricted:
        return fields
    from registry.selectors import push_token_holders

    token = fields.get("Token-ID")
    account_id, device_id = fields.get("Account-ID") or "", fields.get("Endpoint-ID") or ""
    holders = push_token_holders(token=token, scope=scope) if isinstance(token, str) and token else []
    holders = [(a, d) for a, d in holders if (not account_id or a == account_id) and (not device_id or d == device_id)]
    if not holders:
        raise OutOfScope("no device of your accounts holds this token")
    account_id, device_id = holders[0]
    return {**fields, "Account-ID": account_id, "Endpoint-ID": device_id}


NOTIFY_INCOMING_CALL = "incoming_call"


NOTIFY_MISSED_CALL = "missed_call"


NOTIFY_KINDS = (NOTIFY_INCOMING_CALL, NOTIFY_MISSED_CALL)


def _notify_token(*, tokens: list[Any], provider: str, kind: str) -> Any | None:
    """The one token of a device a notification goes to, on one provider (tokens newest first).

    iOS: an incoming call is a VoIP (PushKit) push, to the VoIP token (or a plain Kazoo-style one,
    which is a PushKit token by Kazoo's convention); a missed call is a visible alert, to the
    REMOTE token only: a VoIP push that does not report a call gets the app killed by iOS, and
    after repeated offences PushKit pushes are no longer delivered. Android has one token."""
    if provider == Provider.FIREBASE:
        return tokens[0] if tokens else None
    wanted = ("voip", "") if kind == NOTIFY_INCOMING_CALL else ("remote",)
    for token_kind in wanted:
        for token in tokens:
            if token.kind == token_kind:
                return token
    return None


@dataclass(frozen=True)
class Notification:
    """What Kamailio's push-notifications-role asks for (POST /api/v1/send), whoever it goes to."""

    kind: str  # NOTIFY_KINDS
    payload: Mapping[str, Any]
    expiry: int | None = None
    sound: str = ""
    text: str = ""
    mutable: bool = False


def push_notify(
    *, device: RegistryDevice, notification: Notification, source: str = DeliverySource.HTTP_SEND
) -> list[Delivery]:
    """Send a push-notifications-role notification to a device (its pushes at the same time):
    see `_notify_requests`. Raises PusherError (code no_token) when the device has no token the
    notification may go to."""
    return push_requests_handle(requests=_notify_requests(device=device, notification=notification, source=source))


def _notify_requests(*, device: RegistryDevice, notification: Notification, source: str) -> list[PushRequest]:
    """The pushes of a push-notifications-role notification to a device: one push per provider, to the
    token that suits it (see _notify_token), through the real push path (deadline, retries, delivery
    log, dead tokens). `incoming_call` is the app's VoIP / high-priority push; `missed_call` a
    visible notification (APNs apns-push-type alert, FCM with a notification).

    The push carries the request's `payload` keys verbatim plus Kazoo's own names (call-id, proxy,
    caller-id-number, caller-id-name) so an app written for Kazoo's pusher understands it too.
    Raises PusherError (code no_token) when the device has no token the notification may go to."""
    kind = notification.kind
    if kind not in NOTIFY_KINDS:
        raise PusherError(f"unknown notification type {kind!r} (expected {' or '.join(NOTIFY_KINDS)})")
    active = sorted(
        (t for t in device.tokens.all() if t.active), key=lambda t: (t.last_seen_at, t.pk), reverse=True
    )
    chosen = []
    for provider in (Provider.APPLE, Provider.FIREBASE):
        tokens = [t for t in active if PROVIDER_OF_TOKEN_TYPE.get(t.token_type.lower()) == provider]
        token = _notify_token(tokens=tokens, provider=provider, kind=kind)
        if token is not None:
            chosen.append((provider, token))
    if not chosen:
        what = "a remote (visible-notification) token" if kind == NOTIFY_MISSED_CALL else "an active push token"
        raise PusherError(f"device {device} has no {what}", code="no_token")

    values = {str(k): v for k, v in notification.payload.items()}
    call_id = str(values.get("push_id") or uuid.uuid4())
    number = str(values.get("remote_number") or "")
    name = str(values.get("remote_name") or "")
    requests = []
    for provider, token in chosen:
        fields: dict[str, Any] = {
            "Call-ID": call_id,
            "Token-ID": token.token,
            "Token-Type": token.token_type,
            "Token-App": token.app,
            "Account-ID": device.account_id,
            "Endpoint-ID": device.device_id,
        }
        body = {**values, "type": kind, "call-id": call_id, "caller-id-number": number, "caller-id-name": name}
        if kind == NOTIFY_INCOMING_CALL:
            body["proxy"] = str(values.get("token_proxy") or token.proxy or (device.push or {}).get("Token-Proxy", ""))
            fields.update({
                "Alert-Key": "IC_SIL", "Alert-Params": [f"{number} - {name}"],
                "Sound": notification.sound or "ring.caf",
            })
        else:
            fields.update({
                "Alert-Body": notification.text or f"Missed call from {name or number}".strip(),
                "Sound": notification.sound or "default",
            })
            if notification.mutable and provider == Provider.APPLE:
                body["aps"] = {"mutable-content": 1}  # merged into the aps the push path builds
        fields["Payload"] = body
        if notification.expiry is not None and notification.expiry > 0:
            fields["Expires"] = notification.expiry
        requests.append(PushRequest(
            fields=fields, source=source, push_type="alert" if kind == NOTIFY_MISSED_CALL else None,
        ))
    return requests


def push_notify_aor(
    *, aor: str, notification: Notification, source: str = DeliverySource.HTTP_SEND,
    scope: AccountScope = EVERY_ACCOUNT,
) -> list[Delivery]:
    """push_notify for every device registered as `aor` (`sip:user@realm`, Kamailio's X-KAZOO-AOR)
    among the accounts of `scope`, all their pushes sent at the same time; the deliveries in the
    order of the devices. Raises PusherError: code aor_invalid, unknown_aor (no such device: another
    account's device is none) or no_token (none of them has a token this notification may go to)."""
    from registry.selectors import device_list_for_aor

    devices = device_list_for_aor(aor=aor, scope=scope)
    if not devices:
        raise PusherError(f"no device is registered as {aor!r}", code="unknown_aor")
    requests: list[PushRequest] = []
    problems: list[str] = []
    for device in devices:
        try:
            requests.extend(_notify_requests(device=device, notification=notification, source=source))
        except PusherError as exc:
            if exc.code != "no_token":
                raise
            problems.append(exc.message)
    if not requests:
        raise PusherError("; ".join(problems), code="no_token")
    # All the devices' pushes at once: the second phone rings with the first, not after its answer.
    return push_requests_handle(requests=requests)
