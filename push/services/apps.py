"""Push apps (Token-App + provider -> credential and settings): create, add with a secret, update, delete."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from core.errors import PusherError
from push.models import (
    Credential,
    CredentialKind,
    Provider,
    PushApp,
    host_port_split,
    host_problem,
)
from push.providers import apns
from push.services.appcache import _push_apps_changed
from push.services.credentials import (
    credential_get_or_save,
    credential_name_for,
    credential_parse,
    credential_provider_check,
)

log = logging.getLogger(__name__)

APNS_PRODUCTION_HOST = apns.PRODUCTION_HOST


APNS_SANDBOX_HOST = apns.SANDBOX_HOST


PUSH_APP_SETTINGS = frozenset({
    "enabled", "description", "host", "port", "topic", "push_type", "priority", "expiration", "collapse_id",
    "extra_headers", "project_id", "android_priority", "ttl_s",
})


PUSH_APP_EDITABLE = PUSH_APP_SETTINGS | {"app_id", "provider", "credential", "flagged_reason"}


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
    return " ".join(exc.messages)


@dataclass(frozen=True)
class PushAppAdded:
    """What `push_app_add` did: the app, its credential (new or shared, or the one it kept) and what
    to tell the operator."""

    app: PushApp
    credential: Credential
    # What was done with the secret given: created, reused, updated, or "kept" when the app kept the
    # credential it had (it could send, the one given could not).
    credential_outcome: str
    warnings: tuple[str, ...]

    @property
    def credential_created(self) -> bool:
        return self.credential_outcome == "created"

    @property
    def credential_kept(self) -> bool:
        return self.credential_outcome == "kept"


def push_app_address(*, host: str, port: int | None = None) -> tuple[str, int | None]:
    """The APNs address an operator meant: `host` is a host name or an IP address, or one of them with
    its port (`relay.example.com:8443`, `127.0.0.1:18543`, `[::1]:8443`), which is split off; a port
    both written in the host and given as `port` must agree. Returns (host, port), port None when
    none was given. Raises PusherError (code host_invalid) with what to type instead.

    Every face's host goes through here (push_app_upsert, push_app_update, the admin's form, the
    Kazoo config import): a `host:port` stored as a host made every push to the app fail."""
    text = (host or "").strip()
    name, written = host_port_split(text)
    if written is not None:
        if not 0 < written < 65536:
            raise PusherError(f"host {text!r}: port {written} is not a port number (1-65535)", code="host_invalid")
        if port is not None and port != written:
            raise PusherError(f"host {text!r} names port {written} but the port given is {port}; give one",
                              code="host_invalid")
        port = written
    problem = host_problem(name)
    if problem:
        raise PusherError(f"host: {problem}", code="host_invalid")
    return name, port


def _address_normalise(changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` with a `host:port` split into host and port (see push_app_address)."""
    if "host" not in changes or not isinstance(changes["host"], str):
        return changes
    host, port = push_app_address(host=changes["host"], port=changes.get("port"))
    changes = {**changes, "host": host}
    if port is not None:
        changes["port"] = port
    return changes


def push_app_warnings(*, app: PushApp) -> tuple[str, ...]:
    """What the operator must hear about an app as it stands: its credential cannot send, or its
    certificate does not cover the topic it pushes to (APNs would answer TopicDisallowed to every
    push). Every face shows these after a write: the admin as warning messages, the API as the
    app's `warnings`, the commands and the Kazoo config import as warning lines."""
    credential = app.credential
    if credential is None:
        return ()
    warnings = []
    reason = credential.cannot_send_reason()
    if reason:
        warnings.append(f"credential {credential.name!r} cannot send: {reason}")
    if app.provider == Provider.APPLE and credential.kind == CredentialKind.APNS_CERTIFICATE and credential.topics:
        wire_topic = app.apns_wire()[1]
        if wire_topic not in credential.topics:
            warnings.append(
                f"the certificate covers {', '.join(credential.topics)} but the app pushes to topic {wire_topic!r} "
                "(APNs will answer TopicDisallowed); set the app's topic or use the app's own certificate"
            )
    return tuple(warnings)


@transaction.atomic
def push_app_upsert(
    *, app_id: str, provider: str, credential: Credential | None = None, **app_settings: Any
) -> PushApp:
    """Create the app (Token-App, provider) or update it in place. Only the settings given change
    (names: PUSH_APP_SETTINGS); `credential=None` keeps the current one. An unchanged app is not
    written. Raises PusherError for an unknown provider or setting or an invalid value, and
    CredentialError for a credential of the other provider."""
    app_id = (app_id or "").strip()
    if not app_id:
        raise PusherError("an app id (the Token-App value) is required")
    if provider not in Provider.values:
        raise PusherError(f"unknown provider {provider!r} (expected one of {', '.join(Provider.values)})")
    unknown = sorted(set(app_settings) - PUSH_APP_SETTINGS)
    if unknown:
        raise PusherError(f"unknown push app setting(s): {', '.join(unknown)}")
    credential_provider_check(credential=credential, provider=provider)
    app_settings = _address_normalise(app_settings)

    app = PushApp.objects.select_for_update().filter(app_id=app_id, provider=provider).first()
    changed = app is None
    if app is None:
        app = PushApp(app_id=app_id, provider=provider)
    for name, value in app_settings.items():
        if getattr(app, name) != value:
            setattr(app, name, value)
            changed = True
    if credential is not None and app.credential_id != credential.pk:
        app.credential = credential
        changed = True
    if not changed:
        return app
    try:
        app.full_clean()
    except ValidationError as exc:
        raise PusherError(f"push app {app_id} ({provider}): {_validation_message(exc)}") from None
    app.save()
    log.info("push app %s saved (credential %s)", app, app.credential.name if app.credential else "none")
    _push_apps_changed()
    return app


