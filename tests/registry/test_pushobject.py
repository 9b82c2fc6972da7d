"""Table-driven tests for registry.pushobject (pure: no database, no Django needed).

reg_success bodies follow Kamailio's master template (PROTOCOL §3); Contacts and User-Agents are
modelled on real clients (Linphone legacy and RFC 8599, Acrobits-style custom params, Zoiper,
Bria, Yealink/Polycom/Cisco desk phones, PBX trunks). Tokens and ids are made up.
"""

from __future__ import annotations

import copy
import logging
import time
import unicodedata
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from core.errors import ContactParseError, RuleError
from registry.pushobject import (
    FAMILY_LEGACY,
    FAMILY_RFC8599,
    PushBuild,
    Rule,
    TokenInfo,
    compile_rule_regex,
    family_properties,
    push_object_build,
    push_object_equal,
    push_token_problem,
    rule_family,
    rule_match,
    rule_positions_assign,
)
from tests.fixtures import sample

APNS_HEX = "5e0f4c3a9b8d7e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
APNS_VOIP = "b7e1c2d3a4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff"
APNS_REMOTE = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
FCM_TOKEN = "fHk3-Qz_R2e:APA91bGx7Yq2-kL9_mN0pQrStUvWxYz0123456789-abcDEF_ghiJKL"
PROXY_PATH = "sip:10.0.0.5:5060;transport=udp"
PROXY_URI = "sip:203.0.113.10:5060;transport=udp"
ACCOUNT_ID = "3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
DEVICE_ID = "8f7e6d5c4b3a29181716151413121110"
UUID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"

KAZOO_PROPS = {"Token-App": "app-id", "Token-Type": "pn-type", "Token-ID": "pn-tok"}
RFC8599_PROPS = {"Token-App": "pn-param", "Token-Type": "pn-provider", "Token-ID": "pn-prid"}

# Stored order matters: first match wins, so the RFC 8599 Linphone rule precedes the legacy one.
RULES: tuple[Rule, ...] = (
    Rule(name="AcmePhone", regex="^AcmePhone", properties=KAZOO_PROPS),
    Rule(name="Linphone RFC 8599", regex=r"^Linphone(iOS|Android)/[5-9]\.", properties=RFC8599_PROPS),
    Rule(name="Linphone legacy", regex="^Linphone", properties=KAZOO_PROPS),
    Rule(
        name="Acrobits",
        regex=r"^(Acrobits|Groundwire|Cloud Softphone)",
        properties={
            **KAZOO_PROPS,
            "Token-Public-Proxy": "Proxy-URI",
            "Account-Ref": "account-ref",
        },
    ),
    Rule(name="Zoiper", regex=r"^Z \d+\.\d+", properties=KAZOO_PROPS),
    Rule(name="Bria", regex=r"^Bria (iOS|Android)", properties=KAZOO_PROPS),
    Rule(name="Sipnetic", regex=r"^Sipnetic", properties=RFC8599_PROPS),
)

# reg_success body from tests/fixtures/kazoo/reg_success_kamailio_master.json, spelt out here;
# test_kazoo_sample_files checks that the two are the same.
KAZOO_SAMPLE_BODY: dict[str, Any] = {
    "Event-Category": "directory",
    "Event-Name": "reg_success",
    "Status": "Registered",
    "Event-Timestamp": 1732700000,
    "Expires": 600,
    "First-Registration": True,
    "Contact": (
        "<sip:user_k3j4h5@192.0.2.44:52311;transport=udp;app-id=com.acme.phone.voip.prod;"
        f'pn-tok={APNS_HEX};pn-type=apple>;expires=600;+sip.instance="<urn:uuid:{UUID}>"'
    ),
    "Call-ID": "a84b4c76e66710@192.0.2.44",
    "Realm": "acme.sip.example.com",
    "Username": "user_k3j4h5",
    "From-User": "user_k3j4h5",
    "From-Host": "acme.sip.example.com",
    "To-User": "user_k3j4h5",
    "To-Host": "acme.sip.example.com",
    "User-Agent": "AcmePhone iOS 3.2.1",
    "Custom-Channel-Vars": {
        "Username": "user_k3j4h5",
        "Realm": "acme.sip.example.com",
        "Account-ID": ACCOUNT_ID,
        "Authorizing-ID": DEVICE_ID,
        "Authorizing-Type": "device",
        "Owner-ID": "1a2b3c4d5e6f708192a3b4c5d6e7f809",
        "Account-Realm": "acme.sip.example.com",
        "Account-Name": "Acme Corp",
        "Presence-ID": "1001@acme.sip.example.com",
        "Pusher-Application": "com.acme.phone.voip.prod",
    },
    "Proxy-Path": PROXY_PATH,
    "Proxy-Protocol": "udp",
    "Proxy-IP": "203.0.113.10",
    "Proxy-Port": "5060",
    "Source-IP": "192.0.2.44",
    "Source-Port": "52311",
    "Proxy-URI": PROXY_URI,
    "App-Name": "kamailio",
    "App-Version": "5.5.4",
    "Node": "kamailio@kam1.example.com",
    "Msg-ID": "6b1f0e8a-2c4d-4e5f-9a8b-7c6d5e4f3a2b",
    "Server-ID": "kamailio@kam1.example.com-<1>-targeted-2",
}
KAZOO_SAMPLE_PUSH = {
    "Token-App": "com.acme.phone.voip.prod",
    "Token-Type": "apple",
    "Token-ID": APNS_HEX,
    "Token-Proxy": PROXY_PATH,
}

DROP = object()  # marks a reg_success field to remove


def reg(contact: str | None = None, ua: Any = None, **overrides: Any) -> dict[str, Any]:
    """The sample reg_success with another Contact / User-Agent and field overrides."""
    body = copy.deepcopy(KAZOO_SAMPLE_BODY)
    if contact is not None:
        body["Contact"] = contact
    if ua is not None:
        body["User-Agent"] = ua
    for key, value in overrides.items():
        key = key.replace("_", "-")
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def tok(token: str, type_: str, app: str, kind: str = "", sandbox: bool = False) -> TokenInfo:
    return TokenInfo(token=token, type=type_, app=app, kind=kind, sandbox=sandbox)


def push(**values: str) -> dict[str, str]:
    return {key.replace("_", "-"): value for key, value in values.items()}


LINPHONE_IOS_UA = "LinphoneiOS/5.2.3 (iPhone de Alice) LinphoneSDK/5.3.30 (tags/5.3.30)"
LINPHONE_ANDROID_UA = "LinphoneAndroid/5.2.5 (Pixel 7) LinphoneSDK/5.3.47 (tags/5.3.47)"
LINPHONE_IOS_LEGACY_UA = "LinphoneIphone/4.1.1 (iPhone) LinphoneSDK/4.2.0"
LINPHONE_ANDROID_LEGACY_UA = "LinphoneAndroid/4.2.3 (Galaxy S9) LinphoneSDK/4.3.1"
LINPHONE_LEGACY_EXTRAS = (
    "pn-msg-str=IM_MSG;pn-call-str=IC_MSG;pn-groupchat-str=GC_MSG;"
    "pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf;pn-silent=1;pn-timeout=0"
)
LINPHONE_SPECS = '+org.linphone.specs="conference/1.0,ephemeral/1.1,groupchat/1.1,lime"'


def linphone_rfc8599(prid: str, param: str, provider: str = "apns") -> str:
    return (
        f"<sip:alice@198.51.100.20:52000;transport=tls;pn-provider={provider};pn-prid={prid};"
        f'pn-param={param}>;+sip.instance="<urn:uuid:{UUID}>";{LINPHONE_SPECS}'
    )


