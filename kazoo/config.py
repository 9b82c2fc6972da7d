"""Kazoo's `system_config/pusher` document in and out (PROTOCOL §5, §7), and the User-Agent tester.

Import is how a Kazoo installation migrates: its `User-Agents` rules become UserAgentRule rows and
its per-app sections (`<app-id>.apple` / `<app-id>.firebase`) become PushApp rows with their
credentials. Export writes the same layout back, without secrets, for review or for Kazoo.
"""

from __future__ import annotations

import json
import logging
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from core.errors import CredentialError, PusherError, RuleError
from core.text import text_storable_problem
from push import services as push_services
from push.models import APNS_PRIORITIES, TOPIC_SUFFIX, CredentialKind, Provider, PushApp
from push.payloads import apns_wire
from registry import selectors
from registry import services as registry_services
from registry.models import UserAgentRule, validate_rule_properties, validate_rule_regex
from registry.pushobject import DEFAULT_RULE_REGEX, rule_positions_assign

log = logging.getLogger(__name__)

KAZOO_DOC_ID = "pusher"
USER_AGENTS = "User-Agents"
DEFAULT_SECTION = "default"
# Crossbar's `GET /v2/system_configs/pusher` wraps the document in its envelope.
_CROSSBAR_ENVELOPE = frozenset(
    {"data", "auth_token", "status", "request_id", "revision", "node", "version", "timestamp", "tokens", "page_size"}
)
_APPLE_KEYS = frozenset({"certificate", "host", "port", "headers", "apns_topic", "enabled", "extra_headers"})
_FIREBASE_KEYS = frozenset({"api_key", "service_account", "project_id", "headers", "enabled", "extra_headers"})
# Non-secret settings a `default.<provider>` section lends to every app (Kazoo reads each key
# in `<app-id>`, then the zone, then `default`).
_INHERITED_KEYS = ("host", "headers", "enabled")
_ANDROID_PRIORITIES = ("high", "normal")

# Far more rules than an installation has (5,000 cost an unmatched reg_success ~0.6 s). The largest
# document the command reads; the API's body is capped lower (DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MiB).
MAX_IMPORT_RULES = 1000
MAX_KAZOO_CONFIG_BYTES = 8 * 1024 * 1024

# How a message quotes a name from the document: a 5,000-character rule name made a 5 KB one-line error.
_SHORT = reprlib.Repr()
_SHORT.maxstring = 80
PLACEHOLDER_ACCOUNT_ID = "placeholder-account-id"
PLACEHOLDER_AUTHORIZING_ID = "placeholder-authorizing-id"
CCVS = "Custom-Channel-Vars"


@dataclass(frozen=True)
class RulePosition:
    """Where a rule stands after an import; ``previous`` is None for a rule the import created."""

    name: str
    position: int
    previous: int | None
    in_document: bool


@dataclass
class ImportSummary:
    rules_created: int = 0
    rules_updated: int = 0
    rules_unchanged: int = 0
    # Rules not in the document whose position the import changed (moved after the document's).
    rules_moved: int = 0
    apps_created: int = 0
    apps_updated: int = 0
    apps_unchanged: int = 0
    credentials_created: int = 0
    warnings: list[str] = field(default_factory=list)
    # Every rule's position after the import, in matching order (empty when the document has no rules).
    rule_positions: list[RulePosition] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        counts = (self.rules_created, self.rules_updated, self.rules_moved, self.apps_created, self.apps_updated)
        return any(counts) or bool(self.credentials_created)

    def lines(self) -> list[str]:
        """The summary as an operator reads it (command output, admin message)."""
        lines = [
            f"User-Agent rules: {self.rules_created} created, {self.rules_updated} updated, "
            f"{self.rules_unchanged} unchanged",
            f"push apps: {self.apps_created} created, {self.apps_updated} updated, {self.apps_unchanged} unchanged",
            f"credentials: {self.credentials_created} created",
        ]
        if self.rule_positions:
            lines.append(
                "rule positions (the document's rules in its order, then the others in their previous order): "
                + ", ".join(_position_text(p) for p in self.rule_positions)
            )
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return lines


