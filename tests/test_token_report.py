"""/report/<slug>/<secret>/: the HTTP face of push token reports (Acrobits' Push Token Reporter), driven
as the apps send them (GET with the template in the query string, POST form or JSON), and as an
attacker would (wrong secrets, huge, malformed, path-like and Unicode input)."""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.test import Client

from pusher_site import report as report_view
from pusher_site.logfilters import ReportPathFilter, report_path_mask
from registry import reporting
from registry.models import Device, ReporterAuth, TokenReporter
from registry.reporter import report_signature
from registry.services import registration_apply

pytestmark = pytest.mark.django_db

ACCOUNT, DEVICE = "4fd0ba7a2f5e3c4d8e9f0a1b2c3d4e5f", "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
PROXY = "sip:10.20.30.40:5060;transport=udp"
VOIP = "9f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
SECRET = "gw-secret-0123456789abcdefghij"
URL = f"/report/groundwire/{SECRET}/"
PARAMS = {"username": "1001", "realm": "acme.example.com", "selector": "12869E0E6E55:7C3A0D14",
          "pushTokenIncomingCall": VOIP, "pushappid_incoming_call": "cz.acrobits.groundwire.voip"}


@pytest.fixture(autouse=True)
def _fresh_limits():
    report_view.limits_reset()
    yield
    report_view.limits_reset()


@pytest.fixture
def groundwire(db) -> TokenReporter:
    reporter = reporting.token_reporter_create(slug="groundwire", secret=SECRET, fixed={"Token-Type": "apple"},
                                               user_agent_regex="^Groundwire")
    registration_apply(fields={
        "Username": "1001", "Realm": "acme.example.com", "User-Agent": "Groundwire/6.2.1", "Expires": 600,
        "Contact": "<sip:1001@192.0.2.7:5060>", "Proxy-Path": PROXY,
        "Custom-Channel-Vars": {"Account-ID": ACCOUNT, "Authorizing-ID": DEVICE},
    })
    return reporter


@pytest.fixture
def app() -> Client:
    return Client(enforce_csrf_checks=True, REMOTE_ADDR="198.51.100.7")  # an app: no session, no CSRF token


def stored() -> dict | None:
    return Device.objects.get(device_id=DEVICE).push


# --- The ways an app reports ---------------------------------------------------------------------------


def test_a_get_with_the_acrobits_template_stores_the_push_object(groundwire, app) -> None:
    response = app.get(URL, PARAMS)
    assert response.status_code == 200 and response.json() == {"outcome": "updated"}
    assert stored() == {"Token-ID": VOIP, "Token-App": "cz.acrobits.groundwire.voip", "Token-Type": "apple",
                        "Token-Proxy": PROXY}
    # The app reports at every start: the same report again writes nothing.
    assert app.get(URL, PARAMS).json() == {"outcome": "unchanged"}
    # Without the trailing slash too: no redirect (a POST body would not survive one).
    assert app.get(URL.rstrip("/"), PARAMS).status_code == 200