# (id, reg_success body, expected reason, expected push (ordered) or None, expected tokens)
BUILD_CASES: list[tuple[str, dict[str, Any], str, dict[str, str] | None, list[TokenInfo]]] = [
    (
        "kazoo-sample-master",
        reg(),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "linphone-legacy-ios",
        reg(
            "<sip:alice@198.51.100.20:5060;transport=tls;app-id=org.linphone.phone.voip.prod;pn-type=apple;"
            f'pn-tok={APNS_VOIP};{LINPHONE_LEGACY_EXTRAS}>;+sip.instance="<urn:uuid:{UUID}>"',
            LINPHONE_IOS_LEGACY_UA,
        ),
        "ok",
        push(
            Token_App="org.linphone.phone.voip.prod",
            Token_Type="apple",
            Token_ID=APNS_VOIP,
            Token_Proxy=PROXY_PATH,
        ),
        [tok(APNS_VOIP, "apple", "org.linphone.phone.voip.prod", "voip")],
    ),
    (
        "linphone-legacy-android-google",
        reg(
            f"<sip:bob@203.0.113.9:41234;transport=tcp;app-id=929724111839;pn-type=google;pn-tok={FCM_TOKEN};"
            "pn-silent=1>",
            LINPHONE_ANDROID_LEGACY_UA,
        ),
        "ok",
        push(Token_App="929724111839", Token_Type="google", Token_ID=FCM_TOKEN, Token_Proxy=PROXY_PATH),
        [tok(FCM_TOKEN, "google", "929724111839")],
    ),
    (
        "linphone-legacy-android-firebase",
        reg(
            f"<sip:bob@203.0.113.9:41234;app-id=929724111839;pn-type=firebase;pn-tok={FCM_TOKEN}>",
            "LinphoneAndroid/4.6.14 (Pixel 4a) LinphoneSDK/5.0.71",
        ),
        "ok",
        push(Token_App="929724111839", Token_Type="firebase", Token_ID=FCM_TOKEN, Token_Proxy=PROXY_PATH),
        [tok(FCM_TOKEN, "firebase", "929724111839")],
    ),
    (
        "linphone-rfc8599-ios-voip-and-remote",
        reg(
            linphone_rfc8599(
                f"{APNS_VOIP}:voip&{APNS_REMOTE}:remote", "ABCD1234.org.linphone.phone.voip&remote"
            ),
            LINPHONE_IOS_UA,
        ),
        "ok",
        push(Token_App="org.linphone.phone", Token_Type="apple", Token_ID=APNS_VOIP, Token_Proxy=PROXY_PATH),
        [
            tok(APNS_VOIP, "apple", "org.linphone.phone", "voip"),
            tok(APNS_REMOTE, "apple", "org.linphone.phone", "remote"),
        ],
    ),
    (
        "linphone-rfc8599-ios-labels-reversed-real-team-id",
        reg(
            linphone_rfc8599(
                f"{APNS_REMOTE}:remote&{APNS_VOIP}:voip", "Q7W4E2R9T1.com.example.phone.remote&voip"
            ),
            LINPHONE_IOS_UA,
        ),
        "ok",
        push(Token_App="com.example.phone", Token_Type="apple", Token_ID=APNS_VOIP, Token_Proxy=PROXY_PATH),
        [
            tok(APNS_REMOTE, "apple", "com.example.phone", "remote"),
            tok(APNS_VOIP, "apple", "com.example.phone", "voip"),
        ],
    ),
    (
        "linphone-rfc8599-ios-remote-only",
        reg(linphone_rfc8599(f"{APNS_REMOTE}:remote", "ABCD1234.org.linphone.phone.remote"), LINPHONE_IOS_UA),
        "ok",
        push(
            Token_App="org.linphone.phone", Token_Type="apple", Token_ID=APNS_REMOTE, Token_Proxy=PROXY_PATH
        ),
        [tok(APNS_REMOTE, "apple", "org.linphone.phone", "remote")],
    ),
    (
        "linphone-rfc8599-ios-sandbox-no-team-id",
        reg(
            linphone_rfc8599(f"{APNS_VOIP}:voip", "org.linphone.phone.voip", provider="apns.dev"),
            LINPHONE_IOS_UA,
        ),
        "ok",
        push(Token_App="org.linphone.phone", Token_Type="apple", Token_ID=APNS_VOIP, Token_Proxy=PROXY_PATH),
        [tok(APNS_VOIP, "apple", "org.linphone.phone", "voip", sandbox=True)],
    ),
    (
        "linphone-rfc8599-ios-unlabelled-token",
        reg(linphone_rfc8599(APNS_REMOTE, "ABCD1234.org.linphone.phone"), LINPHONE_IOS_UA),
        "ok",
        push(
            Token_App="org.linphone.phone", Token_Type="apple", Token_ID=APNS_REMOTE, Token_Proxy=PROXY_PATH
        ),
        [tok(APNS_REMOTE, "apple", "org.linphone.phone")],
    ),
    (
        "linphone-rfc8599-ios-percent-encoded-prid",
        reg(
            linphone_rfc8599(
                f"{APNS_VOIP}%3Avoip%26{APNS_REMOTE}%3Aremote", "ABCD1234.org.linphone.phone.voip%26remote"
            ),
            LINPHONE_IOS_UA,
        ),
        "ok",
        push(Token_App="org.linphone.phone", Token_Type="apple", Token_ID=APNS_VOIP, Token_Proxy=PROXY_PATH),
        [
            tok(APNS_VOIP, "apple", "org.linphone.phone", "voip"),
            tok(APNS_REMOTE, "apple", "org.linphone.phone", "remote"),
        ],
    ),
    (
        "linphone-rfc8599-android-fcm",
        reg(linphone_rfc8599(FCM_TOKEN, "linphone-android-8a563", provider="fcm"), LINPHONE_ANDROID_UA),
        "ok",
        push(
            Token_App="linphone-android-8a563",
            Token_Type="firebase",
            Token_ID=FCM_TOKEN,
            Token_Proxy=PROXY_PATH,
        ),
        [tok(FCM_TOKEN, "firebase", "linphone-android-8a563")],
    ),
    (
        "linphone-rfc8599-android-fcm-remote-label-and-dotted-project-kept",
        reg(
            linphone_rfc8599(f"{FCM_TOKEN}:remote", "ABCD1234.org.linphone.voip", provider="fcm"),
            LINPHONE_ANDROID_UA,
        ),
        "ok",
        push(
            Token_App="ABCD1234.org.linphone.voip",
            Token_Type="firebase",
            Token_ID=FCM_TOKEN,
            Token_Proxy=PROXY_PATH,
        ),
        [tok(FCM_TOKEN, "firebase", "ABCD1234.org.linphone.voip", "remote")],
    ),
    (
        "rfc8599-kazoo-alias-provider-kept",
        reg(linphone_rfc8599(FCM_TOKEN, "com.acme.phone", provider="google"), LINPHONE_ANDROID_UA),
        "ok",
        push(Token_App="com.acme.phone", Token_Type="google", Token_ID=FCM_TOKEN, Token_Proxy=PROXY_PATH),
        [tok(FCM_TOKEN, "google", "com.acme.phone")],
    ),
    (
        "rfc8599-prid-without-token",
        reg(linphone_rfc8599("&:voip", "ABCD1234.org.linphone.phone.voip"), LINPHONE_IOS_UA),
        "no token in Contact",
        None,
        [],
    ),
    (
        "acrobits-like-extras-public-proxy-and-account-ref",
        reg(
            "<sip:1001@198.51.100.30:5060;transport=tls;pn-tok=" + APNS_VOIP + ";pn-type=apple;"
            "app-id=com.example.cloudsoftphone.voip;account-ref=ACME-1001>",
            "Groundwire/24.1.3 (build 1234; iOS 17.2; iPhone15,2)",
        ),
        "ok",
        push(
            Token_App="com.example.cloudsoftphone.voip",
            Token_Type="apple",
            Token_ID=APNS_VOIP,
            Token_Public_Proxy=PROXY_URI,
            Account_Ref="ACME-1001",
            Token_Proxy=PROXY_PATH,
        ),
        [tok(APNS_VOIP, "apple", "com.example.cloudsoftphone.voip", "voip")],
    ),
    (
        "acrobits-like-extra-missing-is-skipped",
        reg(
            f"<sip:1001@198.51.100.30;pn-tok={APNS_VOIP};pn-type=apple;app-id=com.example.cloudsoftphone.voip>",
            "Cloud Softphone/6.5.1 (Android 14)",
            Proxy_URI=DROP,
        ),
        "ok",
        push(
            Token_App="com.example.cloudsoftphone.voip",
            Token_Type="apple",
            Token_ID=APNS_VOIP,
            Token_Proxy=PROXY_PATH,
        ),
        [tok(APNS_VOIP, "apple", "com.example.cloudsoftphone.voip", "voip")],
    ),
    (
        "zoiper-without-push-params",
        reg(
            "<sip:1001@198.51.100.7:49152;transport=TCP;rinstance=a1b2c3d4e5f60718>;"
            f'+sip.instance="<urn:uuid:{UUID}>"',
            "Z 5.6.6 v2.10.20.1",
        ),
        "no token in Contact",
        None,
        [],
    ),
    (
        "bria-without-push-params",
        reg(
            "<sip:1001@198.51.100.8:5060;rinstance=0f1e2d3c4b5a6978;transport=tls>",
            "Bria iOS release 6.6.2 stamp 118534",
        ),
        "no token in Contact",
        None,
        [],
    ),
    (
        "yealink-desk-phone-ignored",
        reg("<sip:1002@192.168.10.21:5060>", "Yealink SIP-T54W 96.86.0.100"),
        "no rule matched",
        None,
        [],
    ),
    (
        "polycom-desk-phone-ignored",
        reg(
            "<sip:1003@192.168.10.22;transport=tls>;"
            'methods="INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, MESSAGE"',
            "PolycomVVX-VVX_450-UA/6.4.3.5018",
        ),
        "no rule matched",
        None,
        [],
    ),
    (
        "cisco-desk-phone-ignored",
        reg(
            "<sip:6c9f2a1e-8b3d-4c5e-9f70-1a2b3c4d5e6f@10.20.30.40:51234;transport=tcp>;"
            '+u.sip!devicename.ccm.cisco.com="SEPF8A5C5123456";video',
            "Cisco-CP8865/14.2.1",
        ),
        "no rule matched",
        None,
        [],
    ),
    (
        "asterisk-trunk-ignored",
        reg("<sip:s@203.0.113.50:5060>", "Asterisk PBX 20.5.0"),
        "no rule matched",
        None,
        [],
    ),
    (
        "trunk-with-garbage-contact-ignored-not-parsed",
        reg("<<<garbage", "FreeSWITCH-mod_sofia/1.10.11-release~64bit"),
        "no rule matched",
        None,
        [],
    ),
    (
        "multiple-contacts-first-with-token-wins-all-tokens-kept",
        reg(
            "<sip:1001@192.0.2.10:5060>;expires=600, "
            f"<sip:1001@192.0.2.11;pn-tok={APNS_VOIP};pn-type=apple;app-id=com.acme.phone.voip.prod>, "
            f'"Tablet, iPad" <sip:1001@192.0.2.12;pn-tok={APNS_REMOTE};pn-type=apple;'
            "app-id=com.acme.phone.prod>, "
            f"<sip:1001@192.0.2.13;pn-tok={APNS_VOIP};pn-type=apple;app-id=com.acme.phone.voip.prod>"
        ),
        "ok",
        push(
            Token_App="com.acme.phone.voip.prod",
            Token_Type="apple",
            Token_ID=APNS_VOIP,
            Token_Proxy=PROXY_PATH,
        ),
        [
            tok(APNS_VOIP, "apple", "com.acme.phone.voip.prod", "voip"),
            tok(APNS_REMOTE, "apple", "com.acme.phone.prod"),
        ],
    ),
    (
        "ipv6-contact",
        reg(
            f"<sip:user_k3j4h5@[2001:db8::44]:52311;pn-tok={APNS_HEX};pn-type=apple;app-id=com.acme.phone.voip.prod>"
        ),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "param-name-case-insensitive",
        reg(f"<sip:u@192.0.2.44;App-ID=com.acme.phone.voip.prod;PN-Tok={APNS_HEX};Pn-Type=apple>"),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "quoted-header-param-values",
        reg(f'<sip:u@192.0.2.44>;app-id="com.acme.phone.voip.prod";pn-tok="{APNS_HEX}";pn-type="apple"'),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "uri-param-wins-over-header-param",
        reg(
            f"<sip:u@192.0.2.44;pn-tok={APNS_HEX};pn-type=apple;app-id=com.acme.phone.voip.prod>;"
            "pn-tok=header-token;app-id=header-app"
        ),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "percent-decoding-keeps-plus",
        reg("<sip:u@192.0.2.44;pn-tok=ab%2Bcd+ef%3D;pn-type=firebase;app-id=com%2Eacme%2Ephone>"),
        "ok",
        push(Token_App="com.acme.phone", Token_Type="firebase", Token_ID="ab+cd+ef=", Token_Proxy=PROXY_PATH),
        [tok("ab+cd+ef=", "firebase", "com.acme.phone")],
    ),
    (
        "addr-spec-contact-params-found",
        reg(f"sip:u@192.0.2.44;pn-tok={APNS_HEX};pn-type=apple;app-id=com.acme.phone.voip.prod"),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "empty-token-param",
        reg("<sip:u@192.0.2.44;pn-tok=;pn-type=apple;app-id=com.acme.phone.voip.prod>"),
        "no token in Contact",
        None,
        [],
    ),
    (
        "token-flag-without-value",
        reg("<sip:u@192.0.2.44;pn-tok;pn-type=apple>"),
        "no token in Contact",
        None,
        [],
    ),
    (
        "token-only-as-top-level-field-does-not-count",
        reg("<sip:u@192.0.2.44;pn-type=apple;app-id=com.acme.phone.voip.prod>", **{"pn-tok": APNS_HEX}),
        "no token in Contact",
        None,
        [],
    ),
    (
        "missing-app-falls-back-to-top-level-or-skips",
        reg(f"<sip:u@192.0.2.44;pn-tok={APNS_HEX};pn-type=apple>"),
        "ok",
        push(Token_Type="apple", Token_ID=APNS_HEX, Token_Proxy=PROXY_PATH),
        [tok(APNS_HEX, "apple", "")],
    ),
    (
        "missing-proxy-path-drops-token-proxy",
        reg(Proxy_Path=DROP),
        "ok",
        push(Token_App="com.acme.phone.voip.prod", Token_Type="apple", Token_ID=APNS_HEX),
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "unregistered-status",
        reg(Status="Unregistered", Expires=0),
        "unregister",
        None,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "unregistered-status-any-case",
        reg(Status="UNREGISTERED"),
        "unregister",
        None,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "expires-zero-int",
        reg(Expires=0),
        "unregister",
        None,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "expires-zero-str",
        reg(Expires="0"),
        "unregister",
        None,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "expires-str-nonzero",
        reg(Expires="3600"),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "expires-false-is-not-zero",
        reg(Expires=False),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    ("star-contact-unregister", reg("*", Expires=0, Status="Unregistered"), "unregister", None, []),
    ("star-contact-registered-has-no-token", reg("*"), "no token in Contact", None, []),
    ("missing-user-agent", reg(User_Agent=DROP), "no rule matched", None, []),
    ("empty-user-agent", reg(ua=""), "no rule matched", None, []),
    ("kamailio-unknown-user-agent", reg(ua="unknown"), "no rule matched", None, []),
    ("non-string-user-agent", reg(ua=42), "no rule matched", None, []),
    ("case-sensitive-match", reg(ua="acmephone iOS 3.2.1"), "no rule matched", None, []),
    (
        "missing-ccvs-top-level-ids",
        reg(Custom_Channel_Vars=DROP, Account_ID=ACCOUNT_ID, Authorizing_ID=DEVICE_ID),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "missing-ccvs-no-ids",
        reg(Custom_Channel_Vars=DROP),
        "missing Account-ID/Authorizing-ID",
        None,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "empty-ccvs-token-reg-path",
        reg(Custom_Channel_Vars={}),
        "missing Account-ID/Authorizing-ID",
        None,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "ccvs-not-a-dict",
        reg(Custom_Channel_Vars="Account-ID=x", Account_ID=ACCOUNT_ID, Authorizing_ID=DEVICE_ID),
        "ok",
        KAZOO_SAMPLE_PUSH,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "ccvs-a-list",
        reg(Custom_Channel_Vars=["Account-ID"]),
        "missing Account-ID/Authorizing-ID",
        None,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
    (
        "ccv-missing-authorizing-id",
        reg(Custom_Channel_Vars={"Account-ID": ACCOUNT_ID}),
        "missing Account-ID/Authorizing-ID",
        None,
        [tok(APNS_HEX, "apple", "com.acme.phone.voip.prod", "voip")],
    ),
]


def _run(body: dict[str, Any], rules: tuple[Rule, ...] = RULES) -> PushBuild:
    return push_object_build(rules=rules, fields=body)


@pytest.mark.parametrize(
    ("body", "reason", "expected_push", "expected_tokens"),
    [c[1:] for c in BUILD_CASES],
    ids=[c[0] for c in BUILD_CASES],
)
def test_push_object_build(
    body: dict[str, Any], reason: str, expected_push: dict[str, str] | None, expected_tokens: list[TokenInfo]
) -> None:
    result = _run(body)
    assert result.reason == reason
    if expected_push is None:
        assert result.push is None
    else:
        assert result.push is not None
        # Key order is part of the contract: it is the order Kazoo would have built.
        assert list(result.push.items()) == list(expected_push.items())
    assert list(result.tokens) == expected_tokens


@pytest.mark.parametrize(
    ("body", "rule", "account_id", "device_id"),
    [
        (reg(), "AcmePhone", ACCOUNT_ID, DEVICE_ID),
        (reg(Status="Unregistered"), "AcmePhone", ACCOUNT_ID, DEVICE_ID),
        (reg(ua="Yealink SIP-T54W 96.86.0.100"), None, ACCOUNT_ID, DEVICE_ID),
        (reg(Custom_Channel_Vars={}, Account_ID="top-acc"), "AcmePhone", "top-acc", None),
        (
            reg(
                Custom_Channel_Vars={"Account-ID": "ccv-acc", "Authorizing-ID": "ccv-dev"},
                Account_ID="top-acc",
            ),
            "AcmePhone",
            "ccv-acc",
            "ccv-dev",
        ),
        (reg(Custom_Channel_Vars={"Account-ID": "", "Authorizing-ID": 7}), "AcmePhone", None, None),
    ],
    ids=["ok", "unregister", "no-rule", "top-level-fallback", "ccvs-win", "empty-or-non-string-ids"],
)
def test_build_reports_rule_and_ids(
    body: dict[str, Any], rule: str | None, account_id: str | None, device_id: str | None
) -> None:
    result = _run(body)
    assert (result.rule, result.account_id, result.device_id) == (rule, account_id, device_id)


# Custom rules exercising the property map itself: (id, properties, body, expected push)
PROPERTY_CASES: list[tuple[str, dict[str, str], dict[str, Any], dict[str, str] | None]] = [
    (
        "configured-token-proxy-overridden-keeps-position",
        {"Token-Proxy": "x-proxy", "Token-ID": "pn-tok", "Token-Type": "pn-type"},
        reg(f"<sip:u@192.0.2.44;pn-tok={APNS_HEX};pn-type=apple;x-proxy=sip:evil.example.com>"),
        push(Token_Proxy=PROXY_PATH, Token_ID=APNS_HEX, Token_Type="apple"),
    ),
    (
        "integer-and-bool-fields-as-sources",
        {
            "Token-ID": "pn-tok",
            "Token-Type": "pn-type",
            "Reg-Expires": "Expires",
            "First": "First-Registration",
        },
        reg(f"<sip:u@192.0.2.44;pn-tok={APNS_HEX};pn-type=apple>", First_Registration=False),
        push(Token_ID=APNS_HEX, Token_Type="apple", Reg_Expires="600", First="false", Token_Proxy=PROXY_PATH),
    ),
    (
        "nested-and-object-fields-are-not-sources",
        {
            "Token-ID": "pn-tok",
            "CCVs": "Custom-Channel-Vars",
            "App": "Custom-Channel-Vars.Pusher-Application",
        },
        reg(f"<sip:u@192.0.2.44;pn-tok={APNS_HEX}>"),
        push(Token_ID=APNS_HEX, Token_Proxy=PROXY_PATH),
    ),
    (
        "contact-param-beats-top-level-field",
        {"Token-ID": "pn-tok", "Realm-Out": "Realm"},
        reg(f"<sip:u@192.0.2.44;pn-tok={APNS_HEX};realm=from-contact>"),
        push(Token_ID=APNS_HEX, Realm_Out="from-contact", Token_Proxy=PROXY_PATH),
    ),
    (
        "empty-contact-param-falls-back-to-top-level",
        {"Token-ID": "pn-tok", "Realm-Out": "Realm"},
        reg(f"<sip:u@192.0.2.44;pn-tok={APNS_HEX};realm=>"),
        push(Token_ID=APNS_HEX, Realm_Out="acme.sip.example.com", Token_Proxy=PROXY_PATH),
    ),
    (
        "source-name-case-insensitive-for-contact",
        {"Token-ID": "PN-Tok", "Token-Type": "PN-TYPE"},
        reg(f"<sip:u@192.0.2.44;pn-tok={APNS_HEX};pn-type=apple>"),
        push(Token_ID=APNS_HEX, Token_Type="apple", Token_Proxy=PROXY_PATH),
    ),
    (
        "rfc8599-source-names-any-case",
        {"Token-ID": "PN-PRID", "Token-Type": "Pn-Provider", "Token-App": "pn-Param"},
        reg(linphone_rfc8599(f"{APNS_VOIP}:voip", "ABCD1234.org.linphone.phone.voip")),
        push(Token_ID=APNS_VOIP, Token_Type="apple", Token_App="org.linphone.phone", Token_Proxy=PROXY_PATH),
    ),
    ("rule-without-properties", {}, reg(), None),
]


@pytest.mark.parametrize(
    ("properties", "body", "expected_push"),
    [c[1:] for c in PROPERTY_CASES],
    ids=[c[0] for c in PROPERTY_CASES],
)
def test_property_mapping(
    properties: dict[str, str], body: dict[str, Any], expected_push: dict[str, str] | None
) -> None:
    rule = Rule(name="Custom", regex="", properties=properties)
    body = {**body, "User-Agent": "ignored"}
    result = _run(body, (Rule(name="Any", regex=".", properties=properties), rule))
    assert result.rule == "Any"
    if expected_push is None:
        assert result.push is None
        assert result.reason == "rule maps no Token-ID"
    else:
        assert result.push is not None
        assert list(result.push.items()) == list(expected_push.items())


@pytest.mark.parametrize(
    "body",
    [
        reg("<sip:u@192.0.2.44;pn-tok=abc"),
        reg('"unterminated <sip:u@192.0.2.44;pn-tok=abc>'),
        reg("<sip:@>"),
        reg(Contact=DROP),
        reg(Contact=12345),
    ],
    ids=["unbalanced-angle", "unbalanced-quote", "missing-host", "missing-contact", "non-string-contact"],
)
def test_unparsable_contact_propagates_when_rule_matched(body: dict[str, Any]) -> None:
    with pytest.raises(ContactParseError):
        _run(body)


def test_kazoo_sample_files() -> None:
    """The Kazoo sample reg_success must give exactly the sample device push object."""
    body = sample("reg_success_kamailio_master.json")["body"]
    assert body == KAZOO_SAMPLE_BODY
    expected = sample("device_push_object.json")["doc"]["push"]
    config = sample("system_config_pusher_constructed.json")["default"]["User-Agents"]
    rules = [
        Rule(name=name, regex=entry["regex"], properties=entry["properties"])
        for name, entry in config.items()
    ]
    result = push_object_build(rules=rules, fields=body)
    assert result.reason == "ok"
    assert result.push == expected
    assert (result.account_id, result.device_id) == (
        body["Custom-Channel-Vars"]["Account-ID"],
        body["Custom-Channel-Vars"]["Authorizing-ID"],
    )


# (id, user agent, expected rule name) against RULES: first match wins, unanchored, case-sensitive.
MATCH_CASES: list[tuple[str, str | None, str | None]] = [
    ("acme", "AcmePhone iOS 3.2.1", "AcmePhone"),
    ("linphone-ios-5", LINPHONE_IOS_UA, "Linphone RFC 8599"),
    ("linphone-android-5", LINPHONE_ANDROID_UA, "Linphone RFC 8599"),
    ("linphone-iphone-4-legacy", LINPHONE_IOS_LEGACY_UA, "Linphone legacy"),
    ("linphone-android-4-legacy", LINPHONE_ANDROID_LEGACY_UA, "Linphone legacy"),
    ("linphone-desktop", "Linphone Desktop/5.2.0 (Windows 10) LinphoneSDK/5.3.0", "Linphone legacy"),
    ("groundwire", "Groundwire/24.1.3 (build 1234; iOS 17.2; iPhone15,2)", "Acrobits"),
    ("acrobits-softphone", "Acrobits Softphone/6.4.2 (iOS)", "Acrobits"),
    ("zoiper", "Z 5.6.6 v2.10.20.1", "Zoiper"),
    ("bria", "Bria Android release 6.19.3 stamp 117542", "Bria"),
    ("bria-desktop-not-mobile", "Bria 6 release 6.5.2 stamp 115011", None),
    ("sipnetic", "Sipnetic/1.0.1.86 (Android 14; Pixel 8)", "Sipnetic"),
    ("anchored-rule-needs-prefix", "MyAcmePhone 1.0", None),
    ("yealink", "Yealink SIP-T46S 66.86.0.15", None),
    ("polycom", "PolycomVVX-VVX_411-UA/6.4.3.4232", None),
    ("cisco", "Cisco-CP8845/12.8.1", None),
    ("grandstream", "Grandstream GXP2170 1.0.11.34", None),
    ("microsip", "MicroSIP/3.21.3", None),
    ("asterisk", "Asterisk PBX 20.5.0", None),
    ("freeswitch", "FreeSWITCH-mod_sofia/1.10.11-release~64bit", None),
    ("none", None, None),
    ("empty", "", None),
]


@pytest.mark.parametrize(
    ("user_agent", "expected"), [c[1:] for c in MATCH_CASES], ids=[c[0] for c in MATCH_CASES]
)
def test_rule_match(user_agent: str | None, expected: str | None) -> None:
    matched = rule_match(RULES, user_agent)
    assert (matched.name if matched else None) == expected


@pytest.mark.parametrize(
    ("pattern", "user_agent", "matches"),
    [
        ("Phone", "AcmePhone iOS", True),  # unanchored search, like PCRE re:run
        ("phone", "AcmePhone iOS", False),  # case-sensitive
        ("(?i)acmephone", "AcmePhone iOS", True),  # inline flags still work
        (r"iOS \d+", "AcmePhone iOS 17", True),
        (r"\d", "AcmePhone ١٢", False),  # ASCII \d like PCRE without UCP
        ("", "anything", False),  # empty pattern is Kazoo's default ^$
        ("^$", "x", False),
    ],
)
def test_regex_semantics(pattern: str, user_agent: str, matches: bool) -> None:
    rule = Rule(name="r", regex=pattern, properties=KAZOO_PROPS)
    assert (rule_match([rule], user_agent) is rule) is matches


def test_first_matching_rule_wins() -> None:
    broad = Rule(name="broad", regex="Phone", properties=KAZOO_PROPS)
    narrow = Rule(name="narrow", regex="^AcmePhone", properties=KAZOO_PROPS)
    assert rule_match([broad, narrow], "AcmePhone 1") is broad
    assert rule_match([narrow, broad], "AcmePhone 1") is narrow


@pytest.mark.parametrize(
    "pattern",
    ["(", "[a-", "*abc", "(?P<x", "a{2,1}", r"\k<missing>", "(?<=a+)b(?"],
)
def test_compile_rule_regex_invalid(pattern: str) -> None:
    with pytest.raises(RuleError) as excinfo:
        compile_rule_regex(pattern)
    assert pattern in str(excinfo.value)
    assert excinfo.value.code == "rule_invalid"


def test_compile_rule_regex_rejects_non_string() -> None:
    with pytest.raises(RuleError):
        compile_rule_regex(None)  # type: ignore[arg-type]


def test_compile_rule_regex_is_cached_and_empty_means_kazoo_default() -> None:
    assert compile_rule_regex("^AcmePhone") is compile_rule_regex("^AcmePhone")
    assert compile_rule_regex("").pattern == "^$"


def test_hostile_regex_returns_quickly() -> None:
    rule = Rule(name="hostile", regex="(a+)+$", properties=KAZOO_PROPS)
    started = time.monotonic()
    assert rule_match([rule], "a" * 40 + "!") is None
    assert time.monotonic() - started < 1.0


def test_timed_out_rule_is_no_match_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # `regex` optimises (a+)+$ away; alternation overlap still backtracks exponentially.
    hostile = Rule(name="hostile-alternation", regex="(a|aa)+$", properties=KAZOO_PROPS)
    fallback = Rule(name="fallback", regex="a", properties=KAZOO_PROPS)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="registry.pushobject"):
        matched = rule_match([hostile, fallback], "a" * 60 + "!", timeout=0.05)
    assert time.monotonic() - started < 1.0
    assert matched is fallback
    (record,) = [r for r in caplog.records if r.name == "registry.pushobject"]
    assert record.levelno == logging.WARNING
    assert "hostile-alternation" in record.getMessage()
    assert "timed out" in record.getMessage()


def test_invalid_rule_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    broken = Rule(name="broken", regex="(", properties=KAZOO_PROPS)
    good = Rule(name="good", regex="^AcmePhone", properties=KAZOO_PROPS)
    with caplog.at_level(logging.ERROR, logger="registry.pushobject"):
        assert rule_match([broken, good], "AcmePhone 1") is good
    assert any("broken" in r.getMessage() for r in caplog.records)


# (id, a, b, equal?): Kazoo compared Erlang maps key-order-sensitively; here order is irrelevant.
EQUAL_CASES: list[tuple[str, Any, Any, bool]] = [
    ("same-order", KAZOO_SAMPLE_PUSH, dict(KAZOO_SAMPLE_PUSH), True),
    ("reordered", KAZOO_SAMPLE_PUSH, dict(reversed(list(KAZOO_SAMPLE_PUSH.items()))), True),
    ("value-differs", KAZOO_SAMPLE_PUSH, {**KAZOO_SAMPLE_PUSH, "Token-ID": APNS_VOIP}, False),
    ("extra-key", KAZOO_SAMPLE_PUSH, {**KAZOO_SAMPLE_PUSH, "Account-Ref": "x"}, False),
    (
        "missing-key",
        KAZOO_SAMPLE_PUSH,
        {k: v for k, v in KAZOO_SAMPLE_PUSH.items() if k != "Token-Proxy"},
        False,
    ),
    ("both-none", None, None, True),
    ("none-vs-empty", None, {}, False),
    ("push-vs-none", KAZOO_SAMPLE_PUSH, None, False),
    ("both-empty", {}, {}, True),
]


@pytest.mark.parametrize(("a", "b", "equal"), [c[1:] for c in EQUAL_CASES], ids=[c[0] for c in EQUAL_CASES])
def test_push_object_equal(a: Any, b: Any, equal: bool) -> None:
    assert push_object_equal(a, b) is equal
    assert push_object_equal(b, a) is equal


# --- Issue 14: real-client Contacts ---------------------------------------------------------------

ZOIPER_UA = "Z 5.6.6 v2.10.20.1"
BRIA_IOS_UA = "Bria iOS release 6.6.2 stamp 118534"
BRIA_ANDROID_UA = "Bria Android release 6.19.3 stamp 117542"
GROUNDWIRE_UA = "Groundwire/24.1.3 (build 1234; iOS 17.2; iPhone15,2)"
SIPNETIC_UA = "Sipnetic/1.0.1.86 (Android 14; Pixel 8)"
NOTE_LEGACY = " (token read by the legacy parameter names pn-tok/pn-type/app-id; the rule names RFC 8599 ones)"
NOTE_RFC8599 = (
    " (token read by the RFC 8599 parameter names pn-prid/pn-provider/pn-param; the rule names legacy ones)"
)
LINPHONE_LEGACY_IOS_CONTACT = (
    "<sip:alice@198.51.100.20:5060;transport=tls;app-id=org.linphone.phone.voip.prod;pn-type=apple;"
    f'pn-tok={APNS_VOIP};{LINPHONE_LEGACY_EXTRAS}>;+sip.instance="<urn:uuid:{UUID}>"'
)
ZOIPER_RFC8599_CONTACT = (
    "<sip:1001@198.51.100.7:49152;transport=TCP;rinstance=a1b2c3d4e5f60718;pn-provider=apns;"
    f"pn-prid={APNS_VOIP}:voip&{APNS_REMOTE}:remote;pn-param=Q7W4E2R9T1.com.example.zoiper.voip&remote>;"
    f'+sip.instance="<urn:uuid:{UUID}>"'
)


# A rule names its token parameters in one family; a client sending the other family's names is
# read by them (FAMILY_SOURCES), and the reason says so.
# (id, reg_success body, expected reason, push (ordered) or None, tokens, family)
FAMILY_CASES: list[tuple[str, dict[str, Any], str, dict[str, str] | None, list[TokenInfo], str]] = [
    (
        "linphone-rfc8599-rule-legacy-params-ios",
        reg(LINPHONE_LEGACY_IOS_CONTACT, LINPHONE_IOS_UA),
        "ok" + NOTE_LEGACY,
        push(
            Token_App="org.linphone.phone.voip.prod", Token_Type="apple", Token_ID=APNS_VOIP, Token_Proxy=PROXY_PATH
        ),
        [tok(APNS_VOIP, "apple", "org.linphone.phone.voip.prod", "voip")],
        FAMILY_LEGACY,
    ),
    (
        "linphone-rfc8599-rule-legacy-params-android-google",
        reg(
            f"<sip:bob@203.0.113.9:41234;transport=tcp;app-id=929724111839;pn-type=google;pn-tok={FCM_TOKEN}>",
            LINPHONE_ANDROID_UA,
        ),
        "ok" + NOTE_LEGACY,
        push(Token_App="929724111839", Token_Type="google", Token_ID=FCM_TOKEN, Token_Proxy=PROXY_PATH),
        [tok(FCM_TOKEN, "google", "929724111839")],
        FAMILY_LEGACY,
    ),
    (
        "zoiper-legacy-rule-rfc8599-params-decoded",
        reg(ZOIPER_RFC8599_CONTACT, ZOIPER_UA),
        "ok" + NOTE_RFC8599,
        push(Token_App="com.example.zoiper", Token_Type="apple", Token_ID=APNS_VOIP, Token_Proxy=PROXY_PATH),
        [
            tok(APNS_VOIP, "apple", "com.example.zoiper", "voip"),
            tok(APNS_REMOTE, "apple", "com.example.zoiper", "remote"),
        ],
        FAMILY_RFC8599,
    ),
    (
        "bria-legacy-rule-rfc8599-fcm-params",
        reg(
            f"<sip:1001@198.51.100.8:5060;rinstance=0f1e2d3c4b5a6978;transport=tls;pn-provider=fcm;"
            f"pn-prid={FCM_TOKEN};pn-param=com.example.bria>",
            BRIA_ANDROID_UA,
        ),
        "ok" + NOTE_RFC8599,
        push(Token_App="com.example.bria", Token_Type="firebase", Token_ID=FCM_TOKEN, Token_Proxy=PROXY_PATH),
        [tok(FCM_TOKEN, "firebase", "com.example.bria")],
        FAMILY_RFC8599,
    ),
    (
        "groundwire-rfc8599-params-rule-extras-kept",
        reg(
            f"<sip:1001@198.51.100.30:5060;transport=tls;pn-provider=apns.dev;pn-prid={APNS_VOIP}:voip;"
            "pn-param=Q7W4E2R9T1.com.example.cloudsoftphone.voip;account-ref=ACME-1001>",
            GROUNDWIRE_UA,
        ),
        "ok" + NOTE_RFC8599,
        push(
            Token_App="com.example.cloudsoftphone",
            Token_Type="apple",
            Token_ID=APNS_VOIP,
            Token_Public_Proxy=PROXY_URI,
            Account_Ref="ACME-1001",
            Token_Proxy=PROXY_PATH,
        ),
        [tok(APNS_VOIP, "apple", "com.example.cloudsoftphone", "voip", sandbox=True)],
        FAMILY_RFC8599,
    ),
    (
        "own-family-wins-when-both-are-there",
        reg(
            linphone_rfc8599(f"{APNS_VOIP}:voip", "ABCD1234.org.linphone.phone.voip").replace(
                ";pn-provider=", f";pn-tok={APNS_REMOTE};pn-type=apple;pn-provider="
            ),
            LINPHONE_IOS_UA,
        ),
        "ok",
        push(Token_App="org.linphone.phone", Token_Type="apple", Token_ID=APNS_VOIP, Token_Proxy=PROXY_PATH),
        [tok(APNS_VOIP, "apple", "org.linphone.phone", "voip")],
        FAMILY_RFC8599,
    ),
    (
        "own-family-without-a-usable-token-falls-back",
        reg(
            linphone_rfc8599("&:voip", "ABCD1234.org.linphone.phone.voip").replace(
                ";pn-provider=", f";pn-tok={APNS_VOIP};pn-type=apple;app-id=org.linphone.phone.voip.prod;pn-provider="
            ),
            LINPHONE_IOS_UA,
        ),
        "ok" + NOTE_LEGACY,
        push(
            Token_App="org.linphone.phone.voip.prod", Token_Type="apple", Token_ID=APNS_VOIP, Token_Proxy=PROXY_PATH
        ),
        [tok(APNS_VOIP, "apple", "org.linphone.phone.voip.prod", "voip")],
        FAMILY_LEGACY,
    ),
    (
        "neither-family",
        reg("<sip:1001@198.51.100.7:49152;transport=TCP;rinstance=a1b2c3d4e5f60718>", ZOIPER_UA),
        "no token in Contact",
        None,
        [],
        "",
    ),
    (
        "fallback-on-unregister-still-lists-the-tokens",
        reg(LINPHONE_LEGACY_IOS_CONTACT, LINPHONE_IOS_UA, Expires=0),
        "unregister" + NOTE_LEGACY,
        None,
        [tok(APNS_VOIP, "apple", "org.linphone.phone.voip.prod", "voip")],
        FAMILY_LEGACY,
    ),
    (
        "fallback-without-ids",
        reg(ZOIPER_RFC8599_CONTACT, ZOIPER_UA, Custom_Channel_Vars={}),
        "missing Account-ID/Authorizing-ID" + NOTE_RFC8599,
        None,
        [
            tok(APNS_VOIP, "apple", "com.example.zoiper", "voip"),
            tok(APNS_REMOTE, "apple", "com.example.zoiper", "remote"),
        ],
        FAMILY_RFC8599,
    ),
]


@pytest.mark.parametrize(
    ("body", "reason", "expected_push", "expected_tokens", "family"),
    [c[1:] for c in FAMILY_CASES],
    ids=[c[0] for c in FAMILY_CASES],
)
def test_the_other_naming_family_is_tried(
    body: dict[str, Any],
    reason: str,
    expected_push: dict[str, str] | None,
    expected_tokens: list[TokenInfo],
    family: str,
) -> None:
    result = _run(body)
    assert (result.reason, result.family) == (reason, family)
    assert (list(result.push.items()) if result.push else None) == (
        list(expected_push.items()) if expected_push else None
    )
    assert list(result.tokens) == expected_tokens


# (id, properties, family, properties read when falling back to the other family)
FAMILY_MAPPING_CASES: list[tuple[str, dict[str, str], str, dict[str, str]]] = [
    ("kazoo-legacy", KAZOO_PROPS, FAMILY_LEGACY, RFC8599_PROPS),
    ("rfc8599", RFC8599_PROPS, FAMILY_RFC8599, KAZOO_PROPS),
    ("rfc8599-any-case", {"Token-ID": "PN-PRID"}, FAMILY_RFC8599, {"Token-ID": "pn-tok"}),
    (
        "own-legacy-names-only-mapped-keys-move",
        {"Token-ID": "x-token", "Account-Ref": "account-ref"},
        FAMILY_LEGACY,
        {"Token-ID": "pn-prid", "Account-Ref": "account-ref"},
    ),
    (
        "top-level-field-source-replaced-too",
        {"Token-ID": "pn-tok", "Token-Type": "X-Type"},
        FAMILY_LEGACY,
        {"Token-ID": "pn-prid", "Token-Type": "pn-provider"},
    ),
]


@pytest.mark.parametrize(
    ("properties", "family", "fallback"),
    [c[1:] for c in FAMILY_MAPPING_CASES],
    ids=[c[0] for c in FAMILY_MAPPING_CASES],
)
def test_family_mapping(properties: dict[str, str], family: str, fallback: dict[str, str]) -> None:
    assert rule_family(properties) == family
    other = FAMILY_LEGACY if family == FAMILY_RFC8599 else FAMILY_RFC8599
    assert family_properties(properties, other) == fallback


# One malformed Contact parameter the rule does not read is skipped (and reported); one it reads
# refuses the Contact as before. (id, body, expected push Token-ID, expected skipped_params)
SKIPPED_PARAM_CASES: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    (
        "bria-style-instance-in-bare-angle-brackets",
        reg(
            "<sip:1001@198.51.100.8:5060;rinstance=0f1e2d3c4b5a6978;transport=tls;app-id=com.acme.phone.voip.prod;"
            f"pn-type=apple;pn-tok={APNS_VOIP}>;+sip.instance=<urn:uuid:{UUID}>;reg-id=1",
            BRIA_IOS_UA,
        ),
        APNS_VOIP,
        ("+sip.instance (value in angle brackets without quotes)",),
    ),
    (
        "linphone-rfc8599-specs-cut-short",
        reg(linphone_rfc8599(f"{APNS_VOIP}:voip", "ABCD1234.org.linphone.phone.voip")[:-12], LINPHONE_IOS_UA),
        APNS_VOIP,
        ("+org.linphone.specs (unbalanced quote in value)",),
    ),
    (
        "sipnetic-style-unclosed-quote-in-the-uri",
        reg(
            f'<sip:bob@203.0.113.9:41234;transport=tcp;x-label="work;pn-provider=fcm;pn-prid={FCM_TOKEN};'
            "pn-param=929724111839>;expires=600",
            SIPNETIC_UA,
        ),
        FCM_TOKEN,
        ("x-label (unbalanced quote in value)",),
    ),
    (
        "groundwire-style-bad-name",
        reg(
            f"<sip:1001@198.51.100.30:5060;transport=tls;pn-tok={APNS_VOIP};pn-type=apple;"
            "app-id=com.example.cloudsoftphone.voip;acro[bits]=1;account-ref=ACME-1001>",
            GROUNDWIRE_UA,
        ),
        APNS_VOIP,
        ("acro[bits] (invalid parameter name)",),
    ),
]


