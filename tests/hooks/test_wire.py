"""The webhook request as pure functions: URL rules, signature, body, retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from hooks import wire

URLS = [
    # (url, refused because, "" when accepted)
    ("https://hooks.example.com/pusher", ""),
    ("http://127.0.0.1:8080/in?token=abc", ""),
    ("http://[::1]:9000/", ""),
    ("HTTPS://Hooks.Example.com/x", ""),
    ("ftp://files.example.com/", "only http:// and https://"),
    ("javascript:alert(1)", "only http:// and https://"),
    ("file:///etc/passwd", "only http:// and https://"),
    ("hooks.example.com/pusher", "only http:// and https://"),
    ("https://user:password@hooks.example.com/", "user name or password"),
    ("https://token@hooks.example.com/", "user name or password"),
    ("https:///path-only", "no host"),
    ("http://hooks.example.com:99999/", "not a valid URL"),
    ("http://hooks.example.com:0/", "port must be 1 to 65535"),
    ("http://hooks.example.com/a b", "spaces or control characters"),
    ("http://hooks.example.com/\n", "spaces or control characters"),
    ("http://hooks.example.com/#frag", "#fragment"),
    ("http://[::1/", "not a valid URL"),
    ("", "a URL is required"),
    ("https://h.example.com/" + "a" * 2000, "at most 2000"),
]


@pytest.mark.parametrize(("url", "refused"), URLS)
def test_url_rules(url: str, refused: str) -> None:
    problem = wire.url_problem(url)
    if refused:
        assert refused in problem
    else:
        assert problem == ""


@pytest.mark.parametrize(("url", "origin"), [
    ("https://hooks.slack.example/services/T000/B000/SECRETPATH", "https://hooks.slack.example"),
    ("http://127.0.0.1:8080/in?token=abc", "http://127.0.0.1:8080"),
    ("http://[::1]:9000/x", "http://[::1]:9000"),
])
def test_logs_name_the_origin_only(url: str, origin: str) -> None:
    assert wire.url_origin(url) == origin


def test_the_signature_is_what_a_receiver_computes() -> None:
    body = wire.request_body(delivery_id="d-1", event_type="push.failed",
                             created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), data={"reason": "BadDeviceToken"})
    headers = wire.request_headers(secret="s3cret-s3cret-s3cret", timestamp=1767322000, body=body,
                                   event_type="push.failed", delivery_id="d-1")

    # The receiver's side, written out: HMAC-SHA256 over "<timestamp>.<body>" with the shared secret.
    expected = hmac.new(b"s3cret-s3cret-s3cret", b"1767322000." + body, hashlib.sha256).hexdigest()
    assert headers["X-Pusher-Signature"] == f"sha256={expected}"
    assert headers["X-Pusher-Timestamp"] == "1767322000"
    assert headers["X-Pusher-Event"] == "push.failed" and headers["X-Pusher-Delivery"] == "d-1"
    assert json.loads(body) == {"id": "d-1", "type": "push.failed", "created_at": "2026-01-02T03:04:05+00:00",
                                "data": {"reason": "BadDeviceToken"}}
    # Another timestamp or another body is another signature.
    assert wire.signature(secret="s3cret-s3cret-s3cret", timestamp=1767322001, body=body) != headers[
        "X-Pusher-Signature"]
    assert wire.signature(secret="s3cret-s3cret-s3cret", timestamp=1767322000, body=body + b" ") != headers[
        "X-Pusher-Signature"]


def test_the_body_is_the_same_bytes_every_time() -> None:
    kwargs = {"delivery_id": "x", "event_type": "t", "created_at": datetime(2026, 1, 1, tzinfo=UTC),
              "data": {"b": 1, "a": "é"}}
    assert wire.request_body(**kwargs) == wire.request_body(**kwargs)
    assert "é".encode() in wire.request_body(**kwargs)


@pytest.mark.parametrize(("attempts", "low", "high"), [
    (1, 5, 10), (2, 10, 20), (3, 20, 40), (6, 160, 320), (9, 1280, 2560), (10, 1800, 3600), (40, 1800, 3600),
    (30000, 1800, 3600),
])
def test_retries_back_off_exponentially_with_jitter_up_to_the_cap(attempts: int, low: float, high: float) -> None:
    lowest = wire.retry_delay(attempts, base_s=10, max_s=3600, rand=lambda a, b: a)
    highest = wire.retry_delay(attempts, base_s=10, max_s=3600, rand=lambda a, b: b)
    assert (lowest, highest) == (low, high)
    assert low <= wire.retry_delay(attempts, base_s=10, max_s=3600) <= high
