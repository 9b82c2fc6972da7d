"""add_apple_app and friends never rewrite another app's credential, and say what they did with the
secret: stored (a new credential), reused (the same secret already stored) or updated (replaced in place)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from push.models import Credential, PushApp
from tests.certs import make_apns_certificate

pytestmark = pytest.mark.django_db

A, B = "com.test.app", "com.other.app"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def pem_file(tmp_path: Path, name: str) -> str:
    cert, key = make_apns_certificate("com.test", voip=True)
    path = tmp_path / name
    path.write_text(cert + key)
    return str(path)


def credential_of(app_id: str) -> Credential:
    return PushApp.objects.select_related("credential").get(app_id=app_id).credential


def test_renewing_one_app_leaves_the_app_sharing_its_certificate_alone(tmp_path):
    shared = pem_file(tmp_path, "shared.pem")
    run("add_apple_app", A, shared)
    out_b = run("add_apple_app", B, shared)
    assert "reused" in out_b
    first = credential_of(A)
    assert credential_of(B).pk == first.pk and first.name == f"{A} (APNs certificate)"

    out = run("add_apple_app", A, pem_file(tmp_path, "other.pem"))

    first.refresh_from_db()
    b_now = credential_of(B)
    assert b_now.pk == first.pk and b_now.fingerprint_sha256 == first.fingerprint_sha256  # B untouched
    a_now = credential_of(A)
    assert a_now.pk != first.pk and a_now.fingerprint_sha256 != first.fingerprint_sha256
    assert a_now.name == f"{A} (APNs certificate) #2"
    assert "stored" in out and B in out and "new credential" in out


def test_a_certificate_another_app_holds_under_this_name_is_not_rewritten(tmp_path):
    shared = pem_file(tmp_path, "shared.pem")
    run("add_apple_app", A, shared)
    run("add_apple_app", B, shared)
    run("add_apple_app", A, pem_file(tmp_path, "a2.pem"))  # A moves to its own "#2"
    held_by_b = Credential.objects.get(name=f"{A} (APNs certificate)")
    fingerprint = held_by_b.fingerprint_sha256

    run("add_apple_app", A, pem_file(tmp_path, "a3.pem"))

    held_by_b.refresh_from_db()
    assert held_by_b.fingerprint_sha256 == fingerprint and credential_of(B).pk == held_by_b.pk


def test_the_output_says_updated_when_the_secret_is_replaced_in_place(tmp_path):
    assert "stored" in run("add_apple_app", A, pem_file(tmp_path, "first.pem"))
    renewed = pem_file(tmp_path, "renewed.pem")
    out = run("add_apple_app", A, renewed)
    assert "updated" in out and "reused" not in out
    assert Credential.objects.count() == 1
    again = run("add_apple_app", A, renewed)
    assert "reused" in again and "updated" not in again
