"""Hypothesis strategies for hostile bus messages: what a broken template, a buggy client or an
attacker with a SIP account can make Kamailio publish, and what a confused publisher can put on
the bus directly.

Each strategy starts from the real Kamailio samples and breaks them a little (a field of the
wrong type, a huge or deeply nested value, a hostile Contact), so the handler gets past its
first checks and the deep paths (rule matching, Contact parsing, database writes, payload
building) see the bad values too.
"""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any

from hypothesis import strategies as st

from tests.fixtures import sample

REG = sample("reg_success_kamailio_master.json")["body"]
PUSH = sample("push_req_kamailio_master.json")["body"]
CCV_KEYS = sorted(REG["Custom-Channel-Vars"])
# The sample's fields plus the optional ones of each API (PROTOCOL §3, §4) that the samples lack.
REG_KEYS = sorted({*REG, "Account-ID", "Authorizing-ID", "AOR", "Original-Contact", "RUID", "Status"})
PUSH_KEYS = sorted({*PUSH, "Expires", "Account-ID", "Endpoint-ID", "Badge", "Alert", "Alert-Body", "Token-Reg",
                    "Queue"})
APNS_TOKEN = PUSH["Token-ID"]
APPLE_APP_ID = "com.acme.phone.voip.prod"
FIREBASE_APP_ID = "com.acme.phone"

# Every character, surrogates, NUL and controls included: JSON can carry them all (\ud800, \u0000).
ANY_CHAR = st.characters(exclude_categories=())
SPECIAL_TEXT = (
    "", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\r\n", "\t", "%00", "%ff", "%C3%A9", "*", "#", ".",
    "é", "😀", "\u202e", "\ufeff", "null", "[]", "{}", "NaN", "-1", "0", "1e400", "<>", '"', "\\",
)


def repeated(chars: tuple[str, ...] = ("a", "f", "é", "😀", ":")) -> st.SearchStrategy[str]:
    """Long strings, just past the sizes the models and parsers care about."""
    return st.builds(
        lambda char, size: char * size,
        st.sampled_from(chars),
        st.sampled_from([33, 64, 65, 201, 256, 501, 1025, 5000, 9000, 70_000]),
    )


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(st.text(ANY_CHAR, max_size=30), st.sampled_from(SPECIAL_TEXT), repeated())


