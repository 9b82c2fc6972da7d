"""The provider clients as the push path uses them: credentials built once per stored version,
requests built from a push_req and an app, one send for callers on an event loop."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from push.credentials import pem_cert_and_key
from push.models import (
    Credential,
    CredentialKind,
    Provider,
    PushApp,
)
from push.payloads import apns_body, apns_extra_headers, apns_sandbox_requested, fcm_data, int_or_none
from push.providers import apns, fcm
from push.services.appcache import apns_token_sandbox
from push.services.credentials import credential_secret
from push.services.policy import ATTEMPT_TIMEOUT_S, PUSH_WINDOW_MAX_S, SendResult

log = logging.getLogger(__name__)

_fcm_sender: tuple[str, fcm.FcmSender] | None = None


_fcm_lock = threading.Lock()


def _fcm() -> fcm.FcmSender:
    """The process's FCM sender (one OAuth2 token per credential), rebuilt if the endpoint setting
    changes (tests point it at a fake)."""
    global _fcm_sender
    endpoint = settings.PUSHER_FCM_ENDPOINT
    with _fcm_lock:
        if _fcm_sender is None or _fcm_sender[0] != endpoint:
            _fcm_sender = (endpoint, fcm.FcmSender(endpoint, ca_file=settings.PUSHER_FCM_CA_FILE))
        return _fcm_sender[1]


def _cache_key(credential: Credential) -> str:
    return f"{credential.pk}:{credential.fingerprint_sha256}:{credential.updated_at.timestamp()}"


def _apns_credential(credential: Credential) -> apns.ApnsCredential:
    return _apns_credential_built(
        _cache_key(credential), credential.kind, credential_secret(credential), credential.key_id, credential.team_id
    )


def _fcm_credential(credential: Credential, app: PushApp) -> fcm.FcmCredential:
    return _fcm_credential_built(
        _cache_key(credential), credential_secret(credential), app.project_id or credential.project_id
    )


# The provider credentials are built once per stored version (the cache key changes when the
# credential is saved), not on every push: splitting the PEM or parsing the service-account JSON
# each time was work on the push path's hot loop.
@functools.lru_cache(maxsize=64)
def _apns_credential_built(cache_key: str, kind: str, secret: str, key_id: str, team_id: str) -> apns.ApnsCredential:
    if kind == CredentialKind.APNS_TOKEN:
        return apns.ApnsCredential(kind="token", key_pem=secret, key_id=key_id, team_id=team_id, cache_key=cache_key)
    cert_pem, key_pem = pem_cert_and_key(secret)
    return apns.ApnsCredential(kind="certificate", cert_pem=cert_pem, key_pem=key_pem, cache_key=cache_key)


@functools.lru_cache(maxsize=64)
def _fcm_credential_built(cache_key: str, secret: str, project_id: str) -> fcm.FcmCredential:
    return fcm.FcmCredential(service_account_info=json.loads(secret), project_id=project_id, cache_key=cache_key)


def _attempt_timeout(deadline: float) -> float:
    # Leave a little room so that a request written at the very end still arrives in time.
    return max(0.01, min(ATTEMPT_TIMEOUT_S, deadline - time.time() - 0.05))


# Where a sandbox (development build) token goes when its app is on Apple's production host:
# Apple's development host, with the app's credential and port (an APNs certificate or key made
# for both environments is accepted by both).
APNS_SANDBOX_OF = {apns.PRODUCTION_HOST: apns.SANDBOX_HOST}


def apns_host(app_host: str, *, sandbox: bool) -> str:
    """The host a push goes to: the app's, but Apple's development host for a sandbox token of an
    app on Apple's production host. Any other host stays (the app already on a development host,
    a relay, a test server): it was configured on purpose."""
    if not sandbox:
        return app_host
    return APNS_SANDBOX_OF.get(app_host.strip().lower().rstrip("."), app_host)


def apns_request_build(
    *, app: PushApp, fields: Mapping[str, Any], token: str, push_type: str | None
) -> apns.ApnsRequest:
    now = time.time()
    visible = push_type == "alert"  # pusher's own visible push (a missed call): Alert-Body is its text
    # The push's own type (e.g. an alert for a missed call: the bundle's own topic, never its
    # PushKit one), else the app's, else as Kazoo sent it (push.payloads.apns_wire).
    push_type, topic = app.apns_wire(push_type)
    # Seconds Apple keeps trying: the push_req's Expires (capped), else the app's setting. 0 (or
    # less) is apns-expiration 0, "now or never"; None leaves Apple's default.
    expires = int_or_none(fields.get("Expires"))
    valid_s = min(expires, PUSH_WINDOW_MAX_S) if expires is not None else app.expiration
    expiration = None if valid_s is None else (int(now) + valid_s if valid_s > 0 else 0)
    return apns.ApnsRequest(
        token=token,
        topic=topic,
        push_type=push_type,
        priority=app.priority,
        expiration=expiration,
        collapse_id=app.collapse_id or None,
        extra_headers=apns_extra_headers(app.extra_headers),
        body=apns_body(fields, now_ms=int(now * 1000), visible=visible),
        host=apns_host(
            app.host, sandbox=apns_sandbox_requested(fields) or apns_token_sandbox(app_id=app.app_id, token=token)
        ),
        port=app.port,
    )


def fcm_request_build(*, app: PushApp, fields: Mapping[str, Any], token: str, push_type: str | None) -> fcm.FcmRequest:
    now_ms = int(time.time() * 1000)
    expires = int_or_none(fields.get("Expires"))
    ttl = min(expires, PUSH_WINDOW_MAX_S) if expires is not None and expires >= 0 else app.ttl_s
    return fcm.FcmRequest(
        token=token, data=fcm_data(fields, now_ms=now_ms, visible=push_type == "alert"),
        android_priority=app.android_priority, ttl_s=ttl,
        collapse_key=app.collapse_id or None,
        notification=_fcm_notification(fields) if push_type == "alert" else None,
    )


def _fcm_notification(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The visible part of an FCM "alert" push: its text."""
    body = fields.get("Alert-Body")
    return {"body": body} if isinstance(body, str) and body else None


def _apns_result(result: apns.ApnsResult) -> SendResult:
    return SendResult(
        outcome=result.outcome.value, status=result.status, reason=result.reason,
        description=result.description, message_id=result.apns_id or "", timestamp_ms=result.timestamp_ms,
    )


def _fcm_result(result: fcm.FcmResult) -> SendResult:
    return SendResult(
        outcome=result.outcome.value, status=result.status, reason=result.reason,
        description=result.description, message_id=result.message_name or "",
    )


async def provider_send_async(
    *, app: PushApp, fields: Mapping[str, Any], token: str, deadline: float, push_type: str | None = None,
    fcm_executor: Any = None,
) -> SendResult:
    """Send one request to the app's provider, from the APNs client's event loop: APNs on that loop
    (no thread hop), FCM (pyfcm is blocking) on `fcm_executor`."""
    credential = app.credential
    assert credential is not None
    timeout = _attempt_timeout(deadline)
    if app.provider == Provider.APPLE:
        request = apns_request_build(app=app, fields=fields, token=token, push_type=push_type)
        return _apns_result(await apns.get_client().send(request, _apns_credential(credential), timeout=timeout))
    request_fcm = fcm_request_build(app=app, fields=fields, token=token, push_type=push_type)
    fcm_credential = _fcm_credential(credential, app)
    sender = _fcm()
    result = await asyncio.get_running_loop().run_in_executor(
        fcm_executor, functools.partial(sender.send, request_fcm, fcm_credential, timeout=timeout)
    )
    return _fcm_result(result)
