"""pytest fixtures for the fake FCM server.

Load with `pytest_plugins = ["tests.fakes.conftest_fcm"]` (in a test module or the root conftest.py).
One server per test session (starting it is cheap, but service accounts cost an RSA key each); every test
gets it reset: no scripted answers, outages, delays, recorded requests or issued tokens leak between tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.fcm import FakeFcm


@pytest.fixture(scope="session")
def fake_fcm_server() -> Iterator[FakeFcm]:
    fake = FakeFcm().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_fcm(fake_fcm_server: FakeFcm) -> Iterator[FakeFcm]:
    fake_fcm_server.reset()
    yield fake_fcm_server
    fake_fcm_server.reset()
