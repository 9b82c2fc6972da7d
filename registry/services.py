"""Registration services: reg_success -> device push object and tokens, and the sync to Kazoo."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from pusher_site import metrics
from pusher_site.errors import BadMessage, ContactParseError, RuleError
from pusher_site.events import event_publish
from registry import selectors
from registry.kazoo import CrossbarClient, KazooSyncError
from registry.models import Device, PushToken, SyncStatus, UserAgentRule
from registry.pushobject import PushBuild, TokenInfo, push_object_build, push_object_equal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationResult:
    outcome: str  # "ignored", "unchanged", "refreshed", "created", "updated"
    reason: str
    build: PushBuild
    device: Device | None = None


def registration_match(*, fields: Mapping[str, Any]) -> PushBuild:
    """Match a reg_success (or a pasted User-Agent + Contact) against the enabled rules. Pure apart
    from reading the rules; raises ContactParseError on a Contact that doesn't parse."""
    try:
        return push_object_build(
            rules=selectors.user_agent_rules_enabled(), fields=fields, regex_timeout=settings.PUSHER_REGEX_TIMEOUT_S
        )
    except ContactParseError as exc:
        raise ContactParseError(f"Contact does not parse: {exc.message}") from exc


def _sizes_check(build: PushBuild) -> None:
    """Values that cannot be stored are a bad message, refused before any write."""
    if len(build.account_id or "") > 64 or len(build.device_id or "") > 64:
        raise BadMessage("Account-ID or Authorizing-ID is longer than 64 characters")
    proxy = (build.push or {}).get("Token-Proxy", "")
    if len(proxy) > 500:
        raise BadMessage("Token-Proxy (Proxy-Path) is longer than 500 characters")
    for info in build.tokens:
        if len(info.token) > 1024 or len(info.type) > 32 or len(info.app) > 255:
            raise BadMessage("a push token, its type or its app id is longer than can be stored (1024/32/255)")


