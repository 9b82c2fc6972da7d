"""Credentials: parse, store (encrypted), share between apps, rename, replace, delete, re-encrypt."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from core import metrics
from core.errors import CredentialError, PusherError
from core.fields import rows_reencrypt
from push.credentials import ParsedCredential, parse_credential
from push.models import (
    Credential,
    CredentialKind,
    Provider,
)
from push.selectors import push_apps_with_expiry
from push.services.appcache import _push_apps_changed

log = logging.getLogger(__name__)


def credential_parse(
    *, kind: str, data: bytes | str, password: str | None = None, key_id: str = "", team_id: str = ""
) -> ParsedCredential:
    """Parse and validate secret material; raises CredentialError with a clear message."""
    return parse_credential(kind, data, password=password or None, key_id=key_id, team_id=team_id)


@transaction.atomic
def credential_save(*, name: str, parsed: ParsedCredential, credential: Credential | None = None) -> Credential:
    """Store a parsed credential: the secret encrypted, the facts in clear."""
    facts = parsed.facts
    credential = credential or Credential()
    credential.name = name
    credential.kind = str(facts.kind.value if hasattr(facts.kind, "value") else facts.kind)
    credential.secret = parsed.secret
    credential.subject = facts.subject
    credential.topics = list(facts.topics)
    credential.environment = facts.environment
    credential.not_before = facts.not_before
    credential.not_after = facts.not_after
    credential.fingerprint_sha256 = facts.fingerprint_sha256
    credential.key_id = facts.key_id
    credential.team_id = facts.team_id
    credential.project_id = facts.project_id
    credential.client_email = facts.client_email
    credential.usable = facts.usable
    credential.unusable_reason = facts.unusable_reason
    credential.warnings = list(facts.warnings)
    credential.save()
    log.info(
        "credential %r saved: kind=%s fingerprint=%s not_after=%s usable=%s",
        credential.name, credential.kind, credential.fingerprint_sha256[:16], credential.not_after, credential.usable,
    )
    return credential


CREDENTIAL_KINDS_OF_PROVIDER = {
    Provider.APPLE: frozenset({CredentialKind.APNS_CERTIFICATE, CredentialKind.APNS_TOKEN}),
    Provider.FIREBASE: frozenset({CredentialKind.FCM_SERVICE_ACCOUNT, CredentialKind.FCM_LEGACY_KEY}),
}


def credential_provider_check(*, credential: Credential | None, provider: str) -> None:
    """Raises CredentialError for a credential an app of `provider` cannot send with (the admin's
    form asks this before saving; push_app_upsert and push_app_update check it again)."""
    if credential is not None and credential.kind not in CREDENTIAL_KINDS_OF_PROVIDER[Provider(provider)]:
        raise CredentialError(
            f"credential {credential.name!r} is a {credential.get_kind_display()}, which cannot send for a "
            f"{Provider(provider).label} app"
        )


def credential_kind_check(*, credential: Credential, kind: str) -> None:
    """Raises CredentialError when an app using `credential` could not send with a secret of `kind`
    (an APNs certificate replaced by a service account). credential_update checks it; the admin's
    form asks it first, to show the refusal on the form."""
    for app in credential.apps.all():
        if kind not in CREDENTIAL_KINDS_OF_PROVIDER[Provider(app.provider)]:
            raise CredentialError(f"push app {app} uses this credential and cannot send with a {kind}")


def credential_name_for(*, app_id: str, parsed: ParsedCredential) -> str:
    """The name a credential added for `app_id` is stored under. Keys that serve many apps (an APNs
    .p8 key serves the whole team, a service account its project) are named after themselves."""
    facts = parsed.facts
    kind = str(facts.kind)
    if kind == CredentialKind.APNS_TOKEN:
        name = f"APNs key {facts.key_id} (team {facts.team_id})"
    elif kind == CredentialKind.FCM_SERVICE_ACCOUNT:
        name = f"FCM {facts.client_email}"
    elif kind == CredentialKind.FCM_LEGACY_KEY:
        name = f"{app_id} (FCM legacy key)"
    else:
        name = f"{app_id} (APNs certificate)"
    return name[:200]


@dataclass(frozen=True)
class CredentialStored:
    """What credential_get_or_save did: "created", "reused" (the same secret was already stored) or
    "updated" (the secret of the credential of that name replaced in place), and why a new
    credential was saved beside one of the same name."""

    outcome: str
    note: str = ""


@transaction.atomic
def credential_get_or_save(*, name: str, parsed: ParsedCredential) -> tuple[Credential, CredentialStored]:
    """The stored credential holding this same secret (same kind, fingerprint, key id and team id),
    else the secret saved under `name`; returns the credential and what was done (created, reused
    or updated).

    One .p8 key serves every app of a team and one service account every app of a project: reusing
    the row keeps one copy of the secret and one place to rotate it. A credential already named
    `name` of the same kind is updated in place (a renewed certificate: every app on it follows)
    only when every app on it is one whose credential is named `name` (the app it was added for;
    every app of a key named after itself): apps share a certificate row through its fingerprint,
    and renewing app A's must not silently change app B's. Otherwise, or when the name is taken by
    another kind, the secret is saved as a new credential with a numbered suffix."""
    facts = parsed.facts
    kind = str(facts.kind)
    if facts.fingerprint_sha256:
        same = (
            Credential.objects.filter(
                kind=kind, fingerprint_sha256=facts.fingerprint_sha256, key_id=facts.key_id, team_id=facts.team_id
            )
            .order_by("pk")
            .first()
        )
        if same is not None:
            return same, CredentialStored("reused")
    existing = Credential.objects.select_for_update().filter(name=name).first()
    note = ""
    if existing is not None and existing.kind == kind:
        others = [
            str(app) for app in existing.apps.all()
            if credential_name_for(app_id=app.app_id, parsed=parsed) != name
        ]
        if not others:
            return credential_save(name=name, parsed=parsed, credential=existing), CredentialStored("updated")
        note = (
            f"credential {name!r} is also used by {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}, "
            "which keep it; this secret was saved as a new credential"
        )
    if existing is not None:
        suffix = 2
        while Credential.objects.filter(name=f"{name[:190]} #{suffix}").exists():
            suffix += 1
        name = f"{name[:190]} #{suffix}"
    return credential_save(name=name, parsed=parsed), CredentialStored("created", note)


@transaction.atomic
def credential_create(
    *, name: str, kind: str, data: bytes | str, password: str | None = None, key_id: str = "", team_id: str = ""
) -> Credential:
    """Parse, validate and store a new credential under `name`. Raises CredentialError for a secret
    that does not parse and PusherError for a name already taken, before anything is written."""
    name = (name or "").strip()
    if not name:
        raise PusherError("a credential name is required")
    if Credential.objects.filter(name=name).exists():
        raise PusherError(f"a credential named {name!r} already exists", code="credential_name_taken")
    parsed = credential_parse(kind=kind, data=data, password=password, key_id=key_id, team_id=team_id)
    return credential_save(name=name, parsed=parsed)


@transaction.atomic
def credential_update(
    *,
    credential: Credential,
    name: str | None = None,
    kind: str | None = None,
    data: bytes | str | None = None,
    password: str | None = None,
    key_id: str | None = None,
    team_id: str | None = None,
) -> Credential:
    """Rename a credential, replace its secret (a renewed certificate: every app on it follows), or
    correct an APNs token key's key id / team id (the stored key is parsed again with them, so a
    wrong pair is refused here rather than by Apple). Arguments left None keep their value.
    Raises CredentialError for a secret that does not parse or a kind the credential's apps cannot
    use, PusherError for a name already taken."""
    credential = Credential.objects.select_for_update().get(pk=credential.pk)
    new_name = (name if name is not None else credential.name).strip()
    if not new_name:
        raise PusherError("a credential name is required")
    if new_name != credential.name and Credential.objects.filter(name=new_name).exclude(pk=credential.pk).exists():
        raise PusherError(f"a credential named {new_name!r} already exists", code="credential_name_taken")
    new_kind = kind or credential.kind
    new_key_id = key_id if key_id is not None else credential.key_id
    new_team_id = team_id if team_id is not None else credential.team_id
    credential_kind_check(credential=credential, kind=new_kind)
    ids_changed = (new_key_id, new_team_id) != (credential.key_id, credential.team_id)
    if data is not None:
        parsed = credential_parse(kind=new_kind, data=data, password=password, key_id=new_key_id, team_id=new_team_id)
    elif new_kind != credential.kind:
        raise CredentialError("changing the kind of a credential needs its new secret")
    elif ids_changed and credential.kind == CredentialKind.APNS_TOKEN:
        parsed = credential_parse(kind=new_kind, data=credential_secret(credential), key_id=new_key_id,
                                  team_id=new_team_id)
    elif ids_changed:
        raise CredentialError("key id and team id belong to APNs token keys (.p8) only")
    else:
        if new_name != credential.name:
            credential.name = new_name
            credential.save(update_fields=["name", "updated_at"])
            log.info("credential renamed to %r", new_name)
        return credential
    saved = credential_save(name=new_name, parsed=parsed, credential=credential)
    _push_apps_changed()
    return saved


@transaction.atomic
def credential_delete(*, credential: Credential) -> None:
    """Delete a credential no app uses. Raises PusherError (code credential_in_use) otherwise."""
    apps = [str(app) for app in credential.apps.all()[:10]]
    if apps:
        raise PusherError(
            f"credential {credential.name!r} is used by {', '.join(apps)}; give those apps another credential first",
            code="credential_in_use",
        )
    label = credential.name
    credential.delete()
    log.info("credential %r deleted", label)


@dataclass(frozen=True)
class Reencrypted:
    count: int
    undecryptable: tuple[str, ...]  # names of credentials no key decrypts, left as they were


def credential_secret(credential: Credential) -> str:
    """The decrypted secret; CredentialError if no key decrypts it (push_app_for refuses such a
    credential first: a provider builder never sees the placeholder)."""
    if not credential.secret_readable:
        raise CredentialError(f"credential {credential.name!r}: {credential.cannot_send_reason()}")
    return credential.secret


def credentials_reencrypt() -> Reencrypted:
    """Rewrite every secret with the first FIELD_ENCRYPTION_KEY (MultiFernet.rotate): the step that
    lets an old key be removed from the list. A secret no key decrypts is left as it is and named."""
    count, undecryptable = rows_reencrypt(Credential, field="secret", label="name")
    return Reencrypted(count=count, undecryptable=undecryptable)


_expiry_lock = threading.Lock()


def credential_expiry_refresh() -> None:
    """Set the expiry gauge from the database (called when /metrics is scraped): one series per
    app whose credential has an end date; apps removed or rotated to a dateless key drop out."""
    now = timezone.now()
    rows = [
        (app.app_id, app.provider, (app.credential.not_after - now).total_seconds() / 86400)
        for app in push_apps_with_expiry()
        if app.credential is not None and app.credential.not_after is not None  # (the query's own filter)
    ]
    with _expiry_lock:
        metrics.CREDENTIAL_EXPIRY_DAYS.clear()
        for app_id, provider, days in rows:
            metrics.CREDENTIAL_EXPIRY_DAYS.labels(app=app_id, provider=provider).set(round(days, 3))
