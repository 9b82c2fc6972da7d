"""`manage.py add_apple_key APP_ID P8FILE --key-id K --team-id T`: an Apple push app on token auth."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.errors import PusherError
from push.management.commands._output import app_added_write
from push.management.commands.add_apple_app import APNS_PORT, read_file
from push.models import CredentialKind, Provider
from push.services import APNS_PRODUCTION_HOST, APNS_SANDBOX_HOST, push_app_add


class Command(BaseCommand):
    help = (
        "Add or update an Apple push app authenticated with an APNs auth key (.p8, token auth; Kazoo could not). "
        "One key serves every app of the team: adding it for another app reuses the stored key."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("app_id", help="the Token-App value, e.g. com.acme.phone.voip.prod")
        parser.add_argument("p8file", help="the AuthKey_<KEYID>.p8 file from Apple Developer > Keys")
        parser.add_argument("--key-id", required=True, help="the key's 10-character id")
        parser.add_argument("--team-id", required=True, help="the 10-character team id")
        parser.add_argument("--topic", default=None,
                            help="the bundle id (default: the app id without a trailing .dev/.prod)")
        parser.add_argument("--sandbox", action="store_true",
                            help=f"push to {APNS_SANDBOX_HOST} (development builds) instead of {APNS_PRODUCTION_HOST}")
        parser.add_argument("--port", type=int, default=APNS_PORT,
                            help=f"APNs port (default {APNS_PORT}; Apple also answers on 2197)")

    def handle(self, *args: Any, **options: Any) -> None:
        settings: dict[str, Any] = {
            "host": APNS_SANDBOX_HOST if options["sandbox"] else APNS_PRODUCTION_HOST, "port": options["port"],
        }
        if options["topic"]:
            settings["topic"] = options["topic"]
        try:
            added = push_app_add(
                app_id=options["app_id"], provider=Provider.APPLE, kind=CredentialKind.APNS_TOKEN,
                data=read_file(options["p8file"]), key_id=options["key_id"], team_id=options["team_id"], **settings,
            )
        except PusherError as exc:
            raise CommandError(exc.message) from exc
        app_added_write(self, added)
