"""`manage.py scoped_token_create NAME --owner USER --account ID [--account ID ...] [--grant G ...]`:
make a scoped API token from a shell (a fresh install, a script), as the admin and the API do."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from core.errors import PusherError
from tenancy.models import Grant
from tenancy.services import scoped_token_create


class Command(BaseCommand):
    help = (
        "Make an API token limited to some Kazoo accounts (Authorization: Bearer <key>). The key is printed "
        "once, alone on the last line; only a hash of it is kept."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", help="who holds it, e.g. the reseller's provisioning system")
        parser.add_argument("--owner", required=True, help="username the token acts as (never with more rights)")
        parser.add_argument("--account", action="append", required=True, dest="accounts", metavar="ACCOUNT_ID",
                            help="a Kazoo account id (32 lowercase hex digits); repeat for more")
        parser.add_argument("--grant", action="append", default=[], dest="grants", choices=Grant.values,
                            help="apps, credentials or rules_write; repeat for more")
        parser.add_argument("--expires", help="ISO 8601 time after which it is refused (default: never)")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        try:
            owner = users.objects.get(**{users.USERNAME_FIELD: options["owner"]})
        except users.DoesNotExist:
            raise CommandError(f"no user {options['owner']!r}") from None
        expires_at = None
        if options["expires"]:
            expires_at = parse_datetime(options["expires"])
            if expires_at is None or expires_at.tzinfo is None:
                raise CommandError(f"--expires {options['expires']!r} is not an ISO 8601 time with its offset")
        try:
            created = scoped_token_create(name=options["name"], owner=owner, account_ids=options["accounts"],
                                          grants=options["grants"], expires_at=expires_at)
        except PusherError as exc:
            raise CommandError(exc.message) from exc
        token = created.token
        self.stderr.write(
            f"scoped token #{token.pk} {token.name!r} for {owner}: accounts {', '.join(token.account_ids)}; "
            f"grants {', '.join(token.grants) or 'none'}. The key, shown this once:"
        )
        self.stdout.write(created.key)
