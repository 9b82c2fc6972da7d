"""registry.reporter: a token report's parameters, read through a reporter's mapping (pure)."""

from __future__ import annotations

import base64

import pytest

from core.errors import InvalidInput, UnknownDevice
from registry.reporter import (
    DEFAULT_PARAMETERS,
    ENCODING_AS_SENT,
    ENCODING_BASE64,
    SIGNATURE_MAX_SKEW_S,
    ReporterConfig,
    acrobits_url_template,
    report_map,
    report_signature,
    report_signature_valid,
    reporter_config_problems,
    secret_problem,
)

VOIP = "9f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
OTHER = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"
FCM = "dKx9Qm3ZRlO7pYc2wEo1aB:APA91bHq8v2Xz-4kLmN0pQrStUvWxYz_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"

GROUNDWIRE = ReporterConfig(slug="gw", parameters=DEFAULT_PARAMETERS, fixed={"Token-Type": "apple"})
ANDROID = ReporterConfig(slug="gw-android", parameters=DEFAULT_PARAMETERS, fixed={"Token-Type": "firebase"})


def acrobits(**extra: str) -> dict[str, str]:
    """What an Acrobits app on iOS 13+ fills its default template with."""
    return {"username": "1001", "realm": "Acme.Example.com",
            "selector": "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14",
            "pushToken": OTHER, "pushappid": "cz.acrobits.groundwire", "pushTokenIncomingCall": VOIP,
            "pushappid_incoming_call": "cz.acrobits.groundwire.voip", **extra}


def test_an_ios_report_stores_the_voip_token_and_keeps_the_other_as_remote() -> None:
    report = report_map(config=GROUNDWIRE, params=acrobits())
    assert (report.username, report.realm) == ("1001", "acme.example.com")  # realms compare case-insensitively
    assert report.selector.endswith(":7C3A0D14")
    assert report.push == {"Token-ID": VOIP, "Token-App": "cz.acrobits.groundwire.voip", "Token-Type": "apple"}
    assert [(t.token, t.app, t.kind) for t in report.tokens] == [
        (VOIP, "cz.acrobits.groundwire.voip", "voip"), (OTHER, "cz.acrobits.groundwire", "remote"),
    ]


def test_a_single_token_is_plain_and_the_voip_app_falls_back_to_the_app() -> None:
    report = report_map(config=ANDROID, params={"username": "1001", "realm": "acme.example.com", "pushToken": FCM,
                                                "pushappid": "cz.acrobits.groundwire"})
    assert report.push == {"Token-ID": FCM, "Token-App": "cz.acrobits.groundwire", "Token-Type": "firebase"}
    assert [t.kind for t in report.tokens] == [""]
    voip_only = report_map(config=GROUNDWIRE, params={"username": "1001", "realm": "a.example.com",
                                                      "pushTokenIncomingCall": VOIP, "pushappid": "com.x.app"})
    assert voip_only.push["Token-App"] == "com.x.app" and voip_only.tokens[0].kind == "voip"


def test_the_same_token_twice_is_one_token() -> None:
    report = report_map(config=GROUNDWIRE, params=acrobits(pushToken=VOIP))
    assert [t.kind for t in report.tokens] == ["voip"]


def test_fixed_values_fill_in_and_a_parameter_wins() -> None:
    config = ReporterConfig(slug="x", parameters={"Username": "u", "Token-ID": "t", "Token-Type": "type"},
                            fixed={"Realm": "acme.example.com", "Token-App": "com.acme.app", "Token-Type": "apple"})
    report = report_map(config=config, params={"u": "1001", "t": FCM, "type": "firebase"})
    assert report.realm == "acme.example.com"
    assert report.push == {"Token-ID": FCM, "Token-App": "com.acme.app", "Token-Type": "firebase"}


@pytest.mark.parametrize(("given", "stored", "sandbox"), [("apns", "apple", False), ("apns.dev", "apple", True),
                                                          ("fcm", "firebase", False), ("google", "google", False)])
def test_rfc8599_provider_names_become_kazoos(given: str, stored: str, sandbox: bool) -> None:
    config = ReporterConfig(slug="x", parameters={**DEFAULT_PARAMETERS, "Token-Type": "provider"}, fixed={})
    token = VOIP if stored == "apple" else FCM
    report = report_map(config=config, params={"username": "u", "realm": "r.example", "provider": given,
                                               "pushToken": token, "pushappid": "com.x"})
    assert report.push["Token-Type"] == stored and report.tokens[0].sandbox is sandbox