@pytest.mark.parametrize(
    ("body", "token", "skipped"), [c[1:] for c in SKIPPED_PARAM_CASES], ids=[c[0] for c in SKIPPED_PARAM_CASES]
)
def test_a_malformed_param_the_rule_does_not_read_is_skipped(
    body: dict[str, Any], token: str, skipped: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="registry.pushobject"):
        result = _run(body)
    assert result.reason == "ok" and result.push is not None
    assert result.push["Token-ID"] == token
    assert result.skipped_params == skipped
    assert any(skipped[0] in r.getMessage() and result.rule in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (reg(f'<sip:u@192.0.2.44;app-id=com.acme.phone.voip.prod;pn-type=apple;pn-tok="{APNS_HEX}>'), "pn-tok"),
        (reg(f'<sip:u@192.0.2.44;pn-tok={APNS_HEX};pn-type=apple>;app-id="com.acme"phone'), "app-id"),
        (reg(f"<sip:u@192.0.2.44;pn-tok={APNS_HEX};pn-type=apple>;pn type=apple;PN-Type=<x>"), "pn-type"),
        # The other family's parameters are read too once the rule's own yield no token.
        (reg(f'<sip:alice@198.51.100.20;pn-type=apple;pn-tok="{APNS_VOIP}>', LINPHONE_IOS_UA), "pn-tok"),
        (
            reg(
                f"<sip:1001@198.51.100.30;pn-tok={APNS_VOIP};pn-type=apple;app-id=com.example.cloudsoftphone.voip>"
                ';account-ref="ACME"1001',
                GROUNDWIRE_UA,
            ),
            "account-ref",
        ),
    ],
    ids=["token-unbalanced-quote", "app-text-after-quote", "type-in-angle-brackets", "fallback-token", "extra"],
)
def test_a_malformed_param_the_rule_reads_refuses_the_contact(body: dict[str, Any], name: str) -> None:
    with pytest.raises(ContactParseError, match=f"'{name}'.*is malformed") as caught:
        _run(body)
    assert caught.value.code == "contact_unparsable"