def _digest(build: PushBuild, fields: Mapping[str, Any]) -> str:
    material = {
        "push": build.push,
        "tokens": sorted((t.token, t.type, t.app, t.kind, t.sandbox) for t in build.tokens),
        "ua": fields.get("User-Agent"),
        "username": fields.get("Username"),
        "realm": fields.get("Realm"),
        "rule": build.rule,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def registration_apply(*, fields: Mapping[str, Any]) -> RegistrationResult:
    """Apply one reg_success. Idempotent: a redelivered or repeated registration changes nothing
    (apart from a last-seen time refreshed at most once per PUSHER_LAST_SEEN_INTERVAL_S)."""
    build = registration_match(fields=fields)
    if settings.PUSHER_LEGACY_PUSH_RESP and build.tokens:
        from push.services import push_resp_send

        push_resp_send(tokens=[t.token for t in build.tokens])
    if build.push is None or not build.account_id or not build.device_id:
        metrics.REGISTRATIONS.labels(outcome="ignored").inc()
        return RegistrationResult(outcome="ignored", reason=build.reason, build=build)
    _sizes_check(build)

    now = timezone.now()
    digest = _digest(build, fields)
    interval = timedelta(seconds=settings.PUSHER_LAST_SEEN_INTERVAL_S)
    stored = selectors.device_digest_get(account_id=build.account_id, device_id=build.device_id)
    if stored is not None and stored[0] == digest and stored[1] is not None and now - stored[1] < interval:
        metrics.REGISTRATIONS.labels(outcome="unchanged").inc()
        return RegistrationResult(outcome="unchanged", reason="same push object and tokens", build=build)

    device = selectors.device_get(account_id=build.account_id, device_id=build.device_id) if stored else None
    result = _registration_write(build=build, fields=fields, digest=digest, now=now, device=device)
    metrics.REGISTRATIONS.labels(outcome=result.outcome).inc()
    return result


@transaction.atomic
def _registration_write(
    *, build: PushBuild, fields: Mapping[str, Any], digest: str, now: Any, device: Device | None
) -> RegistrationResult:
    """Write a registration with as few statements as the change needs. Messages of one device
    are handled in order by one consumer lane; across processes the last writer wins, as in Kazoo."""
    token_ids = [t.token for t in build.tokens]
    if device is not None and device.registration_digest == digest:
        Device.objects.filter(pk=device.pk).update(last_seen_at=now)
        PushToken.objects.filter(device=device, token__in=token_ids).update(last_seen_at=now)
        return RegistrationResult(outcome="refreshed", reason="last-seen refreshed", build=build, device=device)

    values = {
        "username": str(fields.get("Username") or (device.username if device else ""))[:255],
        "realm": str(fields.get("Realm") or (device.realm if device else ""))[:255],
        "rule_name": build.rule or "",
        "last_user_agent": str(fields.get("User-Agent") or "")[:500],
        "last_contact": str(fields.get("Contact") or ""),
        "last_registration_at": now,
        "last_seen_at": now,
        "registration_digest": digest,
    }
    push_changed = device is None or not push_object_equal(device.push, build.push)
    if push_changed:
        values.update(push=build.push, push_changed_at=now, **_sync_fields(now))
    created = False
    if device is None:
        try:
            with transaction.atomic():
                device = Device.objects.create(account_id=build.account_id, device_id=build.device_id, **values)
            created = True
        except IntegrityError:  # another consumer created it a moment ago
            device = Device.objects.get(account_id=build.account_id, device_id=build.device_id)
            push_changed = not push_object_equal(device.push, build.push)
            if not push_changed:
                for key in ("push", "push_changed_at", *_sync_fields(now)):
                    values.pop(key, None)
    if not created:
        Device.objects.filter(pk=device.pk).update(**values)
        for key, value in values.items():
            setattr(device, key, value)
    _tokens_upsert(device=device, tokens=build.tokens, proxy=(build.push or {}).get("Token-Proxy", ""), now=now,
                   retire=not created)

    outcome = "created" if created else "updated"
    if push_changed:
        event_publish(
            "registration.updated",
            account=device.account_id,
            device=device.device_id,
            app=build.push.get("Token-App") if build.push else None,
            token=_mask(build.push.get("Token-ID", "") if build.push else ""),
            rule=build.rule,
            outcome=outcome,
        )
        if device.sync_status == SyncStatus.PENDING:
            transaction.on_commit(sync_wake)
    return RegistrationResult(
        outcome=outcome,
        reason="push object changed" if push_changed else "tokens or device details changed",
        build=build,
        device=device,
    )


def _mask(token: str) -> str:
    from push.models import mask_token

    return mask_token(token)


def _tokens_upsert(
    *, device: Device, tokens: tuple[TokenInfo, ...], proxy: str, now: Any, retire: bool = True
) -> None:
    """One INSERT .. ON CONFLICT for the tokens seen, one UPDATE retiring the replaced ones."""
    PushToken.objects.bulk_create(
        [
            PushToken(
                device=device, token=info.token, token_type=info.type, app=info.app, kind=info.kind,
                sandbox=info.sandbox, proxy=proxy, active=True, deactivated_at=None, deactivated_reason="",
                last_seen_at=now,
            )
            for info in tokens
        ],
        update_conflicts=True,
        unique_fields=["device", "token"],
        update_fields=["token_type", "app", "kind", "sandbox", "proxy", "active", "deactivated_at",
                       "deactivated_reason", "last_seen_at"],
    )
    if retire:
        # A new token of the same kind replaces the old one (reinstall, token rotation by the OS).
        PushToken.objects.filter(device=device, active=True, kind__in={t.kind for t in tokens}).exclude(
            token__in=[t.token for t in tokens]
        ).update(active=False, deactivated_at=now, deactivated_reason="replaced by a newer registration")


# --- Kazoo sync ---------------------------------------------------------------------

_client_lock = threading.Lock()
_client: CrossbarClient | None = None
_sync_event = threading.Event()


def kazoo_configured() -> bool:
    return bool(settings.KAZOO_CROSSBAR_URL and settings.KAZOO_API_KEY)


def kazoo_client() -> CrossbarClient | None:
    global _client
    if not kazoo_configured():
        return None
    with _client_lock:
        if _client is None or _client.base_url != settings.KAZOO_CROSSBAR_URL.rstrip("/"):
            _client = CrossbarClient(
                settings.KAZOO_CROSSBAR_URL, settings.KAZOO_API_KEY, ca_file=settings.KAZOO_CA_FILE
            )
        return _client


def _sync_fields(now: Any) -> dict[str, Any]:
    """What a changed push object does to the device's sync state."""
    if kazoo_configured():
        return {"sync_status": SyncStatus.PENDING, "sync_next_at": now, "sync_attempts": 0, "sync_error": ""}
    return {"sync_status": SyncStatus.LOCAL}


def _sync_mark_pending(device: Device, now: Any) -> None:
    for key, value in _sync_fields(now).items():
        setattr(device, key, value)


def sync_wake() -> None:
    """Tell the sync loop (if this process runs one) that a device waits."""
    _sync_event.set()


def sync_wait(timeout: float) -> None:
    _sync_event.wait(timeout)
    _sync_event.clear()


def device_sync(*, device: Device) -> Device:
    """Push the device's push object to Kazoo's device document now (outside any transaction:
    a network call must not hold database locks)."""
    client = kazoo_client()
    if client is None:
        Device.objects.filter(pk=device.pk).update(sync_status=SyncStatus.LOCAL)
        device.sync_status = SyncStatus.LOCAL
        return device
    changed_at = device.push_changed_at
    now = timezone.now()
    try:
        client.device_push_set(device.account_id, device.device_id, device.push or {})
    except KazooSyncError as exc:
        attempts = device.sync_attempts + 1
        delay = min(600.0, 2.0 ** min(attempts, 10)) * random.uniform(0.8, 1.2)
        Device.objects.filter(pk=device.pk).update(
            sync_status=SyncStatus.FAILED,
            sync_attempts=attempts,
            sync_error=exc.message[:500],
            sync_next_at=now + timedelta(seconds=delay),
        )
        device.refresh_from_db()
        metrics.KAZOO_SYNC_FAILURES.inc()
        log.warning("kazoo sync failed for device %s/%s (attempt %d, next in %.0fs): %s",
                    device.account_id, device.device_id, attempts, delay, exc.message)
        event_publish("kazoo.sync_failed", account=device.account_id, device=device.device_id,
                      outcome=exc.message[:200])
        return device
    # Mark synced only if the push object did not change while we were talking to Kazoo.
    Device.objects.filter(pk=device.pk, push_changed_at=changed_at).update(
        sync_status=SyncStatus.SYNCED, push_synced_at=now, sync_attempts=0, sync_error="", sync_next_at=None
    )
    device.refresh_from_db()
    log.info("kazoo sync ok for device %s/%s", device.account_id, device.device_id)
    return device


def sync_loop(stop: threading.Event) -> None:
    """Retry pushing changed push objects to Kazoo with backoff, off the message path (the
    consumer runs this in a thread; state lives in the database, so a restart resumes it)."""
    from django.db import close_old_connections, connection

    while not stop.is_set():
        sync_wait(1.0)
        if not kazoo_configured():
            continue
        try:
            close_old_connections()
            device_sync_due(limit=50)
        except Exception:
            log.warning("kazoo sync loop error", exc_info=True)
    connection.close()


def device_sync_due(*, limit: int = 50) -> int:
    """Sync the devices whose turn has come; returns how many were tried."""
    if not kazoo_configured():
        return 0
    due = list(
        Device.objects.filter(
            sync_status__in=[SyncStatus.PENDING, SyncStatus.FAILED], sync_next_at__lte=timezone.now()
        ).order_by("sync_next_at")[:limit]
    )
    for device in due:
        device_sync(device=device)
    return len(due)


@transaction.atomic
def device_push_clear(*, device: Device, reason: str) -> Device:
    """Clear the push object (dead token) so Kazoo stops building push endpoints for the device;
    the next REGISTER with a token brings it back."""
    device = Device.objects.select_for_update().get(pk=device.pk)
    if device.push is None:
        return device
    now = timezone.now()
    device.push = None
    device.push_changed_at = now
    device.registration_digest = ""
    _sync_mark_pending(device, now)
    device.save()
    log.info("push object cleared for device %s/%s: %s", device.account_id, device.device_id, reason)
    if device.sync_status == SyncStatus.PENDING:
        transaction.on_commit(sync_wake)
    return device


# --- REST API operations (registry/api.py calls these; so can the admin and commands) ------------

USER_AGENT_RULE_FIELDS = frozenset({"name", "position", "enabled", "regex", "properties", "description"})


def _rule_check(rule: UserAgentRule) -> None:
    """A rule is saved only if the consumer can use it. The model's validators (the matcher's own
    regex compilation, properties as strings) run in full_clean; their errors become a RuleError."""
    from django.core.exceptions import ValidationError

    try:
        rule.full_clean()
    except ValidationError as exc:
        problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
        raise RuleError(f"User-Agent rule {rule.name!r}: {problems}") from None


def _rules_changed() -> None:
    # This process sees the change at once, the consumer within selectors.RULES_TTL_S.
    selectors.rules_cache_clear()
    transaction.on_commit(selectors.rules_cache_clear)


@transaction.atomic
def user_agent_rule_create(
    *,
    name: str,
    regex: str,
    properties: Mapping[str, str],
    position: int = 100,
    enabled: bool = True,
    description: str = "",
) -> UserAgentRule:
    """Add a User-Agent rule. Raises RuleError for a regex that does not compile (Kazoo crashed on
    every registration instead), bad properties, or a name already taken."""
    rule = UserAgentRule(
        name=name, regex=regex, properties=dict(properties), position=position, enabled=enabled,
        description=description,
    )
    _rule_check(rule)
    rule.save()
    _rules_changed()
    log.info("User-Agent rule %r created (position %d)", rule.name, rule.position)
    return rule


@transaction.atomic
def user_agent_rule_update(*, rule: UserAgentRule, **changes: Any) -> UserAgentRule:
    """Change a rule's fields (names: USER_AGENT_RULE_FIELDS). Raises RuleError as create does."""
    unknown = sorted(set(changes) - USER_AGENT_RULE_FIELDS)
    if unknown:
        raise RuleError(f"unknown User-Agent rule field(s): {', '.join(unknown)}")
    rule = UserAgentRule.objects.select_for_update().get(pk=rule.pk)
    for name, value in changes.items():
        setattr(rule, name, dict(value) if name == "properties" and isinstance(value, Mapping) else value)
    _rule_check(rule)
    rule.save()
    _rules_changed()
    log.info("User-Agent rule %r updated (%s)", rule.name, ", ".join(sorted(changes)))
    return rule


@transaction.atomic
def user_agent_rule_delete(*, rule: UserAgentRule) -> None:
    name = rule.name
    rule.delete()
    _rules_changed()
    log.info("User-Agent rule %r deleted", name)


_SIP_SCHEME = re.compile(r"^sips?:", re.IGNORECASE)


def aor_split(aor: str) -> tuple[str, str]:
    """`sip:user@realm` (Kamailio's X-KAZOO-AOR), `user@realm` or `<sip:user@realm;params>` ->
    (user, realm). Raises BadMessage (code aor_invalid) for anything else."""
    text = (aor or "").strip()
    if text.startswith("<") and ">" in text:
        text = text[1:text.index(">")]
    text = _SIP_SCHEME.sub("", text.split(";", 1)[0].strip(), count=1)
    user, at, realm = text.rpartition("@")
    if not at or not user or not realm:
        raise BadMessage(f"{aor!r} is not an AOR (sip:user@realm)", code="aor_invalid")
    return unquote(user), realm


def device_list_for_aor(*, aor: str) -> list[Device]:
    """The devices registered as this AOR (SIP username + realm; the realm case-insensitive, as DNS
    names are), with their tokens."""
    user, realm = aor_split(aor)
    return list(Device.objects.filter(username=user, realm__iexact=realm).prefetch_related("tokens"))
