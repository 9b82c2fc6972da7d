"""`manage.py token_report SLUG NAME=VALUE...`: store a push token report as if the app had sent it
to /report/<slug>/ (no secret: the operator is on the box). For moving tokens from an old report
server, or trying a reporter's mapping on a real device."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.errors import PusherError
from core.text import mask_token
from registry.models import TokenReporter
from registry.reporting import token_report_apply


class Command(BaseCommand):
    help = (
        "Store a push token report through token reporter SLUG, as its /report/ URL would (same mapping, checks "
        "and storage), and print what was stored. Parameters are the request's, by the names the reporter maps, "
        "e.g. username=1001 realm=acme.example.com pushTokenIncomingCall=<token>."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slug", help="the token reporter (its URL's name)")
        parser.add_argument("parameters", nargs="+", metavar="NAME=VALUE", help="the report's parameters")

    def handle(self, *args: Any, **options: Any) -> None:
        reporter = TokenReporter.objects.filter(slug=options["slug"]).first()
        if reporter is None:
            raise CommandError(f"no token reporter {options['slug']!r}")
        params: dict[str, str] = {}
        for item in options["parameters"]:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise CommandError(f"{item[:40]!r}: expected NAME=VALUE")
            if name in params:
                raise CommandError(f"parameter {name!r} is given twice")
            params[name] = value
        try:
            result = token_report_apply(reporter=reporter, params=params)
        except PusherError as exc:
            raise CommandError(f"{exc.message} ({exc.code})") from exc
        device = result.device
        tokens = ", ".join(f"{t.kind or 'plain'} {mask_token(t.token)}" for t in result.report.tokens)
        self.stdout.write(f"{result.outcome}: device {device.account_id}/{device.device_id} "
                          f"({device.username}@{device.realm}), {tokens}")