# What push_token_problem says of a token for a Token-Type: (id, token, type, problem or None)
TOKEN_PROBLEM_CASES: list[tuple[str, str, str, str | None]] = [
    ("apns-64-hex", APNS_HEX, "apple", None),
    ("apns-upper-hex", APNS_HEX.upper(), "apple", None),
    ("apns-66-hex", APNS_HEX + "ab", "apple", None),
    ("apns-200-hex", "ab" * 100, "apns", None),
    ("apns-dev-type", APNS_HEX, "apns.dev", None),
    ("apns-type-any-case", APNS_HEX, "Apple", None),
    (
        "apns-63-hex",
        APNS_HEX[:63],
        "apple",
        "APNs device token (Token-Type 'apple') must be an even number of hex digits from 64 to 200: it has 63",
    ),
    (
        "apns-62-hex",
        APNS_HEX[:62],
        "apple",
        "APNs device token (Token-Type 'apple') must be an even number of hex digits from 64 to 200: it has 62",
    ),
    (
        "apns-202-hex",
        "ab" * 101,
        "apple",
        "APNs device token (Token-Type 'apple') must be an even number of hex digits from 64 to 200: it has 202",
    ),
    (
        "apns-not-hex",
        APNS_HEX[:5] + "g" + APNS_HEX[6:],
        "apple",
        "APNs device token (Token-Type 'apple') must be hex digits: 'g' at offset 5",
    ),
    (
        "apns-type-with-an-fcm-token",
        FCM_TOKEN,
        "apple",
        "APNs device token (Token-Type 'apple') must be hex digits: 'H' at offset 1",
    ),
    ("fcm", FCM_TOKEN, "firebase", None),
    ("fcm-base64-padding", "ab+cd/ef==", "fcm", None),
    ("fcm-google-alias", FCM_TOKEN, "google", None),
    ("fcm-android-alias", FCM_TOKEN, "android", None),
    ("fcm-1024", "a" * 1024, "firebase", None),
    ("fcm-1025", "a" * 1025, "firebase", "token is 1025 characters, more than 1024"),
    (
        "fcm-percent",
        "abc%zz",
        "firebase",
        "FCM registration token (Token-Type 'firebase') must be letters, digits and -_:.~+/=: '%' at offset 3",
    ),
    (
        "fcm-non-ascii-letter",
        "abcé",
        "firebase",
        "FCM registration token (Token-Type 'firebase') must be letters, digits and -_:.~+/=: U+00E9 at offset 3",
    ),
    (
        "unknown-type-url",
        "https://push.example.com/v1/abc?x=1",
        "webpush",
        "Token-Type 'webpush' is none pusher can push to (apns/apns.dev/apple or android/fcm/firebase/gcm/google)",
    ),
    (
        "unknown-type-blackberry",
        APNS_HEX,
        "BlackBerry",
        "Token-Type 'BlackBerry' is none pusher can push to (apns/apns.dev/apple or android/fcm/firebase/gcm/google)",
    ),
    ("gcm", FCM_TOKEN, "gcm", None),
    ("no-type-non-ascii-letter", "jeton-é", "", None),
    ("space", "abc def", "", "token holds whitespace (U+0020 at offset 3)"),
    ("tab", "\tabc", "apple", "token holds whitespace (U+0009 at offset 0)"),
    ("nbsp", "abc\u00a0", "firebase", "token holds whitespace (U+00A0 at offset 3)"),
    ("line-separator", "a\u2028b", "", "token holds whitespace (U+2028 at offset 1)"),
    ("nul", "a\x00b", "", "token holds a control or format character (U+0000 at offset 1)"),
    ("del", "ab\x7f", "", "token holds a control or format character (U+007F at offset 2)"),
    ("zero-width-space", "ab\u200bc", "firebase", "token holds a control or format character (U+200B at offset 2)"),
    ("rtl-override", "\u202eabc", "", "token holds a control or format character (U+202E at offset 0)"),
    ("bom", "\ufeffabc", "", "token holds a control or format character (U+FEFF at offset 0)"),
    ("lone-surrogate", "ab\ud800", "", "token holds a control or format character (U+D800 at offset 2)"),
    ("empty", "", "apple", "token is empty"),
]