def test_a_post_form_and_a_post_json_store_it_too(groundwire, app) -> None:
    form = "&".join(f"{k}={v}" for k, v in PARAMS.items())  # pushTokenReporterPostData, as Acrobits documents it
    response = app.post(URL, form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and stored()["Token-ID"] == VOIP
    assert app.post(URL, PARAMS).json() == {"outcome": "unchanged"}  # multipart/form-data, as a browser sends
    other = "ab" * 32
    response = app.post(URL, json.dumps({**PARAMS, "pushTokenIncomingCall": other}), content_type="application/json")
    assert response.status_code == 200 and stored()["Token-ID"] == other
    # Some parameters in the URL, the rest in the body.
    query = "username=1001&realm=acme.example.com"
    body = f"pushTokenIncomingCall={VOIP}&pushappid_incoming_call=cz.acrobits.groundwire.voip"
    response = app.post(f"{URL}?{query}", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and stored()["Token-ID"] == VOIP


def test_a_signed_report(groundwire, app) -> None:
    reporter = reporting.token_reporter_update(reporter=groundwire, auth=ReporterAuth.SIGNATURE)
    body = json.dumps(PARAMS).encode()
    now = str(int(time.time()))

    def signed(signature: str, timestamp: str = now, url: str = "/report/groundwire/"):
        return app.post(url, body, content_type="application/json", HTTP_X_PUSHER_TIMESTAMP=timestamp,
                        HTTP_X_PUSHER_SIGNATURE=signature)

    good = report_signature(secret=SECRET, timestamp=now, method="POST", path="/report/groundwire/", query="",
                            body=body)
    assert signed(f"sha256={good}").status_code == 200 and stored()["Token-ID"] == VOIP
    assert signed("0" * 64).status_code == 403
    stale = str(int(time.time()) - 3600)
    old = report_signature(secret=SECRET, timestamp=stale, method="POST", path="/report/groundwire/", query="",
                           body=body)
    assert signed(old, stale).status_code == 403
    assert app.post("/report/groundwire/", body, content_type="application/json").json()["code"] == \
        "signature_missing"
    assert signed(good, url=URL).json()["code"] == "signature_required"  # a path secret is no signature
    assert reporter.auth == ReporterAuth.SIGNATURE


# --- Refusals ------------------------------------------------------------------------------------------------


def test_authentication_refusals(groundwire, app) -> None:
    missing = app.get("/report/groundwire/", PARAMS)
    assert missing.status_code == 401 and missing.json()["code"] == "secret_missing"
    for wrong in ("x" * 30, SECRET[:-1], SECRET + "x", SECRET.upper(), "é" * 30, "%00" * 10):
        response = app.get(f"/report/groundwire/{wrong}/", PARAMS)
        assert response.status_code == 403 and response.json()["code"] == "authentication_failed", wrong
    assert stored() is None


def test_unknown_and_disabled_reporters_are_404(groundwire, app) -> None:
    assert app.get(f"/report/nobody/{SECRET}/", PARAMS).json()["code"] == "reporter_unknown"
    reporting.token_reporter_update(reporter=groundwire, enabled=False)
    response = app.get(URL, PARAMS)
    assert response.status_code == 404 and response.json()["code"] == "reporter_unknown"


def test_no_device_is_one_404_whatever_the_reason(groundwire, app) -> None:
    answers = [app.get(URL, {**PARAMS, **change}) for change in ({"username": "9999"}, {"realm": "globex.example.com"})]
    assert [a.status_code for a in answers] == [404, 404]
    assert answers[0].content == answers[1].content
    assert answers[0].json() == {"code": "device_unknown", "message": "no device answers to this account"}


def test_a_device_without_a_known_proxy_is_409(groundwire, app) -> None:
    Device.objects.filter(device_id=DEVICE).update(last_proxy_path="")
    response = app.get(URL, PARAMS)
    assert response.status_code == 409 and response.json()["code"] == "device_unroutable"


HOSTILE = [
    ("no token", "get", {**PARAMS, "pushTokenIncomingCall": ""}, None, 400, "report_invalid"),
    ("token not hex", "get", {**PARAMS, "pushTokenIncomingCall": "zz" * 32}, None, 400, "report_invalid"),
    ("token with a control character", "get", {**PARAMS, "pushTokenIncomingCall": VOIP + "\x07"}, None, 400,
     "report_invalid"),
    ("NUL in an unmapped parameter", "get", {**PARAMS, "extra": "a\x00b"}, None, 400, "bad_request"),
    ("username path-like", "get", {**PARAMS, "username": "../../etc/passwd"}, None, 400, "report_invalid"),
    ("username in Cyrillic", "get", {**PARAMS, "username": "іvan"}, None, 400, "report_invalid"),
    ("long value", "get", {**PARAMS, "pad": "x" * 3000}, None, 400, "bad_request"),
    ("too many parameters", "get", {**PARAMS, **{f"p{i}": "1" for i in range(60)}}, None, 400, "bad_request"),
    ("query string too long", "get", {**PARAMS, **{f"q{i}": "y" * 100 for i in range(45)}}, None, 414,
     "uri_too_long"),
    ("body too large", "post", None, ("application/json", json.dumps({**PARAMS, "pad": "x" * 9000})), 413,
     "body_too_large"),
    ("JSON not an object", "post", None, ("application/json", json.dumps([PARAMS])), 400, "bad_request"),
    ("JSON nested", "post", None, ("application/json", json.dumps({**PARAMS, "username": {"$ne": 1}})), 400,
     "bad_request"),
    ("JSON too deep", "post", None, ("application/json", "[" * 3000 + "]" * 3000), 400, "bad_request"),
    ("JSON broken", "post", None, ("application/json", '{"username": "1001"'), 400, "bad_request"),
    ("JSON lone surrogate", "post", None, ("application/json", '{"username": "\\ud800", "realm": "x"}'), 400,
     "bad_request"),
    ("body not UTF-8", "post", None, ("application/x-www-form-urlencoded", b"username=\xff\xfe"), 400,
     "bad_request"),
    ("XML body", "post", None, ("application/xml", "<report/>"), 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(("method", "params", "body", "status", "code"), [h[1:] for h in HOSTILE],
                         ids=[h[0] for h in HOSTILE])
def test_hostile_input_is_refused_with_a_clear_answer(groundwire, app, method, params, body, status, code) -> None:
    if method == "get":
        response = app.get(URL, params)
    else:
        content_type, data = body
        response = app.post(URL, data, content_type=content_type)
    assert response.status_code == status and response.json()["code"] == code, response.content[:300]
    assert stored() is None


def test_a_parameter_given_twice_is_refused(groundwire, app) -> None:
    query = "&".join(f"{k}={v}" for k, v in PARAMS.items())
    response = app.get(f"{URL}?{query}&username=1002")
    assert response.status_code == 400 and "given more than once" in response.json()["message"]
    response = app.post(f"{URL}?username=1001", PARAMS)
    assert response.status_code == 400 and "'username'" in response.json()["message"]


def test_other_methods_and_paths(groundwire, app) -> None:
    response = app.put(URL, json.dumps(PARAMS), content_type="application/json")
    assert response.status_code == 405 and response["Allow"] == "GET, POST"
    for path in ("/report/groundwire/a/b/", "/report/ground%2Fwire/x/", "/report/../api/v1/",
                 f"/report/{'g' * 65}/{SECRET}/", f"/report/groundwire/{'s' * 300}/"):
        assert app.get(path, PARAMS).status_code == 404, path
    assert stored() is None


def test_reports_for_one_account_are_limited(groundwire, app) -> None:
    for _ in range(report_view.REPORTS_PER_ACCOUNT_PER_MINUTE):
        assert app.get(URL, PARAMS).status_code == 200
    response = app.get(URL, PARAMS)
    assert response.status_code == 429 and response.json()["code"] == "too_many_reports"
    assert 1 <= int(response["Retry-After"]) <= 60


def test_spellings_of_one_account_share_its_limit(groundwire, app) -> None:
    """" 1001", "1001 " (a "+" left unencoded in a query string arrives as a space) and
    "ACME.example.com " store to the one device: they count against its one limit."""
    spellings = [("1001", "acme.example.com"), (" 1001", "acme.example.com"), ("1001 ", "ACME.example.com"),
                 ("1001", " acme.example.com ")]
    for n in range(report_view.REPORTS_PER_ACCOUNT_PER_MINUTE):
        username, realm = spellings[n % len(spellings)]
        assert app.get(URL, {**PARAMS, "username": username, "realm": realm}).status_code == 200
    response = app.get(URL, {**PARAMS, "username": " 1001 "})
    assert response.status_code == 429 and response.json()["code"] == "too_many_reports"


def test_failures_past_the_limit_are_429_and_logged_once_and_the_right_secret_still_works(groundwire, app,
                                                                                            caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="pusher_site.report"):
        for _ in range(report_view.AUTH_FAILURES_PER_MINUTE):
            assert app.get(f"/report/groundwire/{'x' * 30}/", PARAMS).status_code == 403
        for _ in range(5):
            response = app.get(f"/report/groundwire/{'y' * 30}/", PARAMS)
            assert response.status_code == 429 and response.json()["code"] == "too_many_failures"
            assert 1 <= int(response["Retry-After"]) <= 60
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == report_view.AUTH_FAILURES_PER_MINUTE + 1  # each failure, and one lockout line
    assert len([line for line in lines if "failed attempts from 198.51.100.7 within a minute" in line]) == 1
    # Behind a proxy every app shares one address: a right secret is still taken.
    assert app.get(URL, PARAMS).status_code == 200


def test_an_undecryptable_secret_is_503_and_logged(groundwire, app, settings, caplog) -> None:
    from cryptography.fernet import Fernet

    from core import fields

    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    fields._fernet.cache_clear()
    try:
        with caplog.at_level(logging.ERROR, logger="pusher_site.report"):
            response = app.get(URL, PARAMS)
    finally:
        fields._fernet.cache_clear()
    assert response.status_code == 503 and response.json()["code"] == "reporter_unusable"
    assert any("cannot authenticate reports" in r.getMessage() for r in caplog.records)


# --- Nothing secret in the logs ----------------------------------------------------------------------------


def test_no_log_line_holds_the_secret_or_a_token(groundwire, app, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        app.get(URL, PARAMS)
        app.get(f"/report/groundwire/{SECRET[:-1]}z/", PARAMS)
        app.get(URL, {**PARAMS, "username": "9999"})
        app.get(URL, {**PARAMS, "pushTokenIncomingCall": VOIP + "zz"})
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "token report via 'groundwire' for 1001@acme.example.com" in text  # logged, with context
    assert "authentication_failed" in text and "device_unknown" in text and "report_invalid" in text
    assert SECRET not in text and SECRET[:-1] not in text and VOIP not in text
    assert not [r for r in caplog.records if r.name == "django.request"]  # Django did not log the path


def test_the_log_filter_masks_report_urls_wherever_they_appear() -> None:
    line = f'"GET /report/groundwire/{SECRET}/?username=1001&pushTokenIncomingCall={VOIP} HTTP/1.1" 200 22'
    masked = report_path_mask(line)
    assert masked == '"GET /report/groundwire/***/?*** HTTP/1.1" 200 22'
    assert report_path_mask("Forbidden: /report/gw/") == "Forbidden: /report/gw/"
    assert report_path_mask("GET /api/v1/devices/?token=abc") == "GET /api/v1/devices/?token=abc"
    record = logging.LogRecord("django.server", logging.INFO, __file__, 1, '"%s" %s %s',
                               (f"GET /report/gw/{SECRET}/?t={VOIP} HTTP/1.1", 200, 22), None)
    assert ReportPathFilter().filter(record) and SECRET not in record.getMessage() and VOIP not in record.getMessage()


def test_the_logging_configuration_installs_the_filter() -> None:
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler))
    assert any(isinstance(f, ReportPathFilter) for f in handler.filters)
