"""Registration services: reg_success -> device push object and tokens, and the sync to Kazoo."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import metrics
from core.errors import ContactParseError, InvalidInput, PusherError
from core.events import event_publish
from core.text import mask_token
from hooks.models import WebhookEventType
from hooks.services import WebhookEvent, webhook_event_record
from registry import selectors
from registry.ids import kazoo_id_check
from registry.models import Device, PushToken, SyncStatus
from registry.pushobject import (
    REASON_NO_RULE,
    REASON_NO_TOKEN,
    REASON_NO_TOKEN_PROPERTY,
    PushBuild,
    Rule,
    is_unregister,
    push_object_build,
    push_object_equal,
)

# The rules' writes live in registry.rules; the faces and the config import call them by this module too.
from registry.rules import (  # noqa: F401
    USER_AGENT_RULE_FIELDS,
    user_agent_rule_create,
    user_agent_rule_delete,
    user_agent_rule_update,
)
from registry.syncstate import sync_fields, sync_mark_pending, sync_wake
from registry.tokenwrites import tokens_retire, tokens_seen

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationResult:
    outcome: str  # "ignored", "unchanged", "refreshed", "created", "updated", "learned"
    reason: str
    build: PushBuild
    device: Device | None = None


def registration_match(*, fields: Mapping[str, Any], rules: Sequence[Rule] | None = None) -> PushBuild:
    """Match a reg_success (or a pasted User-Agent + Contact) against `rules` (default: the enabled
    rules, cached). Pure apart from reading the rules; raises ContactParseError on a Contact that
    doesn't parse."""
    if rules is None:
        rules = selectors.user_agent_rules_enabled()
    try:
        return push_object_build(rules=rules, fields=fields, regex_timeout=settings.PUSHER_REGEX_TIMEOUT_S)
    except ContactParseError as exc:
        raise ContactParseError(f"Contact does not parse: {exc.message}") from exc


def _sizes_check(build: PushBuild) -> None:
    """Values that cannot be stored are a bad message, refused before any write."""
    if len(build.account_id or "") > 64 or len(build.device_id or "") > 64:
        raise InvalidInput("Account-ID or Authorizing-ID is longer than 64 characters")
    kazoo_id_check(build.account_id, name="Account-ID")
    kazoo_id_check(build.device_id, name="Authorizing-ID")
    proxy = (build.push or {}).get("Token-Proxy", "")
    if len(proxy) > 500:
        raise InvalidInput("Token-Proxy (Proxy-Path) is longer than 500 characters")
    for info in build.tokens:
        if len(info.token) > 1024 or len(info.type) > 32 or len(info.app) > 255:
            raise InvalidInput("a push token, its type or its app id is longer than can be stored (1024/32/255)")


def _digest(build: PushBuild, fields: Mapping[str, Any], *, learned: str = "") -> str:
    material = {
        "push": build.push,
        "tokens": sorted((t.token, t.type, t.app, t.kind, t.sandbox) for t in build.tokens),
        "ua": fields.get("User-Agent"),
        "username": fields.get("Username"),
        "realm": fields.get("Realm"),
        "rule": build.rule,
    }
    if learned:
        # Only a learned identity has its proxy in the digest (a push object holds it already).
        material["learned"] = [learned, fields.get("Proxy-Path")]
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def registration_apply(*, fields: Mapping[str, Any], build: PushBuild | None = None) -> RegistrationResult:
    """Apply one reg_success (a batch of one). Idempotent: a redelivered or repeated registration
    changes nothing (apart from a last-seen time refreshed at most once per
    PUSHER_LAST_SEEN_INTERVAL_S). Raises InvalidInput for a body that cannot be handled.

    `build`: the push object and tokens the caller read itself (a token report: registry.reporting)
    instead of matching `fields` against the rules; from there on it is stored as a reg_success's."""
    result = registration_apply_batch(fields=[fields], builds=None if build is None else [build])[0]
    if isinstance(result, InvalidInput):
        raise result
    return result


@dataclass(frozen=True, slots=True)
class _Registration:
    """A reg_success that carries a push object, ready to compare with the stored device; or one
    whose identity is learned (`learned`: the token reporter whose User-Agent regex it matched)."""

    index: int
    fields: Mapping[str, Any]
    build: PushBuild
    digest: str
    learned: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.build.account_id or "", self.build.device_id or "")


