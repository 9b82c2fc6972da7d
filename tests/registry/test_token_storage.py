"""What reaches the database from a reg_success: never a token with whitespace or control
characters (issue 14), whatever the client put in its Contact. The pure build is fuzzed harder in
test_pushobject; this runs the registration service against the real database."""

from __future__ import annotations

import copy
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from registry.models import Device, PushToken
from registry.services import RegistrationResult, registration_apply_batch
from tests.fixtures import sample

REG = sample("reg_success_kamailio_master.json")["body"]
SAMPLE_TOKEN = "5e0f4c3a9b8d7e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
FCM_TOKEN = "fHk3-Qz_R2e:APA91bGx7Yq2-kL9_mN0pQrStUvWxYz0123456789-abcDEF_ghiJKL"
SPOILERS = " \t\u00a0\u2028\u200b\u202e\ufeff\x85\u3000"


def _storable(text: str) -> bool:
    return not any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in text)


def _percent_encode(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.~:") else
                   "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in text)


TOKENS = st.one_of(
    st.text(st.characters(codec=None), max_size=70),
    st.builds(lambda head, bad, tail: head + bad + tail, st.sampled_from([SAMPLE_TOKEN, FCM_TOKEN, ""]),
              st.text(st.sampled_from(SPOILERS), min_size=1, max_size=2), st.sampled_from(["", "ab", SAMPLE_TOKEN])),
    st.sampled_from([SAMPLE_TOKEN, FCM_TOKEN]),
)


@pytest.mark.django_db
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tokens=st.lists(st.tuples(TOKENS, st.sampled_from(["apple", "firebase", "webpush"]), st.booleans()),
                    min_size=1, max_size=4),
)
def test_no_stored_token_holds_whitespace_or_control_characters(acme_rule: Any, tokens: list[Any]) -> None:
    bodies: list[dict[str, Any]] = []
    for index, (token, token_type, quoted) in enumerate(tokens):
        body = copy.deepcopy(REG)
        contact = body["Contact"].replace("pn-type=apple", f"pn-type={token_type}")
        if quoted:
            escaped = token.replace("\\", "\\\\").replace('"', '\\"')
            contact = contact.replace(f";pn-tok={SAMPLE_TOKEN}", "") + f';pn-tok="{escaped}"'
        else:
            contact = contact.replace(SAMPLE_TOKEN, _percent_encode(token))
        body["Contact"] = contact
        body["Custom-Channel-Vars"]["Authorizing-ID"] = f"device-{index}"
        bodies.append(body)

    results = registration_apply_batch(fields=bodies)

    for result in results:
        event(result.outcome if isinstance(result, RegistrationResult) else "dead-lettered")
        if isinstance(result, RegistrationResult) and result.outcome == "ignored":
            assert not result.reason.startswith("ok")
    for stored in PushToken.objects.values_list("token", flat=True):
        assert _storable(stored), stored
    for push in Device.objects.exclude(push=None).values_list("push", flat=True):
        assert _storable(push["Token-ID"]), push
