"""Property-based fuzzing of what the consumer does with a message and of the Contact parser.

The contract: `message_process` either handles a message (ack) or raises BadMessage, which the
consumer dead-letters with the reason. Any other exception is a bug (the worker survives it, but
dead-letters the message as an "internal error" without a reason an operator can act on, and a
half-applied write could be left behind). Runs on the real test database: PostgreSQL refuses
values SQLite stores, so run it on both.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pusher_site.errors import BadMessage, ContactParseError
from pusher_site.messages import Handled, RawMessage, message_process
from registry.models import UserAgentRule
from registry.sip import parse_contacts
from tests.reliability import strategies as s

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
PURE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def handle(body: bytes, content_type: str | None = "application/json", content_encoding: str | None = None,
           exchange: str = "") -> Handled | None:
    """message_process in a savepoint, as the consumer runs it; None when it was a BadMessage."""
    message = RawMessage(body=body, content_type=content_type, content_encoding=content_encoding,
                         exchange=exchange, routing_key="fuzz", received_at=time.time())
    try:
        with transaction.atomic():
            return message_process(message)
    except BadMessage as exc:
        assert exc.message, "a dead-lettered message needs a reason (x-pusher-reason)"
        return None


# --- the Contact parser (pure) ----------------------------------------------------------------------


@PURE
@given(value=st.one_of(s.hostile_text(), s.contact_headers(), s.json_values()))
def test_contact_parser_raises_only_contact_parse_error(value: Any) -> None:
    try:
        contacts = parse_contacts(value)
    except ContactParseError as exc:
        assert exc.message
        return
    assert contacts and all(c.is_star or c.scheme for c in contacts)


# --- whole messages -----------------------------------------------------------------------------------


@FUZZ
@given(message=s.bad_bodies(django_settings.PUSHER_MAX_MESSAGE_BYTES))
def test_broken_bodies_are_bad_messages(message: tuple[bytes, str | None, str | None]) -> None:
    body, content_type, content_encoding = message
    handle(body, content_type, content_encoding)


@FUZZ
@given(
    fields=st.dictionaries(s.hostile_text(), s.json_values(), max_size=6),
    event=st.sampled_from([None, ("directory", "reg_success"), ("notification", "push_req")]),
)
def test_arbitrary_json_objects(rules: None, fields: dict[str, Any], event: tuple[str, str] | None) -> None:
    if event is not None:
        fields["Event-Category"], fields["Event-Name"] = event
    handle(s.encode(fields))


@FUZZ
@given(fields=s.reg_success_fields())
def test_reg_success_with_wrong_types_and_hostile_contacts(rules: None, fields: dict[str, Any]) -> None:
    handle(s.encode(fields), exchange="registrar")


@FUZZ
@given(fields=s.push_req_fields())
def test_push_req_with_wrong_types(apple_app: Any, firebase_app: Any, fields: dict[str, Any]) -> None:
    handle(s.encode(fields), exchange="pushes")


def deep_body(fields: dict[str, Any], key: str, depth: int) -> bytes:
    """`fields` as JSON with `key` replaced by a list tower `depth` levels deep (written as bytes:
    json.dumps itself cannot go that deep)."""
    marker = "__deep__"
    return s.encode({**fields, key: marker}).replace(f'"{marker}"'.encode(), b"[" * depth + b"]" * depth)


@pytest.mark.parametrize("depth", [100, 900, 990, 100_000])
def test_deeply_nested_field_in_every_field(rules: None, apple_app: Any, depth: int) -> None:
    for template in (s.REG, s.PUSH):
        for key in sorted(template):
            fields = {**template, "Msg-ID": f"deep-{key}-{depth}"}
            handle(deep_body(fields, key, depth))


def test_gzip_bomb_and_oversized_body_are_refused_with_their_reason(settings: Any) -> None:
    limit = settings.PUSHER_MAX_MESSAGE_BYTES
    bomb = s.gzip_bomb(limit)
    assert len(bomb) < 8 * 1024
    for body, encoding, words in (
        (bomb, "gzip", "inflates beyond"),
        (bomb, None, "inflates beyond"),  # gzip magic without the header: still bounded
        (b" " * (limit + 1), None, "exceeds"),
    ):
        with pytest.raises(BadMessage, match=words):
            message_process(RawMessage(body=body, content_encoding=encoding))


# --- hostile User-Agent rules ---------------------------------------------------------------------------

HOSTILE_RULES = [
    ("nested alternation", r"^(a|aa)+$", "a" * 40 + "!"),
    ("nested quantifier", r"(x+x+)+y", "x" * 40),
    ("overlapping groups", r"^(\w+\s?)*$", "word " * 12 + "!"),
]


@pytest.mark.parametrize("name, regex, user_agent", HOSTILE_RULES, ids=[r[0] for r in HOSTILE_RULES])
def test_hostile_user_agent_rule_cannot_stall_a_registration(rules: None, name: str, regex: str,
                                                             user_agent: str) -> None:
    UserAgentRule.objects.create(name=name, position=1, regex=regex, properties={"Token-ID": "pn-tok"})
    fields = {**s.REG, "User-Agent": user_agent}
    started = time.perf_counter()
    handled = handle(s.encode(fields), exchange="registrar")
    elapsed = time.perf_counter() - started
    print(f"hostile rule {regex!r} against a {len(user_agent)}-char User-Agent: handled in {elapsed * 1000:.0f} ms")
    # Generous: the matcher gives a rule 50 ms, the rest of the path a few ms; only a stall fails this.
    assert elapsed < 2.0
    # The hostile rule counts as no match; the next rule (".") still applies.
    assert handled is not None and handled.event == "reg_success"
