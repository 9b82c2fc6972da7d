"""pytest fixture for the fake APNs server.

Import the fixture into tests/conftest.py (`from tests.fakes.conftest_apns import fake_apns`). The
server itself is started once per test session (generating its PKI and binding a port is the slow
part) and reset before and after every test so that recorded requests and scripted answers never
leak between tests.

Why a lazily created module-level server instead of a second, session-scoped fixture: importing
this one name is then enough, with no hidden fixture dependency to import alongside it.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator

import pytest

from tests.fakes.apns import FakeApns

_server: FakeApns | None = None
_server_lock = threading.Lock()


def _session_server() -> FakeApns:
    global _server
    with _server_lock:
        if _server is None:
            _server = FakeApns.start()
            atexit.register(_server.stop)
        return _server


@pytest.fixture
def fake_apns() -> Iterator[FakeApns]:
    """The session's fake APNs server, with no recorded requests and default answers (200)."""
    server = _session_server()
    server.reset()
    yield server
    server.reset()
