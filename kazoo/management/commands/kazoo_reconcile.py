"""`manage.py kazoo_reconcile [--account ID] [--limit N] [--dry-run]`: drift repair on demand."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from kazoo.models import ReconcileResult
from kazoo.reconcile import devices_reconcile
from registry.ids import kazoo_id_valid
from registry.syncstate import kazoo_configured


class Command(BaseCommand):
    help = (
        "Read Kazoo's device document of each device pusher holds a push object for (or cleared one of), "
        "compare its push object with pusher's, and queue each that differs for the consumer's sync loop "
        "(which PATCHes it again). Prints one line per drifted, missing or failed device and a summary."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--account", metavar="ID", help="only this Kazoo account's devices")
        parser.add_argument(
            "--limit", type=int, metavar="N", help="check at most N devices, least recently checked first"
        )
        parser.add_argument("--dry-run", action="store_true", help="report drift; queue nothing, record nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        account = options.get("account")
        limit = options.get("limit")
        if account is not None and not kazoo_id_valid(account):
            raise CommandError("--account: not a Kazoo account id (letters, digits, - or _)")
        if limit is not None and limit < 1:
            raise CommandError("--limit: must be at least 1")
        if not kazoo_configured():
            raise CommandError("Kazoo is not configured (KAZOO_CROSSBAR_URL, KAZOO_API_KEY): nothing to compare with")
        summary = devices_reconcile(account_id=account, limit=limit, dry_run=options["dry_run"])
        for outcome in summary.outcomes:
            if outcome.result != ReconcileResult.OK:
                device = outcome.device
                self.stdout.write(f"{outcome.result.value}: {device.account_id}/{device.device_id}: {outcome.detail}")
        self.stdout.write(("dry run: " if summary.dry_run else "") + summary.as_line())