def push_app_add(
    *,
    app_id: str,
    provider: str,
    kind: str,
    data: bytes | str,
    password: str | None = None,
    key_id: str = "",
    team_id: str = "",
    **app_settings: Any,
) -> PushAppAdded:
    """Kazoo's add_apple_app / add_firebase_app, and more: parse and validate the secret, store it
    (or reuse the stored copy of the same key), create or update the app on it. Raises
    CredentialError for a secret that does not parse, before anything is written.

    A credential that can send is never replaced by one that cannot (a legacy FCM key, an expired
    certificate): the app keeps the one it has, the new secret is not stored, and a warning says so.
    Re-importing an old Kazoo config, or re-running Kazoo's add_firebase_app with its legacy key,
    must not break an app that works."""
    parsed = credential_parse(kind=kind, data=data, password=password, key_id=key_id, team_id=team_id)
    with transaction.atomic():
        current = (
            PushApp.objects.select_for_update(of=("self",)).select_related("credential")
            .filter(app_id=(app_id or "").strip(), provider=provider).first()
        )
        kept = current.credential if current is not None else None
        if kept is not None and not kept.cannot_send_reason() and not parsed.facts.usable:
            app = push_app_upsert(app_id=app_id, provider=provider, **app_settings)
            given = CredentialKind(parsed.facts.kind).label
            kept_note = (
                f"kept credential {kept.name!r}, which can send: the {given} given cannot "
                f"({parsed.facts.unusable_reason}) and was not stored"
            )
            return PushAppAdded(app=app, credential=kept, credential_outcome="kept",
                                warnings=(kept_note, *push_app_warnings(app=app)))
        credential, stored = credential_get_or_save(name=credential_name_for(app_id=app_id, parsed=parsed),
                                                    parsed=parsed)
        app = push_app_upsert(app_id=app_id, provider=provider, credential=credential, **app_settings)
    warnings = [stored.note] if stored.note else []
    warnings.extend(push_app_warnings(app=app))
    warnings.extend(warning for warning in credential.warnings if warning not in warnings)
    return PushAppAdded(app=app, credential=credential, credential_outcome=stored.outcome, warnings=tuple(warnings))


@transaction.atomic
def push_app_update(*, app: PushApp, **changes: Any) -> PushApp:
    """Change an app in place: its settings, its identity (app_id, provider), its credential (None =
    none) or its health flag. Clearing `flagged_reason` also restarts the BadDeviceToken count, so
    the flag can trip again. Raises PusherError for an unknown field or an invalid value (an app
    id/provider pair already taken included), CredentialError for a credential of the other provider."""
    unknown = sorted(set(changes) - PUSH_APP_EDITABLE)
    if unknown:
        raise PusherError(f"unknown push app field(s): {', '.join(unknown)}")
    changes = _address_normalise(changes)
    app = PushApp.objects.select_for_update(of=("self",)).select_related("credential").get(pk=app.pk)
    for name, value in changes.items():
        setattr(app, name, value)
    if "flagged_reason" in changes and not app.flagged_reason:
        app.bad_device_token_count = 0
    try:
        app.full_clean()
    except ValidationError as exc:
        raise PusherError(f"push app {app.app_id} ({app.provider}): {_validation_message(exc)}") from None
    credential_provider_check(credential=app.credential, provider=app.provider)
    app.save()
    log.info("push app %s updated (%s)", app, ", ".join(sorted(changes)))
    _push_apps_changed()
    return app


@transaction.atomic
def push_app_delete(*, app: PushApp) -> None:
    """Delete an app; its deliveries stay in the log (without the link)."""
    label = str(app)
    app.delete()
    log.info("push app %s deleted", label)
    _push_apps_changed()


def _app_bad_device_token(app: PushApp) -> None:
    """BadDeviceToken usually means a sandbox token sent to production (or the reverse): the
    token is fine, the app's host is wrong. Flag the app when it repeats; never kill the token."""
    PushApp.objects.filter(pk=app.pk).update(bad_device_token_count=F("bad_device_token_count") + 1)
    app.refresh_from_db(fields=["bad_device_token_count"])
    if app.bad_device_token_count >= settings.PUSHER_BAD_DEVICE_TOKEN_FLAG_AFTER and not app.flagged_reason:
        reason = (f"{app.bad_device_token_count} BadDeviceToken answers: sandbox/production mix-up? "
                  f"check the host ({app.host}) against the app's build")
        PushApp.objects.filter(pk=app.pk).update(flagged_reason=reason)
        log.warning("push app %s flagged: %s", app, reason)
