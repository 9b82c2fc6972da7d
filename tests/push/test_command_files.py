"""Files named on a command line: read bounded, regular files only, refused in one line at once.

`add_apple_app APP /dev/zero` used to read until memory ran out, and a FIFO blocked the command
for ever; every command reading a file goes through push/management/commands/_files.py."""

from __future__ import annotations

import io
import os

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from push.credentials import MAX_CREDENTIAL_BYTES
from push.models import Credential, PushApp
from tests.deadline import within

pytestmark = pytest.mark.django_db

APP = "com.acme.phone.voip.prod"
KEY_ARGS = ("--key-id", "ABCDEFGHIJ", "--team-id", "TEAM123456")


def refused(*args: str) -> str:
    with within(5), pytest.raises(CommandError) as caught:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    message = str(caught.value)
    assert "\n" not in message
    return message


def commands_given(path: str) -> list[tuple[str, ...]]:
    return [
        ("add_apple_app", APP, path),
        ("add_apple_key", APP, path, *KEY_ARGS),
        ("add_firebase_app", "com.acme.phone", path),
    ]


@pytest.mark.parametrize("index", range(3))
def test_a_directory_is_refused_as_one(tmp_path, index):
    message = refused(*commands_given(str(tmp_path))[index])
    assert "is a directory" in message
    assert not PushApp.objects.exists() and not Credential.objects.exists()


@pytest.mark.parametrize("index", range(3))
def test_a_fifo_is_refused_without_blocking(tmp_path, index):
    fifo = tmp_path / "cert.json"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(*commands_given(str(fifo))[index])


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
@pytest.mark.parametrize("index", range(3))
def test_an_endless_device_is_refused_at_once(device, index):
    message = refused(*commands_given(device)[index])
    assert "not a regular file" in message
    assert not PushApp.objects.exists()


@pytest.mark.parametrize("index", range(3))
def test_a_file_over_the_limit_is_refused_without_reading_it_all(tmp_path, monkeypatch, index):
    path = tmp_path / "huge.pem"
    path.write_bytes(b"A" * (MAX_CREDENTIAL_BYTES + 10))
    reads: list[int] = []
    real_open = open

    class CountingFile(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            reads.append(-1 if size is None else size)
            return super().read(size)

    def counting_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(handle, io.BufferedReader):
            return CountingFile(handle.detach())
        return handle

    monkeypatch.setattr("builtins.open", counting_open)
    message = refused(*commands_given(str(path))[index])
    assert "too large" in message
    assert reads and all(0 <= size <= MAX_CREDENTIAL_BYTES + 1 for size in reads), reads


# --- add_firebase_app's SECRET: a file, JSON text, or a legacy key, and nothing else ------------


@pytest.mark.parametrize(("secret", "said"), [
    ("nonexist", "no such file"),
    ("service-account.json", "no such file"),
    ("/etc/pusher/missing-service-account.json", "no such file"),
    ("[]", "must be a JSON object"),
    ('["AAAAx1y2z3:APA91bLegacyServerKey"]', "must be a JSON object"),
    ('"AAAAx1y2z3:APA91bLegacyServerKey"', "must be a JSON object"),
    ("null", "must be a JSON object"),
])
def test_add_firebase_app_stores_nothing_that_is_not_a_key(secret, said):
    assert said in refused("add_firebase_app", "com.acme.phone", secret)
    assert not PushApp.objects.exists() and not Credential.objects.exists()


def test_add_firebase_app_still_takes_a_legacy_key():
    call_command("add_firebase_app", "com.acme.phone", "AAAAx1y2z3:APA91bLegacyServerKey", stdout=io.StringIO())
    assert Credential.objects.get().kind == "fcm_legacy_key"
