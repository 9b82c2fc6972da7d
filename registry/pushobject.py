"""User-Agent rule matching and device ``push`` object building (pure: no ORM, no network).

Reproduces Kazoo's pusher registration path (PROTOCOL §5) with its known crashes and gaps
fixed: several Contacts, RFC 8599 / Linphone parameters, un-REGISTER, hostile regexes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import regex

from core.errors import ContactParseError, RuleError
from registry.regex_budget import regex_refusal
from registry.sip import Contact, parse_contacts

__all__ = [
    "PushBuild",
    "Rule",
    "TokenInfo",
    "compile_rule_regex",
    "rule_regex_caches_clear",
    "rule_regex_check",
    "push_object_build",
    "push_object_equal",
    "rule_match",
]

logger = logging.getLogger("registry.pushobject")

# Kazoo's regex for a rule stored without one: matches only an empty User-Agent, i.e. never
# (an empty UA never reaches matching).
DEFAULT_RULE_REGEX = "^$"
RULE_REGEX_FLAGS = regex.VERSION0 | regex.ASCII

REASON_OK = "ok"
REASON_NO_RULE = "no rule matched"
REASON_NO_TOKEN_PROPERTY = "rule maps no Token-ID"
REASON_NO_TOKEN = "no token in Contact"
REASON_NO_IDS = "missing Account-ID/Authorizing-ID"
REASON_UNREGISTER = "unregister"

# RFC 8599 parameter names; a rule that maps one of them as a source opts into their decoding.
PN_PROVIDER = "pn-provider"
PN_PRID = "pn-prid"
PN_PARAM = "pn-param"

KIND_VOIP = "voip"
KIND_REMOTE = "remote"

# RFC 8599 §9.2 APNs pn-param is "<Team ID>.<bundle id>.<service>"; Linphone ships the
# placeholder team id ABCD1234 (8 chars) and some builds omit the team id entirely.
_APNS_TEAM_PREFIX = regex.compile(r"^(?:[A-Z0-9]{10}|ABCD1234)\.")
_APNS_SERVICE_SUFFIX = regex.compile(r"\.(?:voip&remote|remote&voip|voip|remote)$")


@dataclass(frozen=True)
class Rule:
    """One ``system_config/pusher`` ``User-Agents`` entry; ``properties`` maps output key -> source."""

    name: str
    regex: str
    properties: dict[str, str]


@dataclass(frozen=True)
class TokenInfo:
    """A push token found in a Contact. ``kind`` is "voip", "remote" or "" (plain / unknown)."""

    token: str
    type: str
    app: str
    kind: str
    sandbox: bool = False


@dataclass(frozen=True)
class PushBuild:
    """Outcome of ``push_object_build``; ``push`` is None unless ``reason`` is "ok"."""

    rule: str | None
    push: dict[str, str] | None
    tokens: tuple[TokenInfo, ...]
    reason: str
    account_id: str | None
    device_id: str | None


# Compiled rule regexes, for matching. More entries than any real rule set has; a rule change clears
# it (rule_regex_caches_clear), so a deleted rule's compiled regex does not stay behind.
RULE_REGEX_CACHE_SIZE = 128


@functools.lru_cache(maxsize=RULE_REGEX_CACHE_SIZE)
def compile_rule_regex(pattern: str) -> regex.Pattern[str]:
    """Compile a UA rule's regex (cached, for matching), raising ``RuleError`` if it can't be
    compiled or is over the budget of registry.regex_budget (checked before compiling)."""
    return _rule_regex_compile(pattern)


def rule_regex_check(pattern: str) -> None:
    """What a rule's regex must pass to be saved: compile_rule_regex's checks, without caching
    the compiled regex (a rule being validated may never be saved or matched)."""
    _rule_regex_compile(pattern)


def rule_regex_caches_clear() -> None:
    """Forget every compiled rule regex and cached match result (the rules changed)."""
    compile_rule_regex.cache_clear()
    _rule_found.cache_clear()


def _rule_regex_compile(pattern: str) -> regex.Pattern[str]:
    """Kazoo runs Erlang ``re`` (PCRE) without the ``unicode``/``ucp`` options, so ``\\d``/``\\w``
    are ASCII-only there; ``regex.ASCII`` keeps a rule meaning the same after migration.
    ``cache_pattern=False``: the regex module's own cache (500 patterns) would otherwise keep
    every rule regex ever compiled, deleted rules' included."""
    if not isinstance(pattern, str):
        raise RuleError(f"User-Agent regex must be a string, got {type(pattern).__name__}")
    refusal = regex_refusal(pattern or DEFAULT_RULE_REGEX, RULE_REGEX_FLAGS)
    if refusal is not None:
        shown = pattern if len(pattern) <= 80 else pattern[:60] + "..."
        raise RuleError(f"User-Agent regex {shown!r} is {refusal}")
    try:
        return regex.compile(pattern or DEFAULT_RULE_REGEX, flags=RULE_REGEX_FLAGS, cache_pattern=False)
    except (regex.error, ValueError, RecursionError) as exc:  # ValueError: e.g. (?V1) against VERSION0
        raise RuleError(f"invalid User-Agent regex {pattern!r}: {exc}") from exc


