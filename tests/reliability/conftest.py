"""Fixtures of the reliability tests: User-Agent rules that send every reg_success down the whole
registration path. (The push apps pointed at the fakes, apple_app and firebase_app, are in
tests/conftest.py.)"""

from __future__ import annotations

import pytest

from registry.models import UserAgentRule


@pytest.fixture
def rules(db):
    """Linphone's RFC 8599 parameters first, then Kazoo's legacy ones for any other User-Agent."""
    UserAgentRule.objects.create(
        name="Linphone", position=10, regex="Linphone",
        properties={"Token-ID": "pn-prid", "Token-Type": "pn-provider", "Token-App": "pn-param"},
    )
    UserAgentRule.objects.create(
        name="Anything", position=20, regex=".",
        properties={"Token-ID": "pn-tok", "Token-Type": "pn-type", "Token-App": "app-id",
                    "Token-Call-ID": "Call-ID", "Token-Node": "Node"},
    )
