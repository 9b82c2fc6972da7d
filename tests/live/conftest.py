"""Fixtures of the live-feed tests: channel layers (in-memory for one process, Redis for several)."""

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

REDIS_URL = os.environ.get("PUSHER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_reachable(url: str = REDIS_URL) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=1):
            return True
    except OSError:
        return False


def require_redis() -> str:
    if not redis_reachable():
        pytest.fail(f"Redis is not reachable at {REDIS_URL} (PUSHER_TEST_REDIS_URL); start it (.ci/run does)")
    return REDIS_URL


@pytest.fixture
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def redis_layer(settings):
    """channels-redis under a prefix of its own, so parallel runs never see each other's events."""
    url = require_redis()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": f"pusher-test-{uuid.uuid4().hex[:10]}"},
        }
    }
    return url