@pytest.mark.parametrize(
    ("token", "token_type", "problem"),
    [c[1:] for c in TOKEN_PROBLEM_CASES],
    ids=[c[0] for c in TOKEN_PROBLEM_CASES],
)
def test_push_token_problem(token: str, token_type: str, problem: str | None) -> None:
    assert push_token_problem(token, token_type) == problem


# A registration whose token cannot be stored is ignored with a reason naming the rule and the
# problem: no push object, no tokens. (id, body, expected reason)
TOKEN_REFUSED_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "groundwire-quoted-token-with-a-space",
        reg(
            "<sip:1001@198.51.100.30:5060;transport=tls;pn-type=apple;app-id=com.example.cloudsoftphone.voip>"
            f';pn-tok="{APNS_VOIP[:32]} {APNS_VOIP[32:]}"',
            GROUNDWIRE_UA,
        ),
        "token refused: rule 'Acrobits': token holds whitespace (U+0020 at offset 32)",
    ),
    (
        "acme-percent-encoded-space",
        reg(KAZOO_SAMPLE_BODY["Contact"].replace(APNS_HEX, f"{APNS_HEX[:10]}%20{APNS_HEX[10:]}")),
        "token refused: rule 'AcmePhone': token holds whitespace (U+0020 at offset 10)",
    ),
    (
        "acme-trailing-space-inside-the-uri",
        reg(KAZOO_SAMPLE_BODY["Contact"].replace(f"pn-tok={APNS_HEX}", f"pn-tok={APNS_HEX} x")),
        "token refused: rule 'AcmePhone': token holds whitespace (U+0020 at offset 64)",
    ),
    (
        "acme-tab-in-quoted-value",
        reg(f'<sip:u@192.0.2.44;pn-type=apple;app-id=com.acme.phone.voip.prod>;pn-tok="{APNS_HEX}\t"'),
        "token refused: rule 'AcmePhone': token holds whitespace (U+0009 at offset 64)",
    ),
    (
        "acme-percent-encoded-zero-width-space",
        reg(KAZOO_SAMPLE_BODY["Contact"].replace(APNS_HEX, f"%E2%80%8B{APNS_HEX}")),
        "token refused: rule 'AcmePhone': token holds a control or format character (U+200B at offset 0)",
    ),
    (
        "acme-apns-token-one-digit-short",
        reg(KAZOO_SAMPLE_BODY["Contact"].replace(APNS_HEX, APNS_HEX[:-1])),
        "token refused: rule 'AcmePhone': APNs device token (Token-Type 'apple') must be an even number of hex "
        "digits from 64 to 200: it has 63",
    ),
    (
        "linphone-remote-token-bad-voip-good",
        reg(
            linphone_rfc8599(f"{APNS_VOIP}:voip&{APNS_REMOTE[:40]}:remote", "ABCD1234.org.linphone.phone.voip&remote"),
            LINPHONE_IOS_UA,
        ),
        "token refused: rule 'Linphone RFC 8599': remote APNs device token (Token-Type 'apple') must be an even "
        "number of hex digits from 64 to 200: it has 40",
    ),
    (
        "sipnetic-fcm-token-with-malformed-percent",
        reg(
            f"<sip:bob@203.0.113.9:41234;transport=tcp;pn-provider=fcm;pn-prid={FCM_TOKEN}%zz;pn-param=929724111839>",
            SIPNETIC_UA,
        ),
        "token refused: rule 'Sipnetic': FCM registration token (Token-Type 'firebase') must be letters, digits "
        f"and -_:.~+/=: '%' at offset {len(FCM_TOKEN)}",
    ),
    (
        "zoiper-fallback-family-token-refused",
        reg(ZOIPER_RFC8599_CONTACT.replace(f"{APNS_VOIP}:voip", f"{APNS_VOIP}%20:voip"), ZOIPER_UA),
        "token refused: rule 'Zoiper': voip token holds whitespace (U+0020 at offset 64)" + NOTE_RFC8599,
    ),
    (
        "unknown-provider-whitespace",
        reg(linphone_rfc8599("endpoint%20123", "vapid-key", provider="webpush"), LINPHONE_IOS_UA),
        "token refused: rule 'Linphone RFC 8599': token holds whitespace (U+0020 at offset 8)",
    ),
    (
        # The push object would name a type no push_req can go to: the stored one is kept instead.
        "rfc8599-unknown-provider",
        reg(linphone_rfc8599("endpoint-123", "vapid-key", provider="webpush"), LINPHONE_IOS_UA),
        "token refused: rule 'Linphone RFC 8599': Token-Type 'webpush' is none pusher can push to "
        "(apns/apns.dev/apple or android/fcm/firebase/gcm/google)",
    ),
    (
        "legacy-unknown-pn-type",
        reg(KAZOO_SAMPLE_BODY["Contact"].replace("pn-type=apple", "pn-type=blackberry")),
        "token refused: rule 'AcmePhone': Token-Type 'blackberry' is none pusher can push to "
        "(apns/apns.dev/apple or android/fcm/firebase/gcm/google)",
    ),
    (
        "refused-on-unregister-too",
        reg(KAZOO_SAMPLE_BODY["Contact"].replace(APNS_HEX, f"{APNS_HEX[:10]}%20{APNS_HEX[10:]}"), Expires=0),
        "token refused: rule 'AcmePhone': token holds whitespace (U+0020 at offset 10)",
    ),
    (
        "too-long-for-the-store",
        reg(f"<sip:u@192.0.2.44;pn-tok={'a' * 1025};pn-type=firebase;app-id=com.acme.phone>"),
        "token refused: rule 'AcmePhone': token is 1025 characters, more than 1024",
    ),
]