def rule_match(rules: Sequence[Rule], user_agent: str | None, *, timeout: float = 0.1) -> Rule | None:
    """First rule whose regex is found anywhere in ``user_agent`` (unanchored search, like Kazoo).

    The UA is attacker-controlled and rules are operator-written, so each search is time-boxed:
    a rule that times out counts as "no match" and is logged. A rule whose regex doesn't compile
    is skipped and logged too (Kazoo crashed and dropped every registration instead); rules are
    meant to be validated with ``compile_rule_regex`` when saved.
    """
    if not user_agent or not isinstance(user_agent, str):
        return None
    for rule in rules:
        try:
            if _rule_search(rule, user_agent, timeout):
                return rule
        except RuleError as exc:
            logger.error("skipping User-Agent rule %r: %s", rule.name, exc)
    return None


def _rule_search(rule: Rule, user_agent: str, timeout: float) -> bool:
    # The timeout is wall-clock: on a loaded machine a plain rule can be descheduled past it.
    # A second try tells that apart from a rule that really backtracks (it times out again).
    for attempt in (1, 2):
        try:
            if len(user_agent) <= _FOUND_CACHE_MAX_UA:
                return _rule_found(rule.regex, user_agent, timeout)
            return compile_rule_regex(rule.regex).search(user_agent, timeout=timeout) is not None
        except TimeoutError:
            if attempt == 2:
                logger.warning(
                    "User-Agent rule %r timed out twice after %.3fs (catastrophic backtracking?); "
                    "treated as no match",
                    rule.name,
                    timeout,
                )
    return False


# A fleet's User-Agents are a few hundred strings, each seen again at every re-REGISTER. The
# regex module releases the GIL for every search on a str, and under load getting it back costs
# more than the search: the consumer's registration lanes ask this cache first. Longer
# User-Agents (none real) are searched every time, so the cache stays small.
_FOUND_CACHE_MAX_UA = 512


@functools.lru_cache(maxsize=4096)
def _rule_found(pattern: str, user_agent: str, timeout: float) -> bool:
    """Whether `pattern` is found in `user_agent`; a search that times out raises TimeoutError and a
    pattern that does not compile RuleError, neither cached (the next registration tries again)."""
    return compile_rule_regex(pattern).search(user_agent, timeout=timeout) is not None


def push_object_build(
    *, rules: Sequence[Rule], fields: Mapping[str, Any], regex_timeout: float = 0.1
) -> PushBuild:
    """Build the device ``push`` object Kazoo's ``kz_endpoint`` reads, from a reg_success body.

    ``ContactParseError`` from the Contact propagates: the consumer dead-letters the message.
    The Contact is parsed only once a rule matched, so trunks and desk phones with odd Contacts
    are ignored quietly, as in Kazoo. On un-REGISTER ``push`` is None but ``tokens`` still lists
    what the Contact carried, so the caller can retire those tokens (Kazoo never did, §9.2).
    """
    account_id = _id_field(fields, "Account-ID")
    device_id = _id_field(fields, "Authorizing-ID")
    user_agent = fields.get("User-Agent")
    rule = rule_match(rules, user_agent if isinstance(user_agent, str) else None, timeout=regex_timeout)

    def result(
        reason: str, push: dict[str, str] | None = None, tokens: tuple[TokenInfo, ...] = ()
    ) -> PushBuild:
        return PushBuild(
            rule=rule.name if rule else None,
            push=push,
            tokens=tokens,
            reason=reason,
            account_id=account_id,
            device_id=device_id,
        )

    if rule is None:
        return result(REASON_NO_RULE)
    contact_value = fields.get("Contact")
    if contact_value is None:
        raise ContactParseError("reg_success has no Contact")
    contacts = parse_contacts(contact_value)

    # A Kazoo entry stored without "properties" behaves as {}.
    properties = dict(rule.properties or {})
    # Kazoo forces this mapping: Kamailio's pusher role needs the registrar that holds the
    # registration (fs_path), whatever the operator configured.
    properties["Token-Proxy"] = "Proxy-Path"
    token_source = properties.get("Token-ID")
    unregister = _is_unregister(fields)
    if not isinstance(token_source, str) or not token_source:
        return result(REASON_UNREGISTER if unregister else REASON_NO_TOKEN_PROPERTY)

    push: dict[str, str] | None = None
    tokens: list[TokenInfo] = []
    for contact in contacts:
        # The gate reads the Contact only: a same-named top-level field must never pose as a token.
        if not contact.param(token_source):
            continue
        built_pair = _build_from_contact(properties, contact, fields)
        if built_pair is None:
            continue
        built, contact_tokens = built_pair
        if push is None:
            push = built
        # The same app may register over two transports: one token, listed once.
        for token in contact_tokens:
            if token not in tokens:
                tokens.append(token)

    if unregister:
        return result(REASON_UNREGISTER, tokens=tuple(tokens))
    if push is None:
        return result(REASON_NO_TOKEN)
    if account_id is None or device_id is None:
        return result(REASON_NO_IDS, tokens=tuple(tokens))
    return result(REASON_OK, push=push, tokens=tuple(tokens))