def json_values() -> st.SearchStrategy[Any]:
    """Anything JSON can hold, shallow (deep towers are table-driven in test_fuzz: Hypothesis's own
    example printer recurses and cannot show a 900-level value)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([2**63, -(2**63) - 1, 10**20, 10**300, 2**31, -1, 0]),
        st.floats(allow_nan=True, allow_infinity=True),
        hostile_text(),
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text(), children, max_size=4),
        max_leaves=12,
    )


# --- Contacts -------------------------------------------------------------------------------------

TOKEN_CHARS = "abcdef0123456789ABCDEF-_.:~%+!*'`"
param_values = st.one_of(
    st.text(st.sampled_from(TOKEN_CHARS), max_size=40),
    st.sampled_from(["", "%00", "%0d%0a", "%ff%fe", "%C3%A9", "%", "%zz", '"quoted ; , value"', '"', "a=b"]),
    repeated(("a", "f", "%41")),
    hostile_text(),
)


@st.composite
def contact_headers(draw: st.DrawFn) -> str:
    """A Contact shaped like a real REGISTER's, with hostile parameter values (legacy Kazoo params
    and RFC 8599 / Linphone ones), sometimes several elements, sometimes garbage around it."""
    user = draw(st.sampled_from(["user_k3j4h5", "", "a b", "%00", "+15551234567"]) | param_values)
    host = draw(st.sampled_from(["192.0.2.44", "[2001:db8::1]", "example.com", "", "[::", "-"]))
    port = draw(st.sampled_from(["", ":52311", ":0", ":65536", ":x", ":" + "9" * 30]))
    if draw(st.booleans()):
        params = {"pn-tok": draw(param_values), "pn-type": draw(param_values), "app-id": draw(param_values)}
    else:
        params = {
            "pn-provider": draw(st.sampled_from(["apns", "apns.dev", "fcm"]) | param_values),
            "pn-prid": draw(param_values) + draw(st.sampled_from(["", ":voip", ":remote", "&x:voip", "&:"])),
            "pn-param": draw(st.sampled_from(["ABCD1234.com.acme.phone.voip&remote", ""]) | param_values),
        }
    uri_params = "".join(f";{name}={value}" for name, value in params.items())
    header = f"<sip:{user}@{host}{port}{uri_params}>" + draw(
        st.sampled_from(["", ";expires=600", ';+sip.instance="<urn:uuid:x>"', ";q=0.5;;", ">", ";<"])
    )
    if draw(st.booleans()):
        header = draw(st.sampled_from(["", '"Name" ', "Bob ", '"unbalanced '])) + header
    if draw(st.booleans()):
        header = header + ", " + draw(st.sampled_from(["<sip:other@192.0.2.45>", "*", "", "<", "sip:x@y"]))
    return header


# --- Message bodies -------------------------------------------------------------------------------


@st.composite
def reg_success_fields(draw: st.DrawFn) -> dict[str, Any]:
    """The Kamailio sample with some fields replaced by anything JSON can hold."""
    body = copy.deepcopy(REG)
    body.update(draw(st.dictionaries(st.sampled_from(REG_KEYS), json_values(), max_size=5)))
    if draw(st.booleans()):
        body["Contact"] = draw(contact_headers())
    if draw(st.booleans()):
        body["User-Agent"] = draw(st.sampled_from(["Linphone/5.2 (iPhone)", "AcmePhone iOS 3.2.1"]))
    ccvs = body.get("Custom-Channel-Vars")
    if isinstance(ccvs, dict) and draw(st.booleans()):
        ccvs.update(draw(st.dictionaries(st.sampled_from(CCV_KEYS), json_values(), max_size=3)))
    return body


@st.composite
def push_req_fields(draw: st.DrawFn) -> dict[str, Any]:
    """The Kamailio sample with some fields replaced; the Msg-ID stays unique unless replaced too."""
    body = copy.deepcopy(PUSH)
    body["Msg-ID"] = draw(st.uuids()).hex
    body.update(draw(st.dictionaries(st.sampled_from(PUSH_KEYS), json_values(), max_size=5)))
    if draw(st.booleans()):
        # A known type and app, so the bad values reach the provider requests too.
        body["Token-Type"], body["Token-App"] = draw(st.sampled_from([
            ("apple", APPLE_APP_ID), ("firebase", FIREBASE_APP_ID), ("fcm", FIREBASE_APP_ID), ("blackberry", "x"),
        ]))
    return body


def encode(fields: Any) -> bytes:
    # allow_nan: Python's json (the consumer's decoder) reads NaN/Infinity, so a publisher may send them.
    return json.dumps(fields, allow_nan=True).encode()


def gzip_bomb(limit: int) -> bytes:
    """A few KB of gzip that inflates past `limit` (JSON-looking, so only the size check stops it)."""
    return gzip.compress(b'{"Event-Name": "' + b"A" * (limit * 4) + b'"}', compresslevel=9)


def bad_bodies(limit: int) -> st.SearchStrategy[tuple[bytes, str | None, str | None]]:
    """(body, content_type, content_encoding) of messages that are broken as a whole."""
    return st.one_of(
        st.tuples(st.binary(max_size=200), st.just("application/json"), st.none()),
        st.tuples(
            st.sampled_from([
                b"", b"{", b"\xff\xfe{}", b'{"Event-Name": "\xc3\x28"}', b"\xef\xbb\xbf{}", b"null", b"[]",
                b'"a string"', b"1e999999", b"NaN", b"{" * 100_000, b"[" * 5_000 + b"]" * 5_000,
                b"1" * 5000, b'{"a": 1' + b"1" * 5000 + b"}", b'{"Event-Name": "\\ud800"}',
            ]),
            st.just("application/json"),
            st.none(),
        ),
        st.tuples(st.just(gzip_bomb(limit)), st.just("application/json"), st.sampled_from(["gzip", None])),
        st.tuples(st.just(b" " * (limit + 1)), st.just("application/json"), st.none()),
        st.tuples(st.just(gzip.compress(b"[1,2]")[:-4]), st.just("application/json"), st.just("gzip")),
        st.tuples(st.just(b"{}"), st.just("application/json"), st.just("gzip")),
        st.tuples(st.just(encode(REG)), hostile_text() | st.none(), hostile_text() | st.none()),
    )
