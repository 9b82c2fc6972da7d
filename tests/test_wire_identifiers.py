"""Msg-ID, the identifier every Kazoo message carries, is a string (Kazoo's API checks it is a
binary; Kamailio always sends one): any other value is refused at decoding, for every event, and
never shown as Python's repr of it in a log line."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInput
from kazoo.wire import Action, RawMessage, message_decode, message_peek, message_process_batch
from tests.fixtures import sample

REG = sample("reg_success_kamailio_master.json")["body"]


@pytest.mark.parametrize(("value", "kind"), [({"a": 1}, "an object"), (["m"], "a list"), (True, "a boolean"),
                                             (7, "a number")])
def test_a_msg_id_that_is_no_string_is_refused(value, kind) -> None:
    body = json.dumps({**REG, "Msg-ID": value}).encode()
    with pytest.raises(InvalidInput, match=f"^Msg-ID must be a string, not {kind}$"):
        message_decode(RawMessage(body=body))
    assert message_peek(body) == ("reg_success", "")  # not "{'a': 1}" in the dead-letter line


@pytest.mark.django_db
def test_a_reg_success_with_an_object_msg_id_is_dead_lettered_alone(acme_rule) -> None:
    bad = RawMessage(body=json.dumps({**REG, "Msg-ID": {"a": 1}}).encode())
    good = RawMessage(body=json.dumps(REG).encode())
    refused, handled = message_process_batch([bad, good])
    assert (refused.action, refused.reason, refused.msg_id) == (
        Action.DEAD_LETTER, "Msg-ID must be a string, not an object", "")
    assert handled.action is Action.ACK and handled.outcome == "created"


def test_a_missing_or_null_msg_id_is_no_problem() -> None:
    for body in ({k: v for k, v in REG.items() if k != "Msg-ID"}, {**REG, "Msg-ID": None}):
        assert message_decode(RawMessage(body=json.dumps(body).encode()))["Event-Name"] == "reg_success"