def test_a_realm_bound_reporter_answers_for_its_realm_only() -> None:
    config = ReporterConfig(slug="x", parameters=DEFAULT_PARAMETERS,
                            fixed={"Token-Type": "apple", "Realm": "acme.example.com"})
    assert report_map(config=config, params=acrobits(realm="ACME.example.com")).realm == "acme.example.com"
    assert report_map(config=config, params=acrobits(realm="")).realm == "acme.example.com"
    with pytest.raises(UnknownDevice):
        report_map(config=config, params=acrobits(realm="other.example.com"))


def test_base64_tokens_are_decoded_apns_to_hex() -> None:
    config = ReporterConfig(slug="x", parameters=DEFAULT_PARAMETERS, fixed={"Token-Type": "apple"},
                            token_encoding=ENCODING_BASE64)
    encoded = base64.b64encode(bytes.fromhex(VOIP)).decode()
    report = report_map(config=config, params=acrobits(pushTokenIncomingCall=encoded, pushToken=""))
    assert report.push["Token-ID"] == VOIP
    # A '+' that was not percent-encoded arrives as a space; URL-safe base64 and missing padding too.
    plus = base64.b64encode(bytes.fromhex("fb" * 32)).decode()
    assert "+" in plus
    for sent in (plus.replace("+", " "), base64.urlsafe_b64encode(bytes.fromhex("fb" * 32)).decode().rstrip("=")):
        assert report_map(config=config, params=acrobits(pushTokenIncomingCall=sent, pushToken="")).push[
            "Token-ID"] == "fb" * 32
    android = ReporterConfig(slug="x", parameters=DEFAULT_PARAMETERS, fixed={"Token-Type": "firebase"},
                             token_encoding=ENCODING_BASE64)
    report = report_map(config=android, params={"username": "u", "realm": "r.example", "pushappid": "com.x",
                                                "pushToken": base64.b64encode(FCM.encode()).decode()})
    assert report.push["Token-ID"] == FCM


