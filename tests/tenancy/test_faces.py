"""Scoped tokens through each face that manages them: the admin (made with the key shown once, listed,
revoked; superusers only) and the commands. Each calls tenancy.services, so one rule (what an
account id is) refuses the same input with the same words in the admin, the API and the command."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from rest_framework.test import APIClient

from tenancy import services
from tenancy.models import ScopedToken

pytestmark = pytest.mark.django_db

A = "3c0e5f1a9b2d4e6f8a7b6c5d4e3f2a1b"
B = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
KEY = re.compile(r"pst_[A-Za-z0-9_-]{43}")
ADD = reverse("admin:tenancy_scopedtoken_add")
CHANGELIST = reverse("admin:tenancy_scopedtoken_changelist")


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def admin_add(staff_client, owner, **fields):
    data = {"name": "reseller x", "owner": owner.pk, "accounts": f"{A}\n{B}", "grant_apps": "on", **fields}
    return staff_client.post(ADD, data)


def test_the_admin_makes_a_token_and_shows_its_key_once(staff_client, staff_user) -> None:
    response = admin_add(staff_client, staff_user)
    assert response.status_code == 200, response.content[:300]
    page = response.content.decode()
    keys = KEY.findall(page)
    assert len(set(keys)) == 1 and "shown this once" in page and "no-store" in response["Cache-Control"]
    key = keys[0]
    token = ScopedToken.objects.get()
    assert token.account_ids == [B, A] and token.grants == ("apps",) and token.owner == staff_user
    assert token.key_hash == services.key_hash(key)
    assert LogEntry.objects.filter(action_flag=ADDITION, object_id=str(token.pk)).exists()

    # The key works, within its accounts...
    assert bearer(key).get("/api/v1/devices/").status_code == 200
    # ...and is never shown again: not in the list, not on the token's page, not in a message.
    for url in (CHANGELIST, reverse("admin:tenancy_scopedtoken_change", args=[token.pk])):
        shown = staff_client.get(url)
        assert shown.status_code == 200
        text = shown.content.decode()
        assert key not in text and token.key_hash not in text and f"{token.key_prefix}…" in text


def test_the_admin_refuses_a_bad_account_id_on_the_form(staff_client, staff_user) -> None:
    response = admin_add(staff_client, staff_user, accounts=f"{A}, 3C0E5F1A9B2D4E6F8A7B6C5D4E3F2A1B")
    assert response.status_code == 200
    assert "is not a Kazoo account id (32 lowercase hex digits)" in response.content.decode()
    assert not ScopedToken.objects.exists()


def test_the_admin_revokes_tokens(staff_client, staff_user) -> None:
    made = [services.scoped_token_create(name=f"t{i}", owner=staff_user, account_ids=[A]) for i in range(2)]
    services.scoped_token_revoke(token=made[1].token)
    response = staff_client.post(CHANGELIST, {
        "action": "revoke", ACTION_CHECKBOX_NAME: [m.token.pk for m in made],
    }, follow=True)
    assert response.status_code == 200
    assert "1 token(s) revoked; 1 already were." in response.content.decode()
    assert all(ScopedToken.objects.get(pk=m.token.pk).revoked_at for m in made)
    assert bearer(made[0].key).get("/api/v1/devices/").status_code == 401
    assert LogEntry.objects.filter(action_flag=CHANGE, object_id=str(made[0].token.pk),
                                   change_message="Revoked.").exists()
    # Listed still, for the record, as revoked.
    assert "revoked" in staff_client.get(CHANGELIST + "?state=revoked").content.decode()


def test_only_superusers_see_tokens_in_the_admin(client, django_user_model, staff_user) -> None:
    staff = django_user_model.objects.create_user("staff", "staff@example.com", "staff-password-123", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="tenancy"))
    services.scoped_token_create(name="x", owner=staff_user, account_ids=[A])
    client.force_login(staff)
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(ADD).status_code == 403
    assert "scopedtoken" not in client.get(reverse("admin:index")).content.decode()


def test_the_command_makes_a_token_and_prints_its_key_alone(staff_user) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("scoped_token_create", "provisioning", "--owner", staff_user.username, "--account", A,
                 "--account", B, "--grant", "rules_write", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert KEY.fullmatch(key) and key not in err.getvalue() and "shown this once" in err.getvalue()
    token = ScopedToken.objects.get()
    assert token.grants == ("rules_write",) and token.account_ids == [B, A]
    assert bearer(key).get("/api/v1/user-agent-rules/").status_code == 200

    call_command("scoped_token_revoke", str(token.pk), stdout=io.StringIO())
    assert bearer(key).get("/api/v1/user-agent-rules/").status_code == 401
    with pytest.raises(CommandError, match="no scoped token #999"):
        call_command("scoped_token_revoke", "999")


@pytest.mark.parametrize("args, message", [
    (["--owner", "nobody", "--account", A], "no user 'nobody'"),
    (["--owner", "ops", "--account", A, "--expires", "tomorrow"], "not an ISO 8601 time"),
    (["--owner", "ops", "--account", A, "--expires", "2001-01-01T00:00:00+00:00"], "must be in the future"),
])
def test_the_command_refuses_with_a_reason(staff_user, args, message) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("scoped_token_create", "x", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert not ScopedToken.objects.exists()


def test_one_rule_for_account_ids_whatever_the_face(staff_client, staff_user) -> None:
    bad = "3C0E5F1A9B2D4E6F8A7B6C5D4E3F2A1B"
    expected = f"'{bad}' is not a Kazoo account id (32 lowercase hex digits)"
    # Admin.
    page = admin_add(staff_client, staff_user, accounts=bad).content.decode()
    assert expected.replace("'", "&#x27;") in page
    # API.
    api = APIClient()
    api.force_authenticate(staff_user)
    response = api.post("/api/v1/scoped-tokens/", {"name": "x", "owner": staff_user.username, "account_ids": [bad]},
                        format="json")
    assert response.status_code == 400 and response.json() == {"account_ids": [expected]}
    # Command.
    with pytest.raises(CommandError) as excinfo:
        call_command("scoped_token_create", "x", "--owner", staff_user.username, "--account", bad,
                     stdout=io.StringIO(), stderr=io.StringIO())
    assert str(excinfo.value) == expected
    assert not ScopedToken.objects.exists()