@pytest.mark.parametrize(
    ("body", "reason"), [c[1:] for c in TOKEN_REFUSED_CASES], ids=[c[0] for c in TOKEN_REFUSED_CASES]
)
def test_a_token_that_cannot_be_stored_is_refused(body: dict[str, Any], reason: str) -> None:
    result = _run(body)
    assert result.reason == reason
    assert result.push is None and result.tokens == ()
    assert (result.account_id, result.device_id) == (ACCOUNT_ID, DEVICE_ID)


def _storable(text: str) -> bool:
    return not any(c.isspace() or unicodedata.category(c)[0] in "CZ" for c in text)


# Any character, and runs of the ones that matter here (whitespace, controls, format characters).
TOKEN_TEXT = st.one_of(
    st.text(st.characters(codec=None), max_size=80),
    st.builds(
        lambda head, bad, tail: head + bad + tail,
        st.sampled_from([APNS_HEX, FCM_TOKEN, APNS_HEX[:40], ""]),
        st.text(st.sampled_from(" \t\u00a0\u2028\u200b\u202e\ufeff\x00\x7f\x85\u3000"), min_size=1, max_size=3),
        st.sampled_from(["", APNS_HEX[:24], ":voip", "&" + APNS_REMOTE + ":remote"]),
    ),
    st.sampled_from([APNS_HEX, FCM_TOKEN, f"{APNS_VOIP}:voip&{APNS_REMOTE}:remote"]),
)
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~:&")