def _position_text(rule: RulePosition) -> str:
    notes = []
    if not rule.in_document:
        notes.append("not in the document")
    if rule.previous is None:
        notes.append("new")
    elif rule.previous != rule.position:
        notes.append(f"was {rule.previous}")
    return f"{rule.position} {rule.name}" + (f" ({', '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class _RulePlan:
    name: str
    regex: str
    properties: dict[str, str]


@dataclass(frozen=True)
class _AppPlan:
    app_id: str
    provider: str
    settings: dict[str, Any]
    secret_kind: str = ""
    secret: str = field(default="", repr=False)


# --- Import -----------------------------------------------------------------------------------


def kazoo_config_import(*, document: Mapping[str, Any]) -> ImportSummary:
    """Import Kazoo's `system_config/pusher` document (as stored in CouchDB, as Crossbar returns it,
    or a bare `{"User-Agents": {...}}`). Idempotent: importing the same document again changes nothing.

    * `User-Agents` from `default` and from any node/zone section, merged into the one rule set,
      in Kazoo's object order (positions 10, 20, 30...), at most MAX_IMPORT_RULES. Rules already
      stored but not in the document are kept and numbered on after them, in their previous order:
      every position is unique (registry.pushobject.rule_positions_assign), and the summary lists
      them all (`rule_positions`). A missing `regex` is Kazoo's `^$`, missing `properties` is `{}`.
      A regex that does not compile fails the whole import (RuleError naming the rule).
    * A string no store takes (a NUL, a lone surrogate; core.text) fails it too, naming its field.
    * `<app-id>.apple` / `<app-id>.firebase` (3.x-era `<app-id>.google` too) become push apps.
      Settings absent from the document leave the stored value alone, but for the push type: Kazoo
      sends none of its own, so an app without an `apns_push_type` header gets a blank one, "as
      Kazoo" (voip on a `.voip` topic, else alert, the topic as Kazoo's rule makes it), and the
      summary names every app that then pushes alerts.
    * A certificate or key that does not parse (a placeholder, a truncated paste) does not fail the
      import: the app is saved without it, keeps any credential it had, and a warning says so.
    * `default.apple.certificate` (and a default FCM key) are skipped with a warning: Kazoo would
      silently have used them for every app id (PROTOCOL §9.15).
    """
    document = _unwrap(document)
    _text_check(document)  # every string the plans below take, their names (keys) included
    warnings: list[str] = []
    rules = _rules_plan(document, warnings)
    apps = _apps_plan(document, warnings)
    if not rules and not apps:
        raise PusherError("nothing to import: no User-Agents and no app sections (apple/firebase) found; "
                          "is this Kazoo's system_config/pusher document?")
    summary = ImportSummary(warnings=warnings)
    with transaction.atomic():
        # Rules and apps are written by the services the admin and the API call (their checks, their
        # cache clearing), inside this one transaction: the import lands whole or not at all.
        _rules_apply(rules, summary)
        for plan in apps:
            _app_apply(plan, summary)
    log.info(
        "kazoo config imported: rules %d/%d/%d, apps %d/%d/%d, credentials %d, %d warning(s)",
        summary.rules_created, summary.rules_updated, summary.rules_unchanged, summary.apps_created,
        summary.apps_updated, summary.apps_unchanged, summary.credentials_created, len(summary.warnings),
    )
    return summary


def _unwrap(document: Any) -> dict[str, Any]:
    if not isinstance(document, Mapping):
        raise PusherError("the Kazoo config must be a JSON object (the system_config/pusher document)")
    if isinstance(document.get("data"), Mapping) and set(document) <= _CROSSBAR_ENVELOPE:
        document = document["data"]
    return dict(document)


def _text_check(value: Any, where: str = "the document") -> None:
    """core.text's check of every face (a NUL, a lone surrogate failed at the save), naming the field."""
    if (problem := text_storable_problem(value)) is None:
        return
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and text_storable_problem(key):
            raise PusherError(f"{where}: the name {_SHORT.repr(key)} {text_storable_problem(key)}")
        _text_check(item, f"{where} > {_SHORT.repr(key)}")
    raise PusherError(f"{where} {problem}")


def _is_meta(name: str) -> bool:
    # CouchDB's own keys (_id, _rev) and Kazoo's private ones (pvt_*).
    return name.startswith("_") or name.startswith("pvt_")


def _rules_plan(document: Mapping[str, Any], warnings: list[str]) -> list[_RulePlan]:
    sections: list[tuple[str, Any]] = []
    if USER_AGENTS in document:
        sections.append(("(top level)", document[USER_AGENTS]))
    default = document.get(DEFAULT_SECTION)
    if isinstance(default, Mapping) and USER_AGENTS in default:
        sections.append((DEFAULT_SECTION, default[USER_AGENTS]))
    for name, section in document.items():
        if name in (DEFAULT_SECTION, USER_AGENTS) or _is_meta(name) or not isinstance(section, Mapping):
            continue
        if USER_AGENTS in section:
            warnings.append(
                f"section {_SHORT.repr(name)} (a node or zone) has its own User-Agents; pusher has one rule set for "
                "every node, so its rules were added after the default ones"
            )
            sections.append((name, section[USER_AGENTS]))

    count = sum(len(user_agents) for _, user_agents in sections if isinstance(user_agents, Mapping))
    if count > MAX_IMPORT_RULES:
        raise RuleError(f"the document has {count} User-Agent rules; at most {MAX_IMPORT_RULES} are imported")
    plans: dict[str, tuple[str, _RulePlan]] = {}
    for section_name, user_agents in sections:
        if not isinstance(user_agents, Mapping):
            raise RuleError(f"User-Agents in section {_SHORT.repr(section_name)} must be an object of named rules")
        for rule_name, entry in user_agents.items():
            plan = _rule_plan(section_name, str(rule_name), entry)
            seen = plans.get(plan.name)
            if seen is None:
                plans[plan.name] = (section_name, plan)
            elif (seen[1].regex, seen[1].properties) != (plan.regex, plan.properties):
                warnings.append(
                    f"User-Agent rule {_SHORT.repr(plan.name)} in section {_SHORT.repr(section_name)} differs from "
                    f"the one in {_SHORT.repr(seen[0])}; kept that one"
                )
    return [plan for _, plan in plans.values()]


def _rule_plan(section: str, name: str, entry: Any) -> _RulePlan:
    where = f"User-Agent rule {_SHORT.repr(name)} (section {_SHORT.repr(section)})"
    if not name.strip() or len(name) > 200:
        raise RuleError(f"{where}: a rule name must be 1 to 200 characters")
    if not isinstance(entry, Mapping):
        raise RuleError(f"{where} must be an object with regex and properties")
    regex = entry.get("regex")
    if regex is None:
        regex = DEFAULT_RULE_REGEX
    if not isinstance(regex, str) or len(regex) > 1000:
        raise RuleError(f"{where}: regex must be a string of at most 1000 characters")
    properties = entry.get("properties")
    if properties is None:
        properties = {}
    properties = dict(properties) if isinstance(properties, Mapping) else properties
    try:  # the model's own validators: the same checks as a rule saved in the admin or the API
        validate_rule_regex(regex)
        validate_rule_properties(properties)
    except ValidationError as exc:
        raise RuleError(f"{where}: {' '.join(exc.messages)}") from None
    return _RulePlan(name=name, regex=regex, properties=properties)


def _rules_apply(plans: list[_RulePlan], summary: ImportSummary) -> None:
    """Create, update and move the rules through registry.services (the checks and the cache
    clearing of a rule saved in the admin or the API), in the positions rule_positions_assign gives."""
    if not plans:
        return  # a document of push apps only leaves the rules, and their order, alone
    existing = {rule.name: rule for rule in UserAgentRule.objects.select_for_update()}
    positions = rule_positions_assign(
        imported=[plan.name for plan in plans], existing=[(rule.name, rule.position) for rule in existing.values()]
    )
    for plan in plans:
        position = positions[plan.name]
        rule = existing.pop(plan.name, None)
        previous = rule.position if rule is not None else None
        if rule is None:
            registry_services.user_agent_rule_create(
                name=plan.name, regex=plan.regex, properties=plan.properties, position=position
            )
            summary.rules_created += 1
        elif (rule.regex, rule.properties, rule.position) != (plan.regex, plan.properties, position):
            registry_services.user_agent_rule_update(
                rule=rule, regex=plan.regex, properties=plan.properties, position=position
            )
            summary.rules_updated += 1
        else:
            summary.rules_unchanged += 1
        summary.rule_positions.append(RulePosition(plan.name, position, previous, in_document=True))
    for rule in sorted(existing.values(), key=lambda r: positions[r.name]):
        previous, position = rule.position, positions[rule.name]
        if position != previous:
            registry_services.user_agent_rule_update(rule=rule, position=position)
            summary.rules_moved += 1
        summary.rule_positions.append(RulePosition(rule.name, position, previous, in_document=False))
        summary.warnings.append(
            f"User-Agent rule {rule.name!r} is not in the document; kept after the document's rules "
            f"(position {position}" + (f", was {previous})" if position != previous else ")")
        )


def _apps_plan(document: Mapping[str, Any], warnings: list[str]) -> list[_AppPlan]:
    inherited = _inherited_defaults(document.get(DEFAULT_SECTION), warnings)
    plans: list[_AppPlan] = []
    for app_id, section in document.items():
        if app_id in (DEFAULT_SECTION, USER_AGENTS) or _is_meta(app_id):
            continue
        if not isinstance(section, Mapping):
            warnings.append(f"top-level key {_SHORT.repr(app_id)} is not a section (an object); ignored")
            continue
        apple, firebase, google = section.get("apple"), section.get("firebase"), section.get("google")
        if apple is None and firebase is None and google is None:
            if USER_AGENTS not in section:
                warnings.append(f"section {_SHORT.repr(app_id)} has no User-Agents, apple or firebase section; ignored")
            continue
        if apple is not None:
            if isinstance(apple, str):
                # 3.x-4.1 stored the PEM itself as `<app>.apple` (binary APNs era).
                warnings.append(f"{app_id}: apple is a bare certificate (Kazoo 3.x layout); imported as one")
                apple = {"certificate": apple}
            if isinstance(apple, Mapping):
                plans.append(_apple_plan(app_id, {**inherited.get("apple", {}), **apple}, warnings))
            else:
                warnings.append(f"{app_id}: apple must be an object; ignored")
        if google is not None:
            if firebase is not None:
                warnings.append(f"{app_id}: both firebase and google (pre-2019) settings; google ignored")
            else:
                warnings.append(f"{app_id}: google settings (Kazoo's pm_google, pre-2019) imported as firebase")
                firebase = {"api_key": google} if isinstance(google, str) else google
        if firebase is not None:
            if isinstance(firebase, Mapping):
                plans.append(_firebase_plan(app_id, {**inherited.get("firebase", {}), **firebase}, warnings))
            else:
                warnings.append(f"{app_id}: firebase must be an object; ignored")
    return plans


def _inherited_defaults(default: Any, warnings: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(default, Mapping):
        return out
    for provider, secrets in (("apple", ("certificate",)), ("firebase", ("api_key", "service_account"))):
        section = default.get(provider)
        if not isinstance(section, Mapping):
            continue
        for secret in secrets:
            if section.get(secret):
                warnings.append(
                    f"default.{provider}.{secret} skipped: Kazoo would have used it for every app id without "
                    f"its own (PROTOCOL §9.15); add it to the app(s) it belongs to"
                )
        out[provider] = {key: section[key] for key in _INHERITED_KEYS if key in section}
    return out


def _apple_plan(app_id: str, conf: Mapping[str, Any], warnings: list[str]) -> _AppPlan:
    settings: dict[str, Any] = {}
    _warn_unknown(app_id, "apple", conf, _APPLE_KEYS, warnings)
    if "port" in conf:
        port = _int(conf["port"])
        if port is not None and 0 < port < 65536:
            settings["port"] = port
        else:
            warnings.append(f"{app_id}: apple.port {conf['port']!r} is not a port number; ignored")
    if isinstance(conf.get("host"), str) and conf["host"].strip():
        # The services' own reading of a host (a `host:port` is split); one they refuse is not imported.
        try:
            host, port = push_services.push_app_address(host=conf["host"], port=settings.get("port"))
        except PusherError as exc:
            warnings.append(f"{app_id}: apple.host not imported: {exc.message}")
        else:
            settings["host"] = host
            if port is not None:
                settings["port"] = port
    if "enabled" in conf:
        settings["enabled"] = _bool(conf["enabled"])
    if isinstance(conf.get("apns_topic"), str) and conf["apns_topic"].strip():
        settings["topic"] = conf["apns_topic"].strip()
    headers = conf.get("headers")
    if headers is not None and not isinstance(headers, Mapping):
        warnings.append(f"{app_id}: apple.headers must be an object; ignored")
    elif headers is not None:
        settings.update(_apple_headers(app_id, headers, warnings))
    if "push_type" not in settings:
        _as_kazoo(app_id, settings, warnings)
    _note_extra_headers(app_id, "apple", conf, warnings)
    certificate = conf.get("certificate")
    if certificate is not None and not isinstance(certificate, str):
        warnings.append(f"{app_id}: apple.certificate must be PEM text; not imported")
        certificate = None
    return _AppPlan(
        app_id=app_id, provider=Provider.APPLE, settings=settings,
        secret_kind=CredentialKind.APNS_CERTIFICATE if certificate else "", secret=certificate or "",
    )


def _apple_headers(app_id: str, headers: Mapping[str, Any], warnings: list[str]) -> dict[str, Any]:
    """Kazoo's apns4erl header names to the app's typed fields; the rest stay extra headers (the
    push path maps apns_* names). A typed field is the only source of its header, so a later edit
    in the admin is not silently overridden by a copy left in the extra headers."""
    settings: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in headers.items():
        key = str(name).lower().replace("-", "_")
        if key == "apns_push_type" and isinstance(value, str) and value.strip():
            settings["push_type"] = value.strip()
        elif key == "apns_priority" and _int(value) in APNS_PRIORITIES:
            settings["priority"] = _int(value)
        elif key == "apns_expiration" and _int(value) == 0:
            # Kazoo sends this header verbatim: an absolute time, so only 0 ("now or never") means
            # the same as the app's relative expiration; any other value stays a literal header.
            settings["expiration"] = 0
        elif key == "apns_topic" and isinstance(value, str) and value.strip():
            settings["topic"] = value.strip()  # Kazoo's configured headers win over apns_topic
        elif key == "apns_collapse_id" and isinstance(value, str):
            settings["collapse_id"] = value
        else:
            if key == "apns_priority":
                warnings.append(f"{app_id}: apns_priority {value!r} is not 1, 5 or 10; kept as a literal header")
            extra[str(name)] = value
    settings["extra_headers"] = extra
    return settings


def _as_kazoo(app_id: str, settings: dict[str, Any], warnings: list[str]) -> None:
    """Kazoo sends no apns-push-type of its own and no `.voip` suffix: an app without an
    apns_push_type header is imported with a blank push type, pushed as Kazoo pushed it
    (push.payloads.apns_wire: voip on a `.voip` topic, else alert), and an alert-only app is named."""
    settings["push_type"] = ""
    topic = settings.get("topic") or TOPIC_SUFFIX.sub("", app_id)
    push_type, topic = apns_wire(topic=topic, push_type="", headers={})
    if push_type == "alert":
        warnings.append(
            f"{app_id}: no .voip topic and no apns-push-type header: alert pushes as Kazoo sent them "
            f"(apns-topic {topic}, apns-push-type alert); for VoIP (PushKit) pushes add apns_push_type voip "
            "to its apple.headers (a push type set on the app is replaced by the next import)"
        )


def _firebase_plan(app_id: str, conf: Mapping[str, Any], warnings: list[str]) -> _AppPlan:
    settings: dict[str, Any] = {}
    _warn_unknown(app_id, "firebase", conf, _FIREBASE_KEYS, warnings)
    if "enabled" in conf:
        settings["enabled"] = _bool(conf["enabled"])
    if isinstance(conf.get("project_id"), str):
        settings["project_id"] = conf["project_id"].strip()
    headers = conf.get("headers")
    if headers is not None and not isinstance(headers, Mapping):
        warnings.append(f"{app_id}: firebase.headers must be an object; ignored")
    elif headers is not None:
        for name, value in headers.items():
            if name == "priority" and value in _ANDROID_PRIORITIES:
                settings["android_priority"] = value
            elif name == "time_to_live" and (_int(value) or 0) >= 0 and _int(value) is not None:
                settings["ttl_s"] = _int(value)
            elif name == "collapse_key" and isinstance(value, str):
                settings["collapse_id"] = value
            else:
                warnings.append(
                    f"{app_id}: firebase header {name}={value!r} has no FCM HTTP v1 equivalent here; ignored"
                )
    _note_extra_headers(app_id, "firebase", conf, warnings)
    kind, secret = "", ""
    service_account = conf.get("service_account")
    if service_account:
        kind = CredentialKind.FCM_SERVICE_ACCOUNT
        secret = service_account if isinstance(service_account, str) else json.dumps(service_account)
    elif isinstance(conf.get("api_key"), str) and conf["api_key"].strip():
        kind, secret = CredentialKind.FCM_LEGACY_KEY, conf["api_key"]
    return _AppPlan(app_id=app_id, provider=Provider.FIREBASE, settings=settings, secret_kind=kind, secret=secret)


def _warn_unknown(
    app_id: str, provider: str, conf: Mapping[str, Any], known: frozenset[str], warnings: list[str]
) -> None:
    for key in conf:
        if key not in known:
            warnings.append(f"{app_id}: unknown setting {provider}.{key}; ignored")


def _note_extra_headers(app_id: str, provider: str, conf: Mapping[str, Any], warnings: list[str]) -> None:
    if conf.get("extra_headers"):
        warnings.append(
            f"{app_id}: {provider}.extra_headers is read by Kazoo itself (kz_endpoint, e.g. Invite-Format) when "
            "it builds the push endpoint, not by the pusher; it stays in Kazoo's system_config"
        )


def _app_apply(plan: _AppPlan, summary: ImportSummary) -> None:
    before = _app_state(plan.app_id, plan.provider)
    where = f"{plan.app_id} ({plan.provider})"
    try:
        if plan.secret:
            try:
                added = push_services.push_app_add(
                    app_id=plan.app_id, provider=plan.provider, kind=plan.secret_kind, data=plan.secret,
                    **plan.settings,
                )
            except CredentialError as exc:
                app = push_services.push_app_upsert(app_id=plan.app_id, provider=plan.provider, **plan.settings)
                had = "kept its current credential" if app.credential_id else "has no credential yet"
                summary.warnings.append(f"{where}: credential not imported ({exc.message}); the app {had}")
            else:
                summary.credentials_created += int(added.credential_created)
                if plan.secret_kind == CredentialKind.FCM_LEGACY_KEY and not added.credential_kept:
                    summary.warnings.append(
                        f"{where}: legacy key imported but unusable: Google shut the FCM legacy API down; "
                        "add a service-account JSON (add_firebase_app APP_ID FILE) to send"
                    )
                else:
                    summary.warnings.extend(f"{where}: {warning}" for warning in added.warnings)
        else:
            app = push_services.push_app_upsert(app_id=plan.app_id, provider=plan.provider, **plan.settings)
            summary.warnings.extend(f"{where}: {warning}" for warning in push_services.push_app_warnings(app=app))
    except CredentialError as exc:
        raise PusherError(f"{where}: {exc.message}") from None
    after = _app_state(plan.app_id, plan.provider)
    if before is None:
        summary.apps_created += 1
    elif before != after:
        summary.apps_updated += 1
    else:
        summary.apps_unchanged += 1


def _app_state(app_id: str, provider: str) -> Mapping[str, Any] | None:
    return PushApp.objects.filter(app_id=app_id, provider=provider).values().first()


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(value.strip()) if isinstance(value, str) else None
    except ValueError:
        return None


def _bool(value: Any) -> bool:
    # Kazoo's kz_term:is_true/1 accepts the strings too.
    return value.strip().lower() in ("true", "1", "yes", "on") if isinstance(value, str) else bool(value)


# --- Export -----------------------------------------------------------------------------------


def kazoo_config_export() -> dict[str, Any]:
    """The rules and apps as Kazoo's `system_config/pusher` document.

    Secrets are NEVER exported: no `apple.certificate`, no `firebase.api_key` or service account
    (they are write-only here, STYLE rule 8); a Kazoo that must send again needs them re-added
    (`sup pusher_maintenance add_apple_app ...`). Importing the export changes nothing.

    Only enabled rules are exported (Kazoo has no disabled state). An app's relative `expiration`
    other than 0 has no Kazoo equivalent (Kazoo's `apns_expiration` is an absolute time) and is
    left out; a non-443 `port` is written as `apple.port`, which Kazoo ignores.
    """
    rules = {
        rule.name: {"regex": rule.regex, "properties": dict(rule.properties)}
        for rule in selectors.user_agent_rules_enabled(fresh=True)  # the consumer's rule set, in its order
    }
    document: dict[str, Any] = {"_id": KAZOO_DOC_ID, DEFAULT_SECTION: {USER_AGENTS: rules}}
    for app in PushApp.objects.order_by("app_id", "provider"):
        section = document.setdefault(app.app_id, {})
        if app.provider == Provider.APPLE:
            section["apple"] = _apple_export(app)
        else:
            section["firebase"] = _firebase_export(app)
    return document


def _apple_export(app: PushApp) -> dict[str, Any]:
    headers: dict[str, Any] = {"apns_push_type": app.push_type} if app.push_type else {}  # blank: as Kazoo
    headers["apns_priority"] = str(app.priority)
    if app.expiration == 0:
        headers["apns_expiration"] = "0"
    if app.collapse_id:
        headers["apns_collapse_id"] = app.collapse_id
    # Extra headers win on the wire (as in Kazoo), so they win here too.
    headers.update(app.extra_headers or {})
    out: dict[str, Any] = {"host": app.host, "headers": headers}
    if app.port != 443:
        out["port"] = app.port
    if app.topic:
        out["apns_topic"] = app.topic
    out["enabled"] = app.enabled
    return out


def _firebase_export(app: PushApp) -> dict[str, Any]:
    headers: dict[str, Any] = {"priority": app.android_priority, "time_to_live": app.ttl_s}
    if app.collapse_id:
        headers["collapse_key"] = app.collapse_id
    out: dict[str, Any] = {"headers": headers, "enabled": app.enabled}
    if app.project_id:
        out["project_id"] = app.project_id
    return out
