"""User-Agent rule matching and device ``push`` object building (pure: no ORM, no network).

Reproduces Kazoo's pusher registration path (PROTOCOL §5) with its known crashes and gaps
fixed: several Contacts, RFC 8599 / Linphone parameters, un-REGISTER, hostile regexes.

Three rules past Kazoo's (issue 14):

* A Contact parameter the parser skipped as malformed (registry.sip) is harmless unless the
  matched rule reads it; then the Contact is refused as unparsable, as before.
* A rule names its parameters in one of two families, RFC 8599 (``pn-prid``/``pn-provider``/
  ``pn-param``) or legacy (Kazoo's ``pn-tok``/``pn-type``/``app-id``, or any other name). When the
  rule's own family yields no token, Token-ID (and Token-Type / Token-App, where the rule maps
  them) are read from the other family's parameters (FAMILY_SOURCES); the reason says so.
* A token is stored only if it looks like one for its provider (push_token_problem): never with
  whitespace or control characters, APNs tokens hex, FCM tokens URL-safe, and never of a Token-Type
  pusher cannot push to (Kazoo stored any, and its pushes failed). Otherwise the
  registration is ignored with a reason naming the rule and the problem (acked, not dead-lettered).
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import regex

from core.errors import ContactParseError, RuleError
from registry.regex_budget import regex_refusal
from registry.sip import Contact, parse_contacts

__all__ = [
    "FAMILY_LEGACY",
    "FAMILY_RFC8599",
    "FAMILY_SOURCES",
    "PushBuild",
    "Rule",
    "TokenInfo",
    "compile_rule_regex",
    "family_properties",
    "is_unregister",
    "rule_family",
    "rule_positions_assign",
    "rule_regex_caches_clear",
    "rule_regex_check",
    "push_object_build",
    "push_object_equal",
    "push_token_problem",
    "token_type_decode",
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
REASON_TOKEN_REFUSED = "token refused"

# RFC 8599 parameter names; a rule that maps one of them as a source opts into their decoding.
PN_PROVIDER = "pn-provider"
PN_PRID = "pn-prid"
PN_PARAM = "pn-param"

KIND_VOIP = "voip"
KIND_REMOTE = "remote"

FAMILY_RFC8599 = "RFC 8599"
FAMILY_LEGACY = "legacy"
# The mapping between the two naming families: which Contact parameter holds each token key.
# The legacy names are Kazoo's documented ones (PROTOCOL §5); a rule with its own legacy names
# (e.g. Token-ID <- x-token) falls back to the RFC 8599 names, an RFC 8599 rule to these.
FAMILY_SOURCES: dict[str, dict[str, str]] = {
    FAMILY_RFC8599: {"Token-ID": PN_PRID, "Token-Type": PN_PROVIDER, "Token-App": PN_PARAM},
    FAMILY_LEGACY: {"Token-ID": "pn-tok", "Token-Type": "pn-type", "Token-App": "app-id"},
}

# What a stored token may be. PushToken.token is 1024 characters: a longer token would be refused
# by the store (and the message dead-lettered) instead of ignored with this reason.
TOKEN_MAX_CHARS = 1024
# APNs device tokens are 32 bytes (64 hex digits) today; Apple documents them as variable-length: up to 100 bytes.
APNS_TOKEN_MIN_HEX = 64
APNS_TOKEN_MAX_HEX = 200
# Token-Type values (after pn-provider decoding) that name each provider: the one list of them, which
# push.services.policy maps to its providers (a push_req reads the types a registration stores).
# `gcm` (Google Cloud Messaging, FCM's predecessor) is Firebase to Kazoo's pusher too. A token of
# any other type is refused (push_token_problem): every push to it would fail unknown_token_type.
APNS_TOKEN_TYPES = frozenset({"apple", "apns", "apns.dev"})
FCM_TOKEN_TYPES = frozenset({"firebase", "fcm", "google", "android", "gcm"})
PUSHABLE_TOKEN_TYPES_TEXT = f"{'/'.join(sorted(APNS_TOKEN_TYPES))} or {'/'.join(sorted(FCM_TOKEN_TYPES))}"
# The fixed patterns below use the standard library's re: they cannot backtrack, and the regex
# module (kept for operators' rules, for its timeout) gives up the GIL on every match unless told
# not to; under load taking it back cost ~300 µs per match against 0.7 µs (a fifth of the
# consumer's CPU on unchanged re-REGISTERs).
_HEX = re.compile(r"[0-9A-Fa-f]+")
# FCM registration tokens are `<instance id>:<base64url>` (letters, digits, '-', '_', ':');
# '.', '~' and standard base64's '+', '/', '=' are let through as harmless in a URL path or JSON.
FCM_TOKEN_CHARS = "-_:.~+/="
_FCM_TOKEN = re.compile(r"[A-Za-z0-9\-_:.~+/=]+")

# RFC 8599 §9.2 APNs pn-param is "<Team ID>.<bundle id>.<service>"; Linphone ships the
# placeholder team id ABCD1234 (8 chars) and some builds omit the team id entirely.
_APNS_TEAM_PREFIX = re.compile(r"^(?:[A-Z0-9]{10}|ABCD1234)\.")
_APNS_SERVICE_SUFFIX = re.compile(r"\.(?:voip&remote|remote&voip|voip|remote)$")


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
    """Outcome of ``push_object_build``; ``push`` is None unless ``reason`` starts with "ok" (it
    goes on to say so when the token was read by the other naming family's parameters)."""

    rule: str | None
    push: dict[str, str] | None
    tokens: tuple[TokenInfo, ...]
    reason: str
    account_id: str | None
    device_id: str | None
    # The naming family the token was read by (FAMILY_*), "" when there was none.
    family: str = ""
    # Contact parameters skipped as malformed, as "name (problem)"; none the rule reads.
    skipped_params: tuple[str, ...] = ()


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


# Rules are numbered 10, 20, 30...: room to put one in between by hand.
RULE_POSITION_STEP = 10


def rule_positions_assign(
    *, imported: Sequence[str], existing: Sequence[tuple[str, int]], step: int = RULE_POSITION_STEP
) -> dict[str, int]:
    """Positions for every rule after an import: unique, and the same for the same input.

    The imported rules come first, in the document's order (``step``, ``2 * step``...): the document
    being imported is the rule set the operator means now, so a rule it does not name (a stale
    ``^Linphone`` from an earlier import, one added by hand) must not beat one it does. The other
    ``existing`` rules (name, current position) follow in their current order, position then name,
    numbered on. A name listed twice keeps its first place. Matching takes the first rule that
    matches (rule_match), in position order: ties, which the name then broke, cannot happen."""
    positions: dict[str, int] = {}
    for name in imported:
        positions.setdefault(name, (len(positions) + 1) * step)
    for name, _ in sorted(existing, key=lambda pair: (pair[1], pair[0])):
        positions.setdefault(name, (len(positions) + 1) * step)
    return positions


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
# more than the search (~300 µs): the consumer's registration lanes ask this cache first. The GIL
# stays released on purpose: a rule that backtracks until its timeout then holds up no other thread
# (concurrent=False would stall the push lane for the whole timeout). Longer
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
    That includes a parameter the rule reads that the parser skipped as malformed; other
    malformed parameters are only listed in ``skipped_params`` (and logged).
    The Contact is parsed only once a rule matched, so trunks and desk phones with odd Contacts
    are ignored quietly, as in Kazoo. On un-REGISTER ``push`` is None but ``tokens`` still lists
    what the Contact carried, so the caller can retire those tokens (Kazoo never did, §9.2).
    A token push_token_problem refuses gives no push and no tokens, and a "token refused" reason.
    """
    account_id = _id_field(fields, "Account-ID")
    device_id = _id_field(fields, "Authorizing-ID")
    user_agent = fields.get("User-Agent")
    rule = rule_match(rules, user_agent if isinstance(user_agent, str) else None, timeout=regex_timeout)

    family = ""
    skipped: tuple[str, ...] = ()

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
            family=family,
            skipped_params=skipped,
        )

    if rule is None:
        return result(REASON_NO_RULE)
    contact_value = fields.get("Contact")
    if contact_value is None:
        raise ContactParseError("reg_success has no Contact")
    contacts = parse_contacts(contact_value)
    skipped = tuple(f"{name} ({problem})" for contact in contacts for name, problem in contact.skipped)

    # A Kazoo entry stored without "properties" behaves as {}.
    properties = dict(rule.properties or {})
    # Kazoo forces this mapping: Kamailio's pusher role needs the registrar that holds the
    # registration (fs_path), whatever the operator configured.
    properties["Token-Proxy"] = "Proxy-Path"
    token_source = properties.get("Token-ID")
    unregister = is_unregister(fields)
    if not isinstance(token_source, str) or not token_source:
        return result(REASON_UNREGISTER if unregister else REASON_NO_TOKEN_PROPERTY)

    own = rule_family(properties)
    other = FAMILY_LEGACY if own == FAMILY_RFC8599 else FAMILY_RFC8599
    push, tokens = _build_from_contacts(rule.name, properties, contacts, fields)
    if push is not None:
        family = own
    else:
        push, tokens = _build_from_contacts(rule.name, family_properties(properties, other), contacts, fields)
        family = other if push is not None else ""
    if skipped:
        logger.info("User-Agent rule %r: malformed Contact parameter(s) skipped: %s", rule.name, ", ".join(skipped))
    # Which names gave the token, when they are not the ones the rule names.
    note = "" if family in ("", own) else (
        f" (token read by the {family} parameter names {'/'.join(FAMILY_SOURCES[family].values())}; "
        f"the rule names {own} ones)"
    )

    if push is not None:
        problem = _tokens_problem(tokens)
        if problem is not None:
            return result(f"{REASON_TOKEN_REFUSED}: rule {rule.name!r}: {problem}{note}")
    if unregister:
        return result(REASON_UNREGISTER + note, tokens=tuple(tokens))
    if push is None:
        return result(REASON_NO_TOKEN)
    if account_id is None or device_id is None:
        return result(REASON_NO_IDS + note, tokens=tuple(tokens))
    return result(REASON_OK + note, push=push, tokens=tuple(tokens))


def rule_family(properties: Mapping[str, Any]) -> str:
    """The naming family a rule's properties are in: RFC 8599 when its Token-ID is ``pn-prid``,
    legacy otherwise (Kazoo's ``pn-tok`` or any name of the operator's)."""
    source = properties.get("Token-ID")
    return FAMILY_RFC8599 if isinstance(source, str) and source.lower() == PN_PRID else FAMILY_LEGACY


def family_properties(properties: Mapping[str, str], family: str) -> dict[str, str]:
    """The rule's properties reading Token-ID, and Token-Type / Token-App where the rule maps
    them, from ``family``'s parameters (FAMILY_SOURCES); every other key keeps its source."""
    out = dict(properties)
    for key, source in FAMILY_SOURCES[family].items():
        if key == "Token-ID" or key in properties:
            out[key] = source
    return out


def _build_from_contacts(
    rule_name: str, properties: Mapping[str, str], contacts: Sequence[Contact], fields: Mapping[str, Any]
) -> tuple[dict[str, str] | None, list[TokenInfo]]:
    """The push object from the first Contact that carries a token (by ``properties``) and the
    tokens of all of them. Raises ContactParseError if a parameter the rule reads was malformed."""
    token_source = properties["Token-ID"]
    sources = [source.lower() for source in properties.values() if isinstance(source, str)]
    push: dict[str, str] | None = None
    tokens: list[TokenInfo] = []
    for contact in contacts:
        for source in sources:
            problem = contact.skipped_problem(source)
            if problem is not None:
                raise ContactParseError(
                    f"Contact parameter {source!r}, which User-Agent rule {rule_name!r} reads, is malformed ({problem})"
                )
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
    return push, tokens


def push_token_problem(token: str, token_type: str = "") -> str | None:
    """What makes ``token`` unfit to store for a ``token_type`` provider, or None if it is fit.

    Whatever the provider: no whitespace or control/format characters, 1 to TOKEN_MAX_CHARS
    characters. APNs (APNS_TOKEN_TYPES): hex digits, an even count from 64 to 200. FCM
    (FCM_TOKEN_TYPES): letters, digits and FCM_TOKEN_CHARS. Any other non-empty type is refused:
    stored, it would replace a device's working push object with one no push can go to (an empty
    ``token_type``, the type not known yet, is checked for the rest only). The token itself is
    never quoted back: the reason goes to logs and dead-letter headers."""
    if not token:
        return "token is empty"
    if not (token.isascii() and token.isprintable() and " " not in token):
        for offset, char in enumerate(token):
            category = unicodedata.category(char)
            if char.isspace() or category[0] == "Z":
                return f"token holds whitespace (U+{ord(char):04X} at offset {offset})"
            if category[0] == "C":
                return f"token holds a control or format character (U+{ord(char):04X} at offset {offset})"
    if len(token) > TOKEN_MAX_CHARS:
        return f"token is {len(token)} characters, more than {TOKEN_MAX_CHARS}"
    kind = token_type.lower()
    if kind in APNS_TOKEN_TYPES:
        what = f"APNs device token (Token-Type {token_type!r})"
        if not _HEX.fullmatch(token):
            offset = next(i for i, c in enumerate(token) if c not in "0123456789abcdefABCDEF")
            return f"{what} must be hex digits: {_shown(token[offset])} at offset {offset}"
        if not APNS_TOKEN_MIN_HEX <= len(token) <= APNS_TOKEN_MAX_HEX or len(token) % 2:
            return (
                f"{what} must be an even number of hex digits from {APNS_TOKEN_MIN_HEX} to {APNS_TOKEN_MAX_HEX}: "
                f"it has {len(token)}"
            )
    elif kind in FCM_TOKEN_TYPES:
        if not _FCM_TOKEN.fullmatch(token):
            offset = next(
                i for i, c in enumerate(token) if not (c.isascii() and c.isalnum()) and c not in FCM_TOKEN_CHARS
            )
            return (
                f"FCM registration token (Token-Type {token_type!r}) must be letters, digits and {FCM_TOKEN_CHARS}: "
                f"{_shown(token[offset])} at offset {offset}"
            )
    elif kind:
        return f"Token-Type {token_type[:32]!r} is none pusher can push to ({PUSHABLE_TOKEN_TYPES_TEXT})"
    return None


def _shown(char: str) -> str:
    return repr(char) if char.isascii() else f"U+{ord(char):04X}"


def _tokens_problem(tokens: Sequence[TokenInfo]) -> str | None:
    """The first token of the registration that cannot be stored; which one, when there are several."""
    for info in tokens:
        problem = push_token_problem(info.token, info.type)
        if problem is not None:
            return f"{info.kind} {problem}" if info.kind and len(tokens) > 1 else problem
    return None


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
            value, sandbox = token_type_decode(value)
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


def token_type_decode(value: str) -> tuple[str, bool]:
    """(Token-Type, sandbox) from a provider name: RFC 8599's "apns"/"apns.dev"/"fcm" become
    the "apple"/"firebase" Kazoo's push path and Kamailio speak; Kazoo's aliases (apple, firebase,
    google, android) pass through for the push path."""
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


def is_unregister(fields: Mapping[str, Any]) -> bool:
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