def push_object_equal(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two push objects are the same; key order is irrelevant (Kazoo compared in order)."""
    if a is None or b is None:
        return a is None and b is None
    return dict(a) == dict(b)


def _build_from_contact(
    properties: Mapping[str, str], contact: Contact, fields: Mapping[str, Any]
) -> tuple[dict[str, str], list[TokenInfo]] | None:
    push: dict[str, str] = {}
    sources = {key: source.lower() for key, source in properties.items() if isinstance(source, str)}
    provider = (contact.param(PN_PROVIDER) or "").lower()
    sandbox = False
    prid_tokens: list[tuple[str, str]] | None = None

    for key, source in sources.items():
        value = contact.param(source) or _field_str(fields.get(properties[key]))
        if not value:
            continue
        if source == PN_PROVIDER:
            value, sandbox = _decode_pn_provider(value)
        elif source == PN_PRID:
            prid_tokens = _decode_pn_prid(value)
            if not prid_tokens:
                continue
            value = _preferred_token(prid_tokens)
        elif source == PN_PARAM and provider.startswith("apns"):
            value = _decode_apns_pn_param(value)
        push[key] = value

    if not push.get("Token-ID"):
        # e.g. pn-prid="&" or ":voip": the parameter is there but holds no usable token.
        return None
    token_type = push.get("Token-Type", "")
    app = push.get("Token-App", "")
    if sources.get("Token-ID") == PN_PRID and prid_tokens:
        tokens = [
            TokenInfo(token=token, type=token_type, app=app, kind=kind, sandbox=sandbox)
            for token, kind in prid_tokens
        ]
    else:
        # Legacy (Kazoo-style) params carry one token and no service label; the Kazoo convention
        # puts "voip" in the app id of VoIP-certificate apps (e.g. com.acme.phone.voip.prod).
        kind = KIND_VOIP if KIND_VOIP in app.lower() else ""
        tokens = [TokenInfo(token=push["Token-ID"], type=token_type, app=app, kind=kind, sandbox=sandbox)]
    return push, tokens


def _decode_pn_provider(value: str) -> tuple[str, bool]:
    # RFC 8599 names providers "apns"/"fcm"; Kazoo's push path and Kamailio speak "apple" and
    # "firebase". Kazoo aliases (apple/firebase/google/android) pass through for the push path.
    lowered = value.lower()
    if lowered == "apns":
        return "apple", False
    if lowered == "apns.dev":
        return "apple", True
    if lowered == "fcm":
        return "firebase", False
    return value, False


def _decode_pn_prid(value: str) -> list[tuple[str, str]]:
    """Split Linphone's ``tokA:voip&tokB:remote`` into (token, kind) pairs, in written order.

    FCM tokens contain ':' themselves, so only a trailing ":voip"/":remote" counts as a label.
    """
    pairs: list[tuple[str, str]] = []
    for piece in value.split("&"):
        token, colon, label = piece.rpartition(":")
        if colon and label.lower() in (KIND_VOIP, KIND_REMOTE):
            pair = (token, label.lower())
        else:
            pair = (piece, "")
        if pair[0] and pair not in pairs:
            pairs.append(pair)
    return pairs


def _preferred_token(pairs: list[tuple[str, str]]) -> str:
    # A VoIP push (PushKit) is what wakes an iOS app for a call; the remote/plain token is the
    # fallback for apps without a VoIP registration (and for Android, which has only one).
    for wanted in (KIND_VOIP, KIND_REMOTE, ""):
        for token, kind in pairs:
            if kind == wanted:
                return token
    return pairs[0][0]


def _decode_apns_pn_param(value: str) -> str:
    # Token-App must be the bare bundle id: the push path derives the APNs topic from it per
    # token kind ("<bundle>.voip" for PushKit) and looks credentials up by it.
    bundle = _APNS_TEAM_PREFIX.sub("", value, count=1)
    return _APNS_SERVICE_SUFFIX.sub("", bundle, count=1) or value


def _field_str(value: Any) -> str | None:
    """A top-level reg_success value as Kazoo would store it; objects/lists can't be sources."""
    # bool before int: bool is an int subclass, and Kamailio sends First-Registration as a JSON bool.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _id_field(fields: Mapping[str, Any], name: str) -> str | None:
    # CCVs come from the authn_resp and are authoritative; they may be absent, {} (token-reg path)
    # or, from a broken template, not an object at all.
    ccvs = fields.get("Custom-Channel-Vars")
    for source in (ccvs if isinstance(ccvs, Mapping) else {}, fields):
        value = source.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _is_unregister(fields: Mapping[str, Any]) -> bool:
    status = fields.get("Status")
    if isinstance(status, str) and status.strip().lower() == "unregistered":
        return True
    expires = fields.get("Expires")
    if isinstance(expires, bool):
        return False
    if isinstance(expires, (int, float)):
        return expires == 0
    if isinstance(expires, str):
        try:
            return int(expires.strip()) == 0
        except ValueError:
            return False
    return False
