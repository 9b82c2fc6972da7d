from collections.abc import Iterator

import pytest

from tests.hooks.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver that is up."""
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def down_receiver() -> Iterator[Receiver]:
    """A receiver whose port is closed (start() brings it up)."""
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def _quick_retries(settings) -> None:
    """Retries due at once (the backoff itself is tested on its own), short timeouts."""
    settings.PUSHER_WEBHOOK_RETRY_S = 0
    settings.PUSHER_WEBHOOK_TIMEOUT_S = 2.0
    settings.PUSHER_WEBHOOK_MAX_ATTEMPTS = 4
    settings.PUSHER_ALERT_EMAILS = ["ops@example.com"]
