"""Test a User-Agent and Contact against the rules as a reg_success would be (the admin's page and
`match_user_agent`): shaped like Kamailio's reg_success, with placeholder ids."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kazoo.config import CCVS, PLACEHOLDER_ACCOUNT_ID, PLACEHOLDER_AUTHORIZING_ID
from registry import selectors
from registry.pushobject import TokenInfo
from registry.services import registration_match


@dataclass(frozen=True)
class UserAgentTest:
    """What a registration with this User-Agent and Contact would do (the consumer's own matcher)."""

    rule: str | None
    push: dict[str, str] | None
    tokens: tuple[TokenInfo, ...]
    reason: str
    fields: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "push": self.push,
            "tokens": [{"token": t.token, "type": t.type, "app": t.app, "kind": t.kind} for t in self.tokens],
            "reason": self.reason,
        }


def user_agent_test(*, user_agent: str, contact: str, fields: Mapping[str, Any] | None = None) -> UserAgentTest:
    """Run a User-Agent and Contact through the enabled rules exactly as a reg_success would be
    (registry.services.registration_match, the consumer's matcher), with today's rules: an operator
    testing the rule they just saved must not be served the cached set.

    `fields` are more reg_success fields (e.g. `Proxy-Path`, the source of Token-Proxy, or
    `Custom-Channel-Vars`). When Account-ID / Authorizing-ID are given neither in the CCVs nor at
    the top level, placeholders are put in the CCVs: Kazoo needs both to write a push object, and
    the tester should show the object the rule builds. Raises ContactParseError (a PusherError)
    for a Contact that does not parse."""
    reg: dict[str, Any] = dict(fields or {})
    ccvs = dict(reg[CCVS]) if isinstance(reg.get(CCVS), Mapping) else {}
    for name, placeholder in (("Account-ID", PLACEHOLDER_ACCOUNT_ID), ("Authorizing-ID", PLACEHOLDER_AUTHORIZING_ID)):
        if not ccvs.get(name) and not reg.get(name):
            ccvs[name] = placeholder
    reg[CCVS] = ccvs
    reg["User-Agent"] = user_agent
    reg["Contact"] = contact
    # A bad Contact: ContactParseError, already saying so.
    build = registration_match(fields=reg, rules=selectors.user_agent_rules_enabled(fresh=True))
    return UserAgentTest(rule=build.rule, push=build.push, tokens=build.tokens, reason=build.reason, fields=reg)