def registration_apply_batch(
    *, fields: Sequence[Mapping[str, Any]], builds: Sequence[PushBuild] | None = None
) -> list[RegistrationResult | InvalidInput]:
    """Apply reg_success bodies with the effect of applying them one by one, in order. `builds`
    (one per body) are given instead of matching the bodies against the rules (registration_apply).

    Returns one entry per body: its RegistrationResult, or the InvalidInput that refused it (the
    others go on). One query reads the stored digest of every device; an unchanged registration
    costs nothing more; the changed ones are written with bulk upserts in one transaction. Two
    bodies for one device are applied in turn (round k holds each device's k-th body), so the
    later one sees the earlier one's write. Database errors propagate and nothing of the batch is
    written: the caller retries, or applies the bodies one at a time to isolate the one that fails."""
    results: list[RegistrationResult | InvalidInput | None] = [None] * len(fields)
    rounds: list[list[_Registration]] = []
    seen: dict[tuple[str, str], int] = {}
    rules = selectors.user_agent_rules_enabled()  # one rule set for the whole batch
    for index, body in enumerate(fields):
        try:
            given = builds[index] if builds is not None else None
            registration = _registration_prepare(index=index, fields=body, rules=rules, build=given)
        except InvalidInput as exc:
            results[index] = exc
            continue
        if isinstance(registration, RegistrationResult):
            results[index] = registration
            continue
        turn = seen.get(registration.key, 0)
        seen[registration.key] = turn + 1
        if turn == len(rounds):
            rounds.append([])
        rounds[turn].append(registration)

    if rounds:
        now = timezone.now()
        unchanged, refresh, change = _registrations_compare(rounds[0], now=now)
        written: dict[int, RegistrationResult] = {}
        if refresh or change or len(rounds) > 1:
            # Only a batch that writes pays for a transaction; the unchanged ones were told apart
            # by the read above, in autocommit.
            with transaction.atomic():
                written.update(_registrations_write(refresh=refresh, change=change, now=now))
                for later in rounds[1:]:
                    more_unchanged, refresh, change = _registrations_compare(later, now=now)
                    unchanged += more_unchanged
                    written.update(_registrations_write(refresh=refresh, change=change, now=now))
        for registration in unchanged:
            results[registration.index] = RegistrationResult(
                outcome="unchanged", reason="same push object and tokens", build=registration.build
            )
        for index, result in written.items():
            results[index] = result

    outcomes = Counter(r.outcome for r in results if isinstance(r, RegistrationResult))
    counter = metrics.REGISTRATIONS if builds is None else metrics.TOKEN_REPORTS  # (reports are no reg_success)
    for outcome, count in outcomes.items():
        counter.labels(outcome=outcome).inc(count)
    return [r for r in results if r is not None]


# Registrations without a push object whose device a token reporter may still need to find: no rule
# matched, or the rule found no token (the Contact of an app that reports its token over HTTP).
_LEARNABLE = frozenset({REASON_NO_RULE, REASON_NO_TOKEN, REASON_NO_TOKEN_PROPERTY})


def _registration_prepare(
    *, index: int, fields: Mapping[str, Any], rules: Sequence[Rule], build: PushBuild | None = None
) -> _Registration | RegistrationResult:
    """Match and check one body (no write): an "ignored" result, or what to compare and store."""
    given = build is not None
    build = build if build is not None else registration_match(fields=fields, rules=rules)
    if build.push is None or not build.account_id or not build.device_id:
        reporter = _learning_reporter(build, fields) if not given else None
        if reporter is None:
            return RegistrationResult(outcome="ignored", reason=build.reason, build=build)
        _sizes_check(build)
        digest = _digest(build, fields, learned=reporter)
        return _Registration(index=index, fields=fields, build=build, digest=digest, learned=reporter)
    _sizes_check(build)
    return _Registration(index=index, fields=fields, build=build, digest=_digest(build, fields))


def _learning_reporter(build: PushBuild, fields: Mapping[str, Any]) -> str | None:
    """The token reporter that wants this registration's identity (its User-Agent regex matches),
    when it has one to learn: account and device ids, and no push object of its own."""
    if build.reason not in _LEARNABLE or not build.account_id or not build.device_id or is_unregister(fields):
        return None
    return selectors.token_reporter_for_user_agent(
        user_agent=fields.get("User-Agent"), timeout=settings.PUSHER_REGEX_TIMEOUT_S
    )