def _percent_encode(text: str) -> str:
    return "".join(
        c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in text
    )


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=600, deadline=None)
@given(
    token=TOKEN_TEXT,
    token_type=st.sampled_from(["apple", "firebase", "google", "webpush", ""]),
    family=st.sampled_from(["legacy", "rfc8599"]),
    form=st.sampled_from(["percent-encoded-uri-param", "quoted-header-param", "raw-uri-param"]),
    ua=st.sampled_from(["AcmePhone iOS 3.2.1", LINPHONE_IOS_UA, ZOIPER_UA]),
    expires=st.sampled_from([600, 0]),
)
def test_no_token_with_whitespace_or_control_characters_is_ever_kept(
    token: str, token_type: str, family: str, form: str, ua: str, expires: int
) -> None:
    """Whatever a client puts in its token parameter, in whatever form, with whichever rule and
    naming family: every token a build hands over to be stored is free of whitespace and control
    characters, and passes push_token_problem."""
    names = ("pn-tok", "pn-type", "app-id") if family == "legacy" else ("pn-prid", "pn-provider", "pn-param")
    provider = {"apple": "apns", "firebase": "fcm"}.get(token_type, token_type) if family == "rfc8599" else token_type
    if form == "percent-encoded-uri-param":
        contact = f"<sip:u@192.0.2.44;{names[0]}={_percent_encode(token)};{names[1]}={provider};{names[2]}=com.acme>"
    elif form == "quoted-header-param":
        contact = f"<sip:u@192.0.2.44;{names[1]}={provider};{names[2]}=com.acme>;{names[0]}={_quoted(token)}"
    else:
        contact = f"<sip:u@192.0.2.44;{names[0]}={token};{names[1]}={provider};{names[2]}=com.acme>"
    try:
        result = _run(reg(contact, ua, Expires=expires))
    except ContactParseError:
        event("Contact refused")
        return
    event(result.reason.split(":")[0].split(" (")[0])
    for info in result.tokens:
        assert _storable(info.token), (info.token, result.reason)
        assert push_token_problem(info.token, info.type) is None
    if result.push is not None:
        assert _storable(result.push["Token-ID"])
        assert result.reason.startswith("ok")


