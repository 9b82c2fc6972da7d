"""pytest fixture for the fake Kazoo Crossbar.

Load with `pytest_plugins = ["tests.fakes.conftest_crossbar"]` (in a test module or the root conftest.py).
One server per session; each test gets it reset (no devices, tokens, failures or recorded requests).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.crossbar import FakeCrossbar


@pytest.fixture(scope="session")
def fake_crossbar_server() -> Iterator[FakeCrossbar]:
    fake = FakeCrossbar().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_crossbar(fake_crossbar_server: FakeCrossbar) -> Iterator[FakeCrossbar]:
    fake_crossbar_server.reset()
    yield fake_crossbar_server
    fake_crossbar_server.reset()