_Stored = tuple[_Registration, selectors.DeviceDigest | None]
_Refresh = tuple[_Registration, selectors.DeviceDigest]  # a refresh always has its stored row


@dataclass(frozen=True, slots=True)
class _Write:
    registration: _Registration
    upsert: Device  # the row as sent to the upsert (its pk comes back)
    device: Device  # what the caller gets: the stored row brought up to date, or `upsert` if new
    created: bool
    push_changed: bool


def _registrations_compare(
    registrations: list[_Registration], *, now: Any
) -> tuple[list[_Registration], list[_Refresh], list[_Stored]]:
    """(unchanged, last-seen to refresh, changed) for registrations of distinct devices, from one
    read of their stored digests."""
    stored = selectors.device_digests_get(keys=[r.key for r in registrations])
    interval = timedelta(seconds=settings.PUSHER_LAST_SEEN_INTERVAL_S)
    unchanged: list[_Registration] = []
    refresh: list[_Refresh] = []
    change: list[_Stored] = []
    for registration in registrations:
        row = stored.get(registration.key)
        if row is not None and row.digest == registration.digest:
            if row.last_seen_at is not None and now - row.last_seen_at < interval:
                unchanged.append(registration)
            else:
                refresh.append((registration, row))
        else:
            change.append((registration, row))
    return unchanged, refresh, change


# What every changed registration rewrites (a changed push object adds push, push_changed_at and
# the sync state); a learned identity leaves the push object, its rule and its tokens alone.
_IDENTITY_FIELDS = ("username", "realm", "last_user_agent", "last_contact", "last_proxy_path", "last_registration_at",
                    "last_seen_at", "registration_digest")
_DEVICE_FIELDS = (*_IDENTITY_FIELDS, "rule_name")
_TOKEN_FIELDS = ["token_type", "app", "kind", "sandbox", "proxy", "active", "deactivated_at", "deactivated_reason",
                 "last_seen_at"]


def _registrations_write(*, refresh: list[_Refresh], change: list[_Stored], now: Any) -> dict[int, RegistrationResult]:
    """Write registrations of distinct devices with a fixed number of statements whatever their
    count: the full rows of the changed devices, one upsert per kind of device change, one token
    upsert, one UPDATE retiring replaced tokens (and two UPDATEs for last-seen refreshes). Runs
    inside the batch's transaction. Across processes the last writer wins, as in Kazoo."""
    existing = selectors.devices_by_pk(pks=[row.pk for _, row in (*refresh, *change) if row is not None])
    results: dict[int, RegistrationResult] = {}

    if refresh:
        Device.objects.filter(pk__in=[row.pk for _, row in refresh]).update(last_seen_at=now)
        tokens_seen([(row.pk, t.token) for r, row in refresh for t in r.build.tokens], now=now)
        for registration, stored in refresh:
            device = existing.get(stored.pk)
            if device is not None:
                device.last_seen_at = now
            results[registration.index] = RegistrationResult(
                outcome="refreshed", reason="last-seen refreshed", build=registration.build, device=device
            )
    if not change:
        return results

    # Upsert rows: fresh objects (an INSERT .. ON CONFLICT (account_id, device_id) DO UPDATE of
    # the listed fields), so that one statement creates the new devices and updates the others,
    # and a device another consumer created a moment ago is simply updated.
    push_rows: list[Device] = []
    detail_rows: list[Device] = []
    writes: list[_Write] = []
    learned = [(registration, row) for registration, row in change if registration.learned]
    if learned:
        results.update(_identities_write(learned, existing=existing, now=now))
        change = [(registration, row) for registration, row in change if not registration.learned]
    for registration, row in change:
        build = registration.build
        device = existing.get(row.pk) if row is not None else None
        values = _device_values(registration=registration, device=device, now=now)
        push_changed = device is None or not push_object_equal(device.push, build.push)
        if push_changed:
            values.update(push_changed_at=now, **sync_fields(now))
        account_id, device_id = registration.key  # (both set: _registration_prepare ignores the others)
        upsert = Device(account_id=account_id, device_id=device_id, push=build.push, **values)
        (push_rows if push_changed else detail_rows).append(upsert)
        writes.append(_Write(registration, upsert, device or upsert, created=device is None, push_changed=push_changed))
    push_fields = ("push", "push_changed_at", *sync_fields(now))
    for rows, fields in ((push_rows, (*_DEVICE_FIELDS, *push_fields)), (detail_rows, _DEVICE_FIELDS)):
        if rows:
            Device.objects.bulk_create(
                rows, update_conflicts=True, unique_fields=["account_id", "device_id"], update_fields=list(fields)
            )

    tokens: dict[tuple[int, str], PushToken] = {}
    retire: set[tuple[int, str]] = set()
    for write in writes:
        build, pk = write.registration.build, write.upsert.pk
        proxy = (build.push or {}).get("Token-Proxy", "")
        for info in build.tokens:
            # One row per (device, token): an ON CONFLICT upsert may not touch a row twice (a
            # Linphone pn-prid can list one token for both VoIP and remote pushes).
            tokens.setdefault((pk, info.token), PushToken(
                device_id=pk, token=info.token, token_type=info.type, app=info.app, kind=info.kind,
                sandbox=info.sandbox, proxy=proxy, active=True, deactivated_at=None, deactivated_reason="",
                last_seen_at=now,
            ))
        # A new token of the same kind replaces the old one (reinstall, token rotation by the OS).
        retire.update((pk, t.kind) for t in build.tokens)
    if tokens:
        PushToken.objects.bulk_create(
            list(tokens.values()), update_conflicts=True, unique_fields=["device", "token"],
            update_fields=_TOKEN_FIELDS,
        )
    tokens_retire(sorted(retire), list(tokens), now=now)

    wake = False
    for write in writes:
        build, device = write.registration.build, write.device
        if device is not write.upsert:
            for name in (*_DEVICE_FIELDS, *(push_fields if write.push_changed else ())):
                setattr(device, name, getattr(write.upsert, name))
        outcome = "created" if write.created else "updated"
        if write.push_changed:
            event_publish(
                "registration.updated",
                account=device.account_id,
                device=device.device_id,
                app=build.push.get("Token-App") if build.push else None,
                token=build.push.get("Token-ID", "") if build.push else "",  # event_publish masks it
                rule=build.rule,
                outcome=outcome,
            )
            wake = wake or device.sync_status == SyncStatus.PENDING
        results[write.registration.index] = RegistrationResult(
            outcome=outcome,
            reason="push object changed" if write.push_changed else "tokens or device details changed",
            build=build,
            device=device,
        )
    if wake:
        transaction.on_commit(sync_wake)
    return results


