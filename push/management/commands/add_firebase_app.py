"""`manage.py add_firebase_app APP_ID SECRET`: Kazoo's `sup pusher_maintenance add_firebase_app`."""

import os
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.errors import PusherError
from core.text import path_shown
from push.management.commands._files import path_problem
from push.management.commands._output import app_added_write
from push.management.commands.add_apple_app import read_file
from push.models import CredentialKind, Provider
from push.services import push_app_add


class Command(BaseCommand):
    help = (
        "Add or update a Firebase (FCM) push app. SECRET is the path of a service-account JSON file (FCM HTTP v1), "
        "or its content. "
        "Kazoo took the legacy server key instead: such a string is stored for the record but cannot send "
        "(Google shut the legacy API down)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("app_id", help="the Token-App value, e.g. com.acme.phone")
        parser.add_argument(
            "secret", help="service-account JSON file or its content (or, Kazoo-style, a legacy server key)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        secret: str = options["secret"]
        kind, data = secret_given(secret)
        try:
            added = push_app_add(app_id=options["app_id"], provider=Provider.FIREBASE, kind=kind, data=data)
        except PusherError as exc:
            raise CommandError(exc.message) from exc
        app_added_write(self, added)
        if kind == CredentialKind.FCM_LEGACY_KEY and not added.credential_kept:
            self.stdout.write(self.style.WARNING(
                "warning: stored as an FCM legacy server key, which cannot send; "
                f"give a service-account JSON file: add_firebase_app {options['app_id']} FILE"
            ))


# What a legacy server key looks like: Google's were `AAAA...:APA91b...` or `AIza...`, letters,
# digits and `-_:`. Anything else (`nonexist`, a mistyped file name, `[]`) was stored as a "key".
_LEGACY_KEY = re.compile(r"(AAAA|AIza)[A-Za-z0-9_:-]{16,}")


def secret_given(secret: str) -> tuple[str, bytes]:
    """(kind, data) of the SECRET argument: JSON text, a file, or a legacy server key; CommandError
    for anything else, which must not end up stored as a "key", nor be echoed if it is a secret."""
    stripped = secret.strip()
    if stripped.startswith("{"):
        # The JSON itself (`add_firebase_app APP "$(cat sa.json)"`): parsed as a service account,
        # whose errors say what is wrong without quoting the key.
        return CredentialKind.FCM_SERVICE_ACCOUNT, secret.encode("utf-8", "surrogateescape")
    if stripped.startswith(("[", '"')) or stripped in ("null", "true", "false"):
        raise CommandError("the service account must be a JSON object ({...}), as Google's JSON file holds")
    problem = path_problem(secret)
    if problem is None:
        return CredentialKind.FCM_SERVICE_ACCOUNT, read_file(secret)
    if problem != "no such file" or os.sep in secret or secret.lower().endswith(".json"):
        raise CommandError(f"cannot read {path_shown(secret)}: {problem}")
    if not _LEGACY_KEY.fullmatch(stripped):
        raise CommandError(
            f"cannot read {path_shown(secret)}: no such file (nor is it a service account's JSON or a legacy "
            "server key, which starts AAAA or AIza)"
        )
    return CredentialKind.FCM_LEGACY_KEY, secret.encode("utf-8", "surrogateescape")
