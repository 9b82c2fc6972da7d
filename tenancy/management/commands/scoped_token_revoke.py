"""`manage.py scoped_token_revoke ID`: refuse a scoped API token from its next request on."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tenancy.models import ScopedToken
from tenancy.services import scoped_token_revoke


class Command(BaseCommand):
    help = "Revoke a scoped API token (its id, as the admin and /api/v1/scoped-tokens/ list it)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("token_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        token = ScopedToken.objects.filter(pk=options["token_id"]).first()
        if token is None:
            raise CommandError(f"no scoped token #{options['token_id']}")
        token = scoped_token_revoke(token=token)
        self.stdout.write(f"scoped token #{token.pk} {token.name!r} revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S %Z}")