BAD = [
    ("no username", {"username": ""}, "Username is missing"),
    ("no realm", {"realm": ""}, "Realm is missing"),
    ("username with a space", {"username": "10 01"}, "Username"),
    ("username with @", {"username": "1001@evil.example"}, "Username"),
    ("username path-like", {"username": "../../admin"}, "Username"),
    ("username with NUL", {"username": "10\x0001"}, "Username"),
    ("unicode username lookalike", {"username": "1001\u200b"}, "Username"),
    ("huge username", {"username": "u" * 256}, "Username"),
    ("realm with a slash", {"realm": "acme.example.com/x"}, "Realm"),
    ("realm unicode", {"realm": "acmé.example.com"}, "Realm"),
    ("app id with a space", {"pushappid_incoming_call": "com.acme app"}, "VoIP-Token-App"),
    ("no token", {"pushToken": "", "pushTokenIncomingCall": ""}, "no push token"),
    ("apns token not hex", {"pushTokenIncomingCall": "zz" * 32}, "must be hex digits"),
    ("apns token too short", {"pushTokenIncomingCall": "ab" * 8}, "from 64 to 200"),
    ("token with a newline", {"pushTokenIncomingCall": VOIP[:10] + "\n" + VOIP[10:]}, "whitespace"),
    ("token with a bidi control", {"pushToken": OTHER + "\u202e"}, "control or format"),
    ("huge token", {"pushToken": "a" * 5000}, "more than a token has"),
    ("selector with a quote", {"selector": "abc'--"}, "Selector"),
]


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in BAD], ids=[n for n, _, _ in BAD])
def test_malformed_reports_are_refused_without_quoting_the_token(change: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        report_map(config=GROUNDWIRE, params=acrobits(**change))
    assert message in caught.value.message and caught.value.code == "report_invalid"
    for value in change.values():
        if len(value) > 20:
            assert value not in caught.value.message


def test_base64_that_is_not_is_refused() -> None:
    config = ReporterConfig(slug="x", parameters=DEFAULT_PARAMETERS, fixed={"Token-Type": "firebase"},
                            token_encoding=ENCODING_BASE64)
    for bad in ("%%%%", "YWJj$", base64.b64encode(b"\xff\xfe\x00").decode()):
        with pytest.raises(InvalidInput):
            report_map(config=config,
                       params={"username": "u", "realm": "r.example", "pushappid": "x", "pushToken": bad})


CONFIGS = [
    ("defaults and a type", DEFAULT_PARAMETERS, {"Token-Type": "apple"}, []),
    ("no username", {"Token-ID": "t"}, {"Token-Type": "apple", "Realm": "r.example", "Token-App": "a"},
     ["Username is required"]),
    ("no token", {"Username": "u"}, {"Token-Type": "apple", "Realm": "r.example", "Token-App": "a"},
     ["map Token-ID or VoIP-Token-ID"]),
    ("no type", DEFAULT_PARAMETERS, {}, ["Token-Type: map it"]),
    ("no realm", {"Username": "u", "Token-ID": "t", "Token-App": "a"}, {"Token-Type": "apple"}, ["Realm: map it"]),
    ("no app", {"Username": "u", "Realm": "r", "Token-ID": "t"}, {"Token-Type": "apple"}, ["Token-App: map it"]),
    ("unknown key", {**DEFAULT_PARAMETERS, "Password": "p"}, {"Token-Type": "apple"}, ["unknown key 'Password'"]),
    ("unfixable key", DEFAULT_PARAMETERS, {"Token-Type": "apple", "Username": "u"}, ["fixed: unknown key 'Username'"]),
    ("bad parameter name", {**DEFAULT_PARAMETERS, "Username": "user name"}, {"Token-Type": "apple"},
     ["a parameter name is"]),
    ("bad fixed realm", DEFAULT_PARAMETERS, {"Token-Type": "apple", "Realm": "a b"}, ["not a valid Realm"]),
]


@pytest.mark.parametrize(("parameters", "fixed", "problems"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_a_mapping_is_checked_before_it_is_saved(parameters, fixed, problems) -> None:
    found = reporter_config_problems(parameters=parameters, fixed=fixed, token_encoding=ENCODING_AS_SENT)
    assert len(found) == len(problems) and all(p in f for p, f in zip(problems, found, strict=True)), found


def test_mappings_that_are_not_objects_of_text() -> None:
    assert reporter_config_problems(parameters=["Username"], fixed={}, token_encoding=ENCODING_AS_SENT)
    assert reporter_config_problems(parameters={"Username": 1}, fixed={}, token_encoding=ENCODING_AS_SENT)
    assert reporter_config_problems(parameters=DEFAULT_PARAMETERS, fixed={"Token-Type": {"a": 1}},
                                    token_encoding=ENCODING_AS_SENT)
    assert reporter_config_problems(parameters=DEFAULT_PARAMETERS, fixed={"Token-Type": "apple"},
                                    token_encoding="rot13")


@pytest.mark.parametrize(("secret", "ok"), [("a" * 24, True), ("Ab0_-" * 10, True), ("a" * 23, False),
                                            ("a" * 129, False), ("a" * 20 + "/../", False), ("a" * 30 + "é", False),
                                            (None, False)])
def test_secrets_are_long_and_url_safe(secret, ok: bool) -> None:
    assert (secret_problem(secret) is None) is ok


def test_a_signature_signs_the_whole_request_within_the_skew() -> None:
    args = {"method": "POST", "path": "/report/gw/", "query": "a=1", "body": b'{"username": "1001"}'}
    now = 1_800_000_000
    signature = report_signature(secret="s" * 30, timestamp=str(now), **args)
    assert report_signature_valid(secret="s" * 30, signature=signature, timestamp=str(now), now=now + 10, **args)
    assert report_signature_valid(secret="s" * 30, signature=f"sha256={signature.upper()}", timestamp=str(now),
                                  now=now, **args)
    for change in ({"body": b'{"username": "1002"}'}, {"query": "a=2"}, {"path": "/report/other/"},
                   {"method": "GET"}):
        assert not report_signature_valid(secret="s" * 30, signature=signature, timestamp=str(now), now=now,
                                          **{**args, **change})
    assert not report_signature_valid(secret="t" * 30, signature=signature, timestamp=str(now), now=now, **args)
    assert not report_signature_valid(secret="s" * 30, signature=signature, timestamp=str(now),
                                      now=now + SIGNATURE_MAX_SKEW_S + 1, **args)
    assert not report_signature_valid(secret="s" * 30, signature=signature, timestamp="yesterday", now=now, **args)
    assert not report_signature_valid(secret="s" * 30, signature="ü" * 64, timestamp=str(now), now=now, **args)


def test_the_acrobits_url_template_names_the_mapped_parameters() -> None:
    url = acrobits_url_template(slug="gw", parameters={"Username": "user", "VoIP-Token-ID": "voip"}, signed=False,
                                base="https://pusher.example.com/")
    assert url == ("https://pusher.example.com/report/gw/<secret>/?user=%account[username]%"
                   "&voip=%pushTokenIncomingCall%")
    assert acrobits_url_template(slug="gw", parameters={}, signed=True) == "/report/gw/"