def _device_values(*, registration: _Registration, device: Device | None, now: Any) -> dict[str, Any]:
    fields = registration.fields
    return {
        "username": str(fields.get("Username") or (device.username if device else ""))[:255],
        "realm": str(fields.get("Realm") or (device.realm if device else ""))[:255],
        "rule_name": registration.build.rule or "",
        "last_user_agent": str(fields.get("User-Agent") or "")[:500],
        "last_contact": str(fields.get("Contact") or ""),
        "last_proxy_path": str(fields.get("Proxy-Path") or "")[:500],
        "last_registration_at": now,
        "last_seen_at": now,
        "registration_digest": registration.digest,
    }


def _identities_write(
    learned: list[_Stored], *, existing: dict[int, Device], now: Any
) -> dict[int, RegistrationResult]:
    """Store who registered (account, device, SIP username and realm, proxy), without touching a
    push object or tokens: what a token report needs to find its device. One upsert."""
    rows = []
    for registration, row in learned:
        device = existing.get(row.pk) if row is not None else None
        values = {name: value for name, value in _device_values(registration=registration, device=device,
                                                                 now=now).items() if name in _IDENTITY_FIELDS}
        account_id, device_id = registration.key
        rows.append(Device(account_id=account_id, device_id=device_id, **values))
    Device.objects.bulk_create(rows, update_conflicts=True, unique_fields=["account_id", "device_id"],
                               update_fields=list(_IDENTITY_FIELDS))
    return {
        registration.index: RegistrationResult(
            outcome="learned", build=registration.build, device=upsert,
            reason=f"{registration.build.reason}; device kept for token reporter {registration.learned!r}",
        )
        for (registration, _), upsert in zip(learned, rows, strict=True)
    }


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
    sync_mark_pending(device, now)
    device.save()
    log.info("push object cleared for device %s/%s: %s", device.account_id, device.device_id, reason)
    if device.sync_status == SyncStatus.PENDING:
        transaction.on_commit(sync_wake)
    return device


# --- What an operator may do to a device and its tokens (admin, API) ---------------------------------

