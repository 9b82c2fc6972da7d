"""The provider clients as the push path uses them: credentials built once per stored version,
requests built from a push_req and an app, one send for callers on an event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


# The version (updated_at, cache key) of each credential this process last sent or warmed with, per
# provider. The provider clients key connections (APNs) and access tokens (FCM) by cache key, and a
# changed credential has a new one, so the old version's connections would idle on until the idle
# timeout: nothing calls `invalidate`, because the change is made by the web process (admin, API)
# and this process only sees the new row, through the app cache, seconds later. So the change is
# noticed here, when the new version is first used (a push or the warm-up), and the old version's
# connections and token are dropped then. A row older than the known version (a stale app cache
# entry read before the change) changes nothing.
_versions: dict[tuple[str, int], tuple[float, str]] = {}


def _version_current(provider: str, credential: Credential, cache_key: str) -> None:
    key = (provider, credential.pk)
    known = _versions.get(key)
    if known is not None and known[1] == cache_key:
        return
    stamp = credential.updated_at.timestamp()
    if known is not None and known[0] > stamp:
        return
    _versions[key] = (stamp, cache_key)
    if known is None:
        return
    if provider == Provider.APPLE:
        apns.get_client().invalidate(known[1])
    else:
        _fcm().invalidate(known[1])
    with _warm_lock:
        _warmed.difference_update({w for w in _warmed if w[0] == known[1]})
    log.info("credential %r changed: %s of its previous version dropped", credential.name,
             "the APNs connections" if provider == Provider.APPLE else "the FCM access token")


def _apns_credential(credential: Credential) -> apns.ApnsCredential:
    cache_key = _cache_key(credential)
    _version_current(Provider.APPLE, credential, cache_key)
    return _apns_credential_built(
        cache_key, credential.kind, credential_secret(credential), credential.key_id, credential.team_id
    )


def _fcm_credential(credential: Credential, app: PushApp) -> fcm.FcmCredential:
    cache_key = _cache_key(credential)
    _version_current(Provider.FIREBASE, credential, cache_key)
    return _fcm_credential_built(cache_key, credential_secret(credential), app.project_id or credential.project_id)


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
        retry_after_s=result.retry_after_s,
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


# --- warm-up -----------------------------------------------------------------------------------------

# What this process has warmed: (cache key, host, port) of APNs connections, (cache key, "", 0) of
# FCM access tokens. A credential's new version has a new cache key, so it is warmed again.
_warmed: set[tuple[str, str, int]] = set()
_warm_lock = threading.Lock()
WARM_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class WarmUp:
    """What `provider_connections_warm` did."""

    apns_connections: int  # APNs connections opened (TLS + HTTP/2, the JWT signed for token auth)
    fcm_tokens: int  # FCM access tokens fetched
    failed: tuple[str, ...]  # one line each, logged


def provider_connections_warm(*, timeout: float = WARM_TIMEOUT_S) -> WarmUp:
    """Pay now what the first push of each enabled app would pay: its APNs connection (TCP, TLS,
    HTTP/2, and for token auth the signed JWT) per credential, host and port, or its FCM OAuth2
    access token per credential. 56-98 ms from INVITE to the provider for a first push, 5-8 ms
    after. Only what this process has not warmed yet (a credential's new version counts as new),
    so it can be called again to pick up apps and credentials changed since. Blocks up to
    `timeout`; each failure is logged in one line and left to the first push to retry."""
    from push.selectors import push_apps_sendable

    started = time.monotonic()
    apns_jobs: dict[tuple[str, str, int], tuple[list[str], Any]] = {}
    fcm_jobs: dict[tuple[str, str, int], tuple[list[str], fcm.FcmCredential]] = {}
    failed: list[str] = []
    for app in push_apps_sendable():
        credential = app.credential
        assert credential is not None
        try:
            if app.provider == Provider.APPLE:
                apns_credential = _apns_credential(credential)
                key = (apns_credential.cache_key, app.host, app.port)
                if key not in apns_jobs and key not in _warmed:
                    apns_jobs[key] = ([], apns.get_client().warm(apns_credential, host=app.host, port=app.port))
                if key in apns_jobs:
                    apns_jobs[key][0].append(app.app_id)
            else:
                fcm_credential = _fcm_credential(credential, app)
                key = (fcm_credential.cache_key, "", 0)
                if key not in fcm_jobs and key not in _warmed:
                    fcm_jobs[key] = ([], fcm_credential)
                if key in fcm_jobs:
                    fcm_jobs[key][0].append(app.app_id)
        except Exception as exc:  # noqa: BLE001 - a credential that cannot be built: one line, go on
            failed.append(f"{app.provider} app {app.app_id}: {type(exc).__name__}: {exc}")
    deadline = started + timeout
    done: dict[tuple[str, str, int], str | None] = {}
    if fcm_jobs:
        sender = _fcm()
        with ThreadPoolExecutor(max_workers=min(8, len(fcm_jobs)), thread_name_prefix="fcm-warm") as pool:
            futures = {key: pool.submit(sender.warm, cred, timeout=timeout) for key, (_, cred) in fcm_jobs.items()}
            for key, future in futures.items():
                done[key] = _warm_outcome(future, deadline)
    for key, (_, future) in apns_jobs.items():
        done[key] = _warm_outcome(future, deadline)
    for key, problem in done.items():
        app_ids, provider = (apns_jobs[key][0], "APNs") if key in apns_jobs else (fcm_jobs[key][0], "FCM")
        where = f" at {key[1]}:{key[2]}" if key in apns_jobs else ""
        if problem is None:
            with _warm_lock:
                _warmed.add(key)
        else:
            failed.append(f"{provider}{where} for {', '.join(app_ids)[:200]}: {problem}")
    for line in failed:
        log.warning("warm-up failed (the first push will try again): %s", line)
    warm = WarmUp(
        apns_connections=sum(1 for key in apns_jobs if done.get(key) is None),
        fcm_tokens=sum(1 for key in fcm_jobs if done.get(key) is None),
        failed=tuple(failed),
    )
    if warm.apns_connections or warm.fcm_tokens:
        log.info("warm-up: %d APNs connection(s) open, %d FCM access token(s) fetched in %.0f ms",
                 warm.apns_connections, warm.fcm_tokens, (time.monotonic() - started) * 1000)
    return warm


def _warm_outcome(future: Any, deadline: float) -> str | None:
    """None when the warm-up in `future` succeeded, else why not."""
    try:
        future.result(timeout=max(0.0, deadline - time.monotonic()))
    except (apns.WarmError, fcm.FcmWarmError) as exc:
        return str(exc)
    except concurrent.futures.TimeoutError:
        future.cancel()
        return "not done within the warm-up's time"
    except Exception as exc:  # noqa: BLE001 - whatever it was, one line
        return f"{type(exc).__name__}: {exc}"
    return None
