"""Table-driven tests for registry.sip (pure: no database, no Django needed).

Contacts are modelled on what real clients put in REGISTER (Kazoo/Kamailio sample, Linphone
legacy and RFC 8599, Cisco/Polycom/Snom/Yealink desk phones, CounterPath-style softphones);
identifiers and tokens are made up.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ContactParseError
from registry.sip import Contact, amqp_encode, parse_contacts, percent_decode

APNS_HEX = "5e0f4c3a9b8d7e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
APNS_HEX_2 = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
FCM_TOKEN = "fHk3-Qz_R2e:APA91bGx7Yq2-kL9_mN0pQrStUvWxYz0123456789-abcDEF_ghiJKL"
UUID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"

KAZOO_SAMPLE_CONTACT = (
    "<sip:user_k3j4h5@192.0.2.44:52311;transport=udp;app-id=com.acme.phone.voip.prod;"
    f'pn-tok={APNS_HEX};pn-type=apple>;expires=600;+sip.instance="<urn:uuid:{UUID}>"'
)


def summary(contact: Contact, keys: set[str]) -> dict[str, Any]:
    full = {
        "display_name": contact.display_name,
        "uri": contact.uri,
        "scheme": contact.scheme,
        "user": contact.user,
        "host": contact.host,
        "port": contact.port,
        "uri_params": contact.uri_params,
        "header_params": contact.header_params,
        "is_star": contact.is_star,
    }
    return {key: full[key] for key in keys}


# (id, header value, expected contacts: each a dict of the attributes that matter for the case)
VALID_CASES: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "kazoo-sample-master",
        KAZOO_SAMPLE_CONTACT,
        [
            {
                "display_name": None,
                "scheme": "sip",
                "user": "user_k3j4h5",
                "host": "192.0.2.44",
                "port": 52311,
                "uri_params": (
                    ("transport", "udp"),
                    ("app-id", "com.acme.phone.voip.prod"),
                    ("pn-tok", APNS_HEX),
                    ("pn-type", "apple"),
                ),
                "header_params": (("expires", "600"), ("+sip.instance", f"<urn:uuid:{UUID}>")),
                "is_star": False,
            }
        ],
    ),
    (
        "linphone-legacy-ios",
        (
            "<sip:alice@198.51.100.20:5060;transport=tls;app-id=org.linphone.phone.voip.prod;pn-type=apple;"
            f"pn-tok={APNS_HEX};pn-msg-str=IM_MSG;pn-call-str=IC_MSG;pn-groupchat-str=GC_MSG;"
            "pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf;pn-silent=1;pn-timeout=0>"
            f';+sip.instance="<urn:uuid:{UUID}>"'
        ),
        [
            {
                "user": "alice",
                "port": 5060,
                "uri_params": (
                    ("transport", "tls"),
                    ("app-id", "org.linphone.phone.voip.prod"),
                    ("pn-type", "apple"),
                    ("pn-tok", APNS_HEX),
                    ("pn-msg-str", "IM_MSG"),
                    ("pn-call-str", "IC_MSG"),
                    ("pn-groupchat-str", "GC_MSG"),
                    ("pn-call-snd", "notes_of_the_optimistic.caf"),
                    ("pn-msg-snd", "msg.caf"),
                    ("pn-silent", "1"),
                    ("pn-timeout", "0"),
                ),
            }
        ],
    ),
    (
        "linphone-rfc8599-ios-specs-with-commas",
        (
            "<sip:alice@198.51.100.20:52000;transport=tls;pn-provider=apns;"
            f"pn-prid={APNS_HEX}:voip&{APNS_HEX_2}:remote;pn-param=ABCD1234.org.linphone.phone.voip&remote>"
            f';+sip.instance="<urn:uuid:{UUID}>";'
            '+org.linphone.specs="conference/1.0,ephemeral/1.1,groupchat/1.1,lime"'
        ),
        [
            {
                "uri_params": (
                    ("transport", "tls"),
                    ("pn-provider", "apns"),
                    ("pn-prid", f"{APNS_HEX}:voip&{APNS_HEX_2}:remote"),
                    ("pn-param", "ABCD1234.org.linphone.phone.voip&remote"),
                ),
                "header_params": (
                    ("+sip.instance", f"<urn:uuid:{UUID}>"),
                    ("+org.linphone.specs", "conference/1.0,ephemeral/1.1,groupchat/1.1,lime"),
                ),
            }
        ],
    ),
    (
        "linphone-rfc8599-android-fcm-token",
        (
            f"<sip:bob@203.0.113.9:41234;transport=tcp;pn-provider=fcm;pn-prid={FCM_TOKEN};"
            "pn-param=929724111839>"
        ),
        [
            {
                "user": "bob",
                "uri_params": (
                    ("transport", "tcp"),
                    ("pn-provider", "fcm"),
                    ("pn-prid", FCM_TOKEN),
                    ("pn-param", "929724111839"),
                ),
            }
        ],
    ),
    (
        "quoted-display-name-with-comma-angle-semicolon-escaped-quote",
        r'"Doe, John <ext. 12>; \"JD\"" <sip:1012@pbx.example.com>;expires=3600',
        [
            {
                "display_name": 'Doe, John <ext. 12>; "JD"',
                "user": "1012",
                "host": "pbx.example.com",
                "port": None,
                "header_params": (("expires", "3600"),),
            }
        ],
    ),
    (
        "bare-display-name-tokens-collapsed",
        "Alice   Smith <sip:alice@example.com>",
        [{"display_name": "Alice Smith", "uri": "sip:alice@example.com"}],
    ),
    (
        "bare-display-name-non-ascii",
        "Jörg Müller <sip:joerg@example.de>",
        [{"display_name": "Jörg Müller", "user": "joerg"}],
    ),
    (
        "empty-quoted-display-name",
        '"" <sip:anon@example.com>',
        [{"display_name": "", "user": "anon"}],
    ),
    (
        "addr-spec-params-are-uri-params-like-nklib",
        "sip:1001@192.0.2.10:5060;transport=udp;pn-tok=abc;expires=60",
        [
            {
                "display_name": None,
                "uri": "sip:1001@192.0.2.10:5060;transport=udp;pn-tok=abc;expires=60",
                "uri_params": (("transport", "udp"), ("pn-tok", "abc"), ("expires", "60")),
                "header_params": (),
            }
        ],
    ),
    (
        "addr-spec-with-quoted-instance-containing-angle",
        f'sip:1001@192.0.2.10;+sip.instance="<urn:uuid:{UUID}>"',
        [{"uri_params": (("+sip.instance", f"<urn:uuid:{UUID}>"),)}],
    ),
    (
        "three-contacts-mixed-forms",
        (
            '"Desk, Main" <sip:1001@192.0.2.10>;expires=60, sip:1001@192.0.2.11;ob ,'
            " Mobile <sip:1001@192.0.2.12;pn-tok=xyz>;q=0.5"
        ),
        [
            {"display_name": "Desk, Main", "host": "192.0.2.10", "header_params": (("expires", "60"),)},
            {"display_name": None, "host": "192.0.2.11", "uri_params": (("ob", None),)},
            {"display_name": "Mobile", "uri_params": (("pn-tok", "xyz"),), "header_params": (("q", "0.5"),)},
        ],
    ),
    (
        "empty-list-elements-tolerated",
        "<sip:a@192.0.2.1>, , <sip:b@192.0.2.2>,",
        [{"user": "a"}, {"user": "b"}],
    ),
    (
        "comma-inside-angle-brackets-does-not-split",
        "<sip:1001@192.0.2.1;x=a,b>",
        [{"uri_params": (("x", "a,b"),)}],
    ),
    (
        "ipv6-with-port",
        "<sip:1001@[2001:db8::1]:5060;transport=tcp>",
        [{"host": "[2001:db8::1]", "port": 5060, "uri_params": (("transport", "tcp"),)}],
    ),
    (
        "ipv6-without-port-no-user",
        "<sips:[2001:db8:85a3::8a2e:370:7334]>",
        [{"scheme": "sips", "user": None, "host": "[2001:db8:85a3::8a2e:370:7334]", "port": None}],
    ),
    (
        "param-names-lowercased-values-kept",
        "<sip:1001@192.0.2.1;PN-Tok=AbCdEf;App-ID=Com.Acme.App>;Expires=60",
        [
            {
                "uri_params": (("pn-tok", "AbCdEf"), ("app-id", "Com.Acme.App")),
                "header_params": (("expires", "60"),),
            }
        ],
    ),
    (
        "percent-decoding-keeps-plus",
        "<sip:1001@192.0.2.1;pn-tok=ab%2Bcd+ef%3D%3D;app-id=com%2Eacme%2Ephone>",
        [{"uri_params": (("pn-tok", "ab+cd+ef=="), ("app-id", "com.acme.phone"))}],
    ),
    (
        "malformed-percent-kept-verbatim",
        "<sip:1001@192.0.2.1;a=100%;b=%zz1;c=%4;d=%41%>",
        [{"uri_params": (("a", "100%"), ("b", "%zz1"), ("c", "%4"), ("d", "A%"))}],
    ),
    (
        "percent-utf8-decoded-invalid-utf8-and-controls-kept",
        "<sip:1001@192.0.2.1;n=Jos%C3%A9;bad=%FF%FE;crlf=a%0D%0AVia:x>",
        [{"uri_params": (("n", "José"), ("bad", "%FF%FE"), ("crlf", "a%0D%0AVia:x"))}],
    ),
    (
        "percent-in-user-decoded",
        "<sip:%2B15551234567@192.0.2.1>",
        [{"user": "+15551234567", "uri": "sip:%2B15551234567@192.0.2.1"}],
    ),
    ("star", "*", [{"is_star": True, "uri": "*", "host": "", "uri_params": ()}]),
    ("star-with-whitespace", "  *\t", [{"is_star": True}]),
    (
        "line-folding-and-whitespace-around-params",
        '<sip:1001@192.0.2.1;transport=tcp>\r\n ; expires = 60 ;\r\n\t+sip.instance = "<urn:uuid:1>"',
        [{"header_params": (("expires", "60"), ("+sip.instance", "<urn:uuid:1>"))}],
    ),
    (
        "uri-headers-ignored",
        "<sip:1001@192.0.2.1;transport=tcp?Subject=hello&Priority=urgent>;expires=30",
        [
            {
                "uri": "sip:1001@192.0.2.1;transport=tcp?Subject=hello&Priority=urgent",
                "uri_params": (("transport", "tcp"),),
                "header_params": (("expires", "30"),),
            }
        ],
    ),
    (
        "headers-without-params",
        "<sip:1001@example.com?X-Foo=bar>",
        [{"host": "example.com", "uri_params": ()}],
    ),
    (
        "flags-kept-as-none",
        "<sip:1001@192.0.2.1;ob;lr>;reg-id=1;audio",
        [{"uri_params": (("ob", None), ("lr", None)), "header_params": (("reg-id", "1"), ("audio", None))}],
    ),
    (
        "scheme-lowercased",
        "<SIPS:Alice@Example.COM:5061>",
        [{"scheme": "sips", "user": "Alice", "host": "Example.COM", "port": 5061}],
    ),
    (
        "tel-uri",
        "<tel:+1-201-555-0123;phone-context=example.com>",
        [
            {
                "scheme": "tel",
                "user": "+1-201-555-0123",
                "host": "",
                "uri_params": (("phone-context", "example.com"),),
            }
        ],
    ),
    (
        "cisco-feature-tags-with-bang",
        (
            "<sip:6c9f2a1e-8b3d-4c5e-9f70-1a2b3c4d5e6f@10.20.30.40:51234;transport=tcp>;"
            '+sip.instance="<urn:uuid:00000000-0000-0000-0000-f8a5c5123456>";'
            '+u.sip!devicename.ccm.cisco.com="SEPF8A5C5123456";+u.sip!model.ccm.cisco.com="36670";video'
        ),
        [
            {
                "port": 51234,
                "header_params": (
                    ("+sip.instance", "<urn:uuid:00000000-0000-0000-0000-f8a5c5123456>"),
                    ("+u.sip!devicename.ccm.cisco.com", "SEPF8A5C5123456"),
                    ("+u.sip!model.ccm.cisco.com", "36670"),
                    ("video", None),
                ),
            }
        ],
    ),
    (
        "polycom-methods-quoted-with-commas",
        '<sip:1003@192.168.10.22;transport=tls>;methods="INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, MESSAGE"',
        [{"header_params": (("methods", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, MESSAGE"),)}],
    ),
    (
        "snom-line-and-feature-tags",
        (
            '<sip:1004@192.168.10.30:2048;transport=tls;line=kq7fz2x1>;reg-id=1;q=1.0;+sip.instance="<urn:uuid:'
            f'{UUID}>";audio;mobility="fixed";duplex="full";description="snom D785"'
        ),
        [
            {
                "uri_params": (("transport", "tls"), ("line", "kq7fz2x1")),
                "header_params": (
                    ("reg-id", "1"),
                    ("q", "1.0"),
                    ("+sip.instance", f"<urn:uuid:{UUID}>"),
                    ("audio", None),
                    ("mobility", "fixed"),
                    ("duplex", "full"),
                    ("description", "snom D785"),
                ),
            }
        ],
    ),
    (
        "counterpath-rinstance",
        "<sip:1001@198.51.100.8:5060;rinstance=0f1e2d3c4b5a6978;transport=TLS>",
        [{"uri_params": (("rinstance", "0f1e2d3c4b5a6978"), ("transport", "TLS"))}],
    ),
    (
        "stray-semicolons-ignored",
        "<sip:1001@192.0.2.1;;transport=udp;>;",
        [{"uri_params": (("transport", "udp"),), "header_params": ()}],
    ),
    (
        "password-dropped-from-user",
        "<sip:alice:secret@example.com>",
        [{"user": "alice", "host": "example.com"}],
    ),
    (
        "hostname-with-underscore-and-trailing-dot",
        "<sip:1001@edge_1.sip.example.com.:5080>",
        [{"host": "edge_1.sip.example.com.", "port": 5080}],
    ),
    (
        "user-with-semicolon-phone-context",
        "<sip:+15551234567;phone-context=example.com@gw.example.com;user=phone>",
        [{"user": "+15551234567;phone-context=example.com", "uri_params": (("user", "phone"),)}],
    ),
    (
        "quoted-header-param-with-semicolon-and-escaped-quote",
        r'<sip:1001@192.0.2.1>;x="a;b,c \"d\""',
        [{"header_params": (("x", 'a;b,c "d"'),)}],
    ),
]


@pytest.mark.parametrize(
    ("header", "expected"), [c[1:] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES]
)
def test_parse_contacts_valid(header: str, expected: list[dict[str, Any]]) -> None:
    contacts = parse_contacts(header)
    assert [summary(c, set(e)) for c, e in zip(contacts, expected, strict=False)] == expected
    assert len(contacts) == len(expected)


# (id, header value, fragment of the error message)
GARBAGE_CASES: list[tuple[str, Any, str]] = [
    ("empty", "", "empty"),
    ("only-whitespace", " \t\r\n ", "empty"),
    ("only-commas", " , ,", "empty"),
    ("none", None, "must be a string"),
    ("unbalanced-display-quote", '"Alice <sip:alice@example.com>', "unbalanced quote"),
    ("unbalanced-angle", "<sip:alice@example.com;transport=udp", "unbalanced '<'"),
    ("nested-angle", "<<sip:alice@example.com>>", "unbalanced '<'"),
    ("missing-host-after-at", "<sip:alice@>", "no host"),
    ("missing-host", "<sip:>", "no host"),
    ("missing-host-port-only", "<sip:alice@:5060>", "no host"),
    ("empty-angle", "<>", "empty URI"),
    ("no-scheme", "<alice@example.com>", "no scheme"),
    ("plain-words", "hello world", "no scheme"),
    ("nul-byte", "<sip:a@example.com>\x00", "non-printable"),
    ("bell-char", "<sip:a\x07@example.com>", "non-printable"),
    ("bare-cr-in-middle", "<sip:a@example.com>;x=1\r;y=2", "non-printable"),
    ("lone-surrogate", "<sip:a@example.com>;x=\ud800", "non-printable"),
    ("too-long", "<sip:a@example.com;x=" + "a" * 9000 + ">", "longer than 8192"),
    ("too-long-in-bytes", "<sip:a@example.com;x=" + "é" * 4100 + ">", "longer than 8192"),
    ("junk-after-angle", "<sip:a@example.com> junk", "unexpected 'j'"),
    ("two-contacts-no-comma", "<sip:a@example.com> <sip:b@example.com>", "unexpected '<'"),
    ("star-mixed", "*, <sip:a@example.com>", "must be alone"),
    ("star-after-contact", "<sip:a@example.com>, *", "must be alone"),
    ("port-not-numeric", "<sip:a@example.com:50x0>", "invalid port"),
    ("port-too-big", "<sip:a@example.com:99999>", "invalid port"),
    ("unbracketed-ipv6", "<sip:a@2001:db8::1>", "invalid port"),
    ("unclosed-ipv6", "<sip:a@[2001:db8::1>", "invalid IPv6"),
    ("bad-host-chars", "<sip:a@exa$mple.com>", "invalid host"),
    ("space-in-user", "<sip:al ice@example.com>", "whitespace in user"),
    # Liberal with a bad parameter, not with a header whose elements cannot be told apart:
    ("angle-value-never-closed", "<sip:a@example.com>;x=<urn:uuid:1", "unbalanced '<'"),
    ("missing-comma-after-a-param", "<sip:a@example.com>;expires=60 <sip:b@example.com>", "unexpected '<'"),
    ("unclosed-quote-runs-into-next-contact", '<sip:a@example.com>;x="abc, <sip:b@example.com>', "unexpected '<'"),
    ("bad-param-but-uri-host-bad", "<sip:a@exa$mple.com;pn-tok=abc>;foo bar=1", "invalid host"),
    ("quoted-name-without-angle", '"Alice" sip:alice@example.com', "not followed by '<'"),
    ("quote-inside-bare-name", 'Alice "x" <sip:alice@example.com>', "unexpected quote"),
    ("tel-without-number", "<tel:;phone-context=x>", "no number"),
]


@pytest.mark.parametrize(
    ("header", "fragment"), [c[1:] for c in GARBAGE_CASES], ids=[c[0] for c in GARBAGE_CASES]
)
def test_parse_contacts_garbage_raises(header: Any, fragment: str) -> None:
    with pytest.raises(ContactParseError) as excinfo:
        parse_contacts(header)
    assert fragment in str(excinfo.value)
    assert excinfo.value.code == "contact_unparsable"


# Real-client Contacts with one malformed parameter: the parameter is left out and named in
# `skipped` (with the problem), everything else is kept. Shapes after the clients' REGISTERs
# (Linphone's feature tags, CounterPath's rinstance, Acrobits' custom params, RFC 8599 params);
# the slips are the kinds seen in the wild (a cut quoted value, a bare-bracket instance id, a
# stray character in a name). (id, header value, expected attributes of the one Contact)
LENIENT_CASES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "unbalanced-param-quote",
        '<sip:a@example.com>;x="abc',
        {"header_params": (), "skipped": (("x", "unbalanced quote in value"),)},
    ),
    (
        "bad-param-name",
        "<sip:a@example.com>;foo bar=1;expires=60",
        {"header_params": (("expires", "60"),), "skipped": (("foo bar", "invalid parameter name"),)},
    ),
    (
        "text-after-quoted-value",
        '<sip:a@example.com>;x="a"b;expires=60',
        {"header_params": (("expires", "60"),), "skipped": (("x", "text after quoted value"),)},
    ),
    (
        "linphone-rfc8599-specs-cut-short-commas-stay-in-the-value",
        (
            f"<sip:alice@198.51.100.20:52000;transport=tls;pn-provider=apns;pn-prid={APNS_HEX}:voip;"
            f'pn-param=ABCD1234.org.linphone.phone.voip>;+sip.instance="<urn:uuid:{UUID}>";'
            '+org.linphone.specs="conference/1.0,ephemeral/1.1'
        ),
        {
            "uri_params": (
                ("transport", "tls"),
                ("pn-provider", "apns"),
                ("pn-prid", f"{APNS_HEX}:voip"),
                ("pn-param", "ABCD1234.org.linphone.phone.voip"),
            ),
            "header_params": (("+sip.instance", f"<urn:uuid:{UUID}>"),),
            "skipped": (("+org.linphone.specs", "unbalanced quote in value"),),
        },
    ),
    (
        "bria-style-instance-in-bare-angle-brackets",
        (
            "<sip:1001@198.51.100.8:5060;rinstance=0f1e2d3c4b5a6978;transport=tls;app-id=com.acme.phone.voip.prod;"
            f"pn-type=apple;pn-tok={APNS_HEX}>;+sip.instance=<urn:uuid:{UUID}>;reg-id=1"
        ),
        {
            "uri_params": (
                ("rinstance", "0f1e2d3c4b5a6978"),
                ("transport", "tls"),
                ("app-id", "com.acme.phone.voip.prod"),
                ("pn-type", "apple"),
                ("pn-tok", APNS_HEX),
            ),
            "header_params": (("reg-id", "1"),),
            "skipped": (("+sip.instance", "value in angle brackets without quotes"),),
        },
    ),
    (
        "groundwire-style-bad-name-inside-the-uri",
        (
            f"<sip:1001@198.51.100.30:5060;transport=tls;pn-tok={APNS_HEX};pn-type=apple;"
            "app-id=com.example.cloudsoftphone.voip;acro[bits]=1;account-ref=ACME-1001>"
        ),
        {
            "uri_params": (
                ("transport", "tls"),
                ("pn-tok", APNS_HEX),
                ("pn-type", "apple"),
                ("app-id", "com.example.cloudsoftphone.voip"),
                ("account-ref", "ACME-1001"),
            ),
            "skipped": (("acro[bits]", "invalid parameter name"),),
        },
    ),
    (
        "sipnetic-style-unclosed-quote-inside-the-uri",
        (
            f'<sip:bob@203.0.113.9:41234;transport=tcp;x-label="work;pn-provider=fcm;pn-prid={FCM_TOKEN};'
            "pn-param=929724111839>;expires=600"
        ),
        {
            "uri_params": (
                ("transport", "tcp"),
                ("pn-provider", "fcm"),
                ("pn-prid", FCM_TOKEN),
                ("pn-param", "929724111839"),
            ),
            "header_params": (("expires", "600"),),
            "skipped": (("x-label", "unbalanced quote in value"),),
        },
    ),
    (
        "zoiper-style-empty-name-addr-spec",
        f"sip:1001@198.51.100.7:49152;transport=TCP;=1;pn-tok={APNS_HEX}",
        {"uri_params": (("transport", "TCP"), ("pn-tok", APNS_HEX)), "skipped": (("", "invalid parameter name"),)},
    ),
    (
        "hostile-bad-name-is-cut-in-skipped",
        "<sip:a@example.com>;" + "b a" * 30 + "=1",
        {"skipped": ((("b a" * 30)[:40] + "...", "invalid parameter name"),)},
    ),
]


@pytest.mark.parametrize(("header", "expected"), [c[1:] for c in LENIENT_CASES], ids=[c[0] for c in LENIENT_CASES])
def test_parse_contacts_skips_one_malformed_param(header: str, expected: dict[str, Any]) -> None:
    (contact,) = parse_contacts(header)
    assert summary(contact, set(expected) - {"skipped"}) == {k: v for k, v in expected.items() if k != "skipped"}
    assert contact.skipped == expected["skipped"]
    for name, problem in contact.skipped:
        assert contact.skipped_problem(name.upper()) == problem
        assert contact.param(name) is None


def test_a_well_formed_contact_skips_nothing() -> None:
    (contact,) = parse_contacts(KAZOO_SAMPLE_CONTACT)
    assert contact.skipped == ()
    assert contact.skipped_problem("pn-tok") is None


LOOKUP_HEADER = (
    "<sip:1001@192.0.2.1;pn-tok=uri-tok;Dup=first;dup=second;flag;both=uri>"
    ";both=header;expires=60;flag=header-valued;only-header=h;hflag"
)

# (name asked, expected param() value): URI params before header params, first occurrence wins,
# names compare case-insensitively, flags give None.
LOOKUP_CASES: list[tuple[str, str | None]] = [
    ("pn-tok", "uri-tok"),
    ("PN-TOK", "uri-tok"),
    ("dup", "first"),
    ("both", "uri"),
    ("expires", "60"),
    ("only-header", "h"),
    ("flag", None),
    ("hflag", None),
    ("absent", None),
]


@pytest.mark.parametrize(("name", "expected"), LOOKUP_CASES)
def test_param_lookup(name: str, expected: str | None) -> None:
    (contact,) = parse_contacts(LOOKUP_HEADER)
    assert contact.param(name) == expected


def test_params_merged_like_param() -> None:
    (contact,) = parse_contacts(LOOKUP_HEADER)
    assert contact.params() == {
        "pn-tok": "uri-tok",
        "dup": "first",
        "both": "uri",
        "expires": "60",
        "only-header": "h",
    }


def test_star_contact_has_no_params() -> None:
    (star,) = parse_contacts("*")
    assert star.param("expires") is None
    assert star.params() == {}


# PROTOCOL §2: Kazoo's kz_amqp_util:encode / Kamailio's kz.encode.
AMQP_CASES: list[tuple[str, str]] = [
    ("sip.example.com", "sip%2Eexample%2Ecom"),
    ("acme.sip.example.com", "acme%2Esip%2Eexample%2Ecom"),
    ("user_k3j4h5", "user_k3j4h5"),
    ("A-Za-z0-9-~_", "A-Za-z0-9-~_"),
    ("john doe", "john+doe"),
    ("a+b", "a%2Bb"),
    ("user@realm", "user%40realm"),
    ("*", "*"),
    ("#", "#"),
    ("**", "%2A%2A"),
    ("a*", "a%2A"),
    ("#1", "%231"),
    ("é", "%C3%A9"),
    ("a/b:c", "a%2Fb%3Ac"),
    ("", ""),
]


@pytest.mark.parametrize(("word", "expected"), AMQP_CASES)
def test_amqp_encode(word: str, expected: str) -> None:
    assert amqp_encode(word) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("a+b", "a+b"), ("%2B", "+"), ("%", "%"), ("%%41", "%A"), ("%e2%82%ac", "€"), ("%00", "%00")],
)
def test_percent_decode(raw: str, expected: str) -> None:
    assert percent_decode(raw) == expected


SIPISH = st.text(
    alphabet=st.sampled_from(list('<>";,:@[]%=?*\\ \t\r\nsiptel+0123456789abcdefABCDEF.-_é\x00')),
    max_size=80,
)


def _parse_or_reject(text: str) -> None:
    try:
        result = parse_contacts(text)
    except ContactParseError:
        return
    assert isinstance(result, list)
    assert result
    assert all(isinstance(c, Contact) for c in result)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_parse_contacts_arbitrary_text_never_crashes(text: str) -> None:
    _parse_or_reject(text)


@settings(max_examples=1500, deadline=None)
@given(SIPISH)
def test_parse_contacts_sip_like_text_never_crashes(text: str) -> None:
    _parse_or_reject(text)


@settings(max_examples=300, deadline=None)
@given(
    user=st.from_regex(r"[A-Za-z0-9_.!~*'()&=+$,-]{1,20}", fullmatch=True),
    host=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True),
    port=st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    value=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=';,?"<>%\\'),
        min_size=1,
        max_size=30,
    ),
)
def test_parse_contacts_roundtrip_generated(user: str, host: str, port: int | None, value: str) -> None:
    hostport = host if port is None else f"{host}:{port}"
    (contact,) = parse_contacts(f"<sip:{user}@{hostport};pn-tok={value}>;expires=60")
    assert (contact.user, contact.host, contact.port) == (user, host, port)
    assert contact.param("pn-tok") == value
    assert contact.param("expires") == "60"