# A device's identity (account, device id) is Kazoo's and its push object comes from registrations;
# the SIP username and realm (how /api/v1/send finds it by AOR) are what an operator may correct.
DEVICE_EDITABLE = frozenset({"username", "realm"})


@transaction.atomic
def device_update(*, device: Device, **changes: Any) -> Device:
    """Correct a device's SIP username or realm (names: DEVICE_EDITABLE). The stored registration
    digest is cleared, so the phone's next REGISTER is written in full again (a registration says
    what the phone is; an unchanged one would otherwise leave the edit in place silently). Raises
    PusherError for another field or a value that cannot be stored."""
    from django.core.exceptions import ValidationError

    unknown = sorted(set(changes) - DEVICE_EDITABLE)
    if unknown:
        raise PusherError(f"device field(s) not editable: {', '.join(unknown)} (editable: "
                          f"{', '.join(sorted(DEVICE_EDITABLE))})")
    device = Device.objects.select_for_update().get(pk=device.pk)
    for name, value in changes.items():
        setattr(device, name, value)
    device.registration_digest = ""
    try:
        device.full_clean(exclude=["push"])
    except ValidationError as exc:
        problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
        raise PusherError(f"device {device.account_id}/{device.device_id}: {problems}") from None
    device.save()
    log.info("device %s/%s updated (%s)", device.account_id, device.device_id, ", ".join(sorted(changes)))
    return device


@transaction.atomic
def device_delete(*, device: Device) -> None:
    """Forget a device and its tokens. Kazoo's device document keeps whatever push object it holds
    (pusher never writes one away); the phone's next REGISTER with push parameters brings the
    device back."""
    label = f"{device.account_id}/{device.device_id}"
    device.delete()
    log.info("device %s deleted", label)


@transaction.atomic
def push_token_deactivate(*, token: PushToken, reason: str, now: Any = None) -> PushToken:
    """Stop pushing to a token: it is marked inactive with `reason`, and a push object built on it is
    cleared so Kazoo stops building push endpoints for it (the next REGISTER with a token brings one
    back). What a provider's "dead token" answer does (push.services.token_dead), and what an
    operator's deactivate does. An inactive token is left as it is."""
    token = PushToken.objects.select_for_update().select_related("device").get(pk=token.pk)
    if not token.active:
        return token
    token.active = False
    token.deactivated_at = deactivated_at = now or timezone.now()
    token.deactivated_reason = (reason or "deactivated")[:300]
    token.save(update_fields=["active", "deactivated_at", "deactivated_reason"])
    device = token.device
    if device.push and device.push.get("Token-ID") == token.token:
        device_push_clear(device=device, reason=token.deactivated_reason)
    event_publish("token.deactivated", account=device.account_id, device=device.device_id, app=token.app,
                  token=token.token_masked, outcome=token.deactivated_reason[:200])
    # The webhook event commits (or rolls back) with the deactivation.
    at = deactivated_at.isoformat()
    webhook_event_record(event=WebhookEvent(WebhookEventType.TOKEN_DEACTIVATED, f"token:{token.pk}:{at}", {
        "account": device.account_id, "device": device.device_id, "app": token.app, "token": token.token_masked,
        "token_type": token.token_type, "reason": token.deactivated_reason, "deactivated_at": at,
    }, account_id=device.account_id))
    log.info("token %s of device %s/%s deactivated: %s", mask_token(token.token), device.account_id,
             device.device_id, token.deactivated_reason)
    return token


@transaction.atomic
def push_token_reactivate(*, token: PushToken) -> PushToken:
    """Push to a deactivated token again (deactivated by mistake, or by a provider error since
    fixed): pushes by AOR (/api/v1/send) use it again. A push object cleared with it is not rebuilt
    here: the phone's next REGISTER does that. An active token is left as it is."""
    token = PushToken.objects.select_for_update().select_related("device").get(pk=token.pk)
    if token.active:
        return token
    token.active = True
    token.deactivated_at = None
    token.deactivated_reason = ""
    token.save(update_fields=["active", "deactivated_at", "deactivated_reason"])
    # The next REGISTER, even an unchanged one, is written in full (and rebuilds a cleared push object).
    Device.objects.filter(pk=token.device_id).update(registration_digest="")
    log.info("token %s of device %s/%s reactivated", mask_token(token.token), token.device.account_id,
             token.device.device_id)
    return token

