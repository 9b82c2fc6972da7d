"""FCM's Retry-After (429 QUOTA_EXCEEDED, 503 UNAVAILABLE) sets the pause before the next attempt,
within the push's deadline."""

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from push import services
from push.models import DeliveryStatus
from push.providers.fcm_sender import _retry_after
from push.services.policy import retry_pause
from tests.fakes.fcm import FcmAnswer
from tests.push.pushreq import push_req

pytestmark = pytest.mark.django_db

FCM_TOKEN = "dKx9Qm3ZRlO7pYc2wEo1aB:APA91bHq8v2Xz-4kLmN0pQrStUvWxYz_aBcDeFg"


def fcm_push(**changes):
    return push_req(**{"Token-Type": "fcm", "Token-App": "com.acme.phone", "Token-ID": FCM_TOKEN, **changes})


def sends(fake_fcm):
    return [r for r in fake_fcm.requests if r.path.endswith("messages:send")]


@pytest.mark.parametrize("answer", [FcmAnswer.QUOTA_EXCEEDED, FcmAnswer.UNAVAILABLE])
def test_next_attempt_waits_for_retry_after(firebase_app, fake_fcm, answer):
    fake_fcm.set_answer(answer, times=1)
    fake_fcm.set_retry_after(1)
    started = time.monotonic()

    delivery = services.push_request_handle(fields=fcm_push(Expires=10), source="api")

    assert time.monotonic() - started >= 1.0  # Retry-After, not the 0.1-0.3 s backoff
    assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 2
    assert len(sends(fake_fcm)) == 2


@pytest.mark.parametrize("answer", [FcmAnswer.QUOTA_EXCEEDED, FcmAnswer.UNAVAILABLE])
def test_retry_after_past_the_deadline_makes_no_further_attempt(firebase_app, fake_fcm, answer):
    fake_fcm.set_answer(answer)
    fake_fcm.set_retry_after(30)
    started = time.monotonic()

    delivery = services.push_request_handle(fields=fcm_push(Expires=5), source="api")

    assert time.monotonic() - started < 2  # recorded at once, not after waiting out the window
    assert delivery.status == DeliveryStatus.EXPIRED and delivery.reason == "deadline"
    assert delivery.attempts == 1 and len(sends(fake_fcm)) == 1
    assert "asked to wait 30s (Retry-After)" in delivery.error


def test_retry_pause_uses_retry_after_else_backoff():
    assert retry_pause(1, 7.5) == 7.5
    assert retry_pause(1, 0.0) == 0.0
    assert 0.1 <= retry_pause(1) <= 0.3


def _response(retry_after: str | None) -> requests.Response:
    response = requests.Response()
    response.status_code = 429
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


def test_retry_after_header_forms():
    assert _retry_after(_response("12")) == 12.0
    assert _retry_after(_response(None)) is None
    assert _retry_after(_response("soon")) is None
    in_20s = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 17 <= (_retry_after(_response(in_20s)) or 0) <= 20
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=20), usegmt=True)
    assert _retry_after(_response(past)) == 0.0
