"""`manage.py match_user_agent --user-agent UA --contact CONTACT`: what a registration would do."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.errors import PusherError
from kazoo.config import CCVS, PLACEHOLDER_ACCOUNT_ID, PLACEHOLDER_AUTHORIZING_ID
from kazoo.uatest import user_agent_test


class Command(BaseCommand):
    help = (
        "Run a User-Agent and Contact through the enabled User-Agent rules exactly as the consumer does for a "
        "reg_success, and print one JSON object: {rule, push, tokens, reason}. Account-ID and Authorizing-ID "
        f"default to placeholders ({PLACEHOLDER_ACCOUNT_ID}, {PLACEHOLDER_AUTHORIZING_ID}) so the push object "
        "can be shown; give real ones with --field."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user-agent", required=True, help="the REGISTER's User-Agent")
        parser.add_argument("--contact", required=True, help="the REGISTER's Contact header value")
        parser.add_argument(
            "--field", action="append", default=[], metavar="KEY=VALUE",
            help="another reg_success field (repeatable), as a string; e.g. Proxy-Path=sip:10.0.0.5:5060 "
            f"(the source of Token-Proxy). {CCVS}.Account-ID=... and {CCVS}.Authorizing-ID=... set the "
            "custom channel vars; without them, placeholders are used.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        fields: dict[str, Any] = {}
        for item in options["field"]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CommandError(f"--field {item!r}: expected KEY=VALUE")
            prefix, dot, ccv = key.partition(".")
            if dot and prefix == CCVS:
                fields.setdefault(CCVS, {})[ccv] = value
            else:
                fields[key] = value
        try:
            result = user_agent_test(user_agent=options["user_agent"], contact=options["contact"], fields=fields)
        except PusherError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(result.as_dict(), indent=2))
