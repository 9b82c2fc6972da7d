"""User-Agent rules' writes (admin, API, the Kazoo config import): each checked as the consumer will
use it, and every process's rule cache told."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from core.errors import RuleError
from registry import selectors
from registry.models import UserAgentRule

log = logging.getLogger(__name__)


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
    # Anything else (null, a list) is the model's to refuse, with the other faces' message.
    rule = UserAgentRule(
        name=name, regex=regex, properties=dict(properties) if isinstance(properties, Mapping) else properties,
        position=position, enabled=enabled,
        description=description,
    )
    _rule_check(rule)
    rule.save()
    selectors.rules_cache_clear_now_and_on_commit()
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
    selectors.rules_cache_clear_now_and_on_commit()
    log.info("User-Agent rule %r updated (%s)", rule.name, ", ".join(sorted(changes)))
    return rule


@transaction.atomic
def user_agent_rule_delete(*, rule: UserAgentRule) -> None:
    name = rule.name
    rule.delete()
    selectors.rules_cache_clear_now_and_on_commit()
    log.info("User-Agent rule %r deleted", name)