# Positions after an import: (id, imported names in document order, existing (name, position), expected)
POSITION_CASES: list[tuple[str, list[str], list[tuple[str, int]], dict[str, int]]] = [
    ("fresh", ["AcmePhone", "Linphone"], [], {"AcmePhone": 10, "Linphone": 20}),
    (
        "stale-rule-goes-after-the-document",
        ["AcmePhone", "LinphoneSDK-RFC8599"],
        [("AcmePhone", 10), ("Linphone", 20)],
        {"AcmePhone": 10, "LinphoneSDK-RFC8599": 20, "Linphone": 30},
    ),
    (
        "document-order-wins-over-stored-order",
        ["B", "A"],
        [("A", 10), ("B", 20)],
        {"B": 10, "A": 20},
    ),
    (
        "others-keep-their-order-ties-broken-by-name",
        ["New"],
        [("Zeta", 5), ("Alpha", 5), ("First", 1), ("Last", 900)],
        {"New": 10, "First": 20, "Alpha": 30, "Zeta": 40, "Last": 50},
    ),
    ("name-twice-keeps-its-first-place", ["A", "B", "A"], [], {"A": 10, "B": 20}),
    ("nothing-imported-renumbers-all", [], [("B", 7), ("A", 7)], {"A": 10, "B": 20}),
]


@pytest.mark.parametrize(
    ("imported", "existing", "expected"), [c[1:] for c in POSITION_CASES], ids=[c[0] for c in POSITION_CASES]
)
def test_rule_positions_assign(imported: list[str], existing: list[tuple[str, int]], expected: dict[str, int]) -> None:
    positions = rule_positions_assign(imported=imported, existing=existing)
    assert positions == expected
    assert len(set(positions.values())) == len(positions)
    assert rule_positions_assign(imported=imported, existing=list(reversed(existing))) == expected
