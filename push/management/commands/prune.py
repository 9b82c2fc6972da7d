"""`manage.py prune [--dry-run] [--batch-size N] [--rest R] [--deliveries-days N] [--devices-days N]`:
retention on demand."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.errors import InvalidInput, PusherError
from push.services import PRUNE_BATCH_DEFAULT, PRUNE_REST_DEFAULT, retention_prune


class Command(BaseCommand):
    help = (
        "Delete finished deliveries older than the delivery retention (never a queued one), and devices and "
        "tokens dead for longer than the device retention, in batches that each commit on their own: safe "
        "while the consumer runs. Prints one summary line."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
        parser.add_argument(
            "--batch-size", type=int, default=PRUNE_BATCH_DEFAULT, metavar="N",
            help=f"rows per DELETE, each its own transaction (default {PRUNE_BATCH_DEFAULT})",
        )
        parser.add_argument(
            "--rest", type=float, default=PRUNE_REST_DEFAULT, metavar="R",
            help=f"seconds of rest after each batch per second it took, leaving the database to the consumer "
                 f"(default {PRUNE_REST_DEFAULT:g}: half speed; 0: full speed)",
        )
        parser.add_argument(
            "--deliveries-days", type=int, metavar="N",
            help=f"keep deliveries this many days; 0 keeps them all "
                 f"(default PUSHER_DELIVERY_RETENTION_DAYS, {settings.PUSHER_DELIVERY_RETENTION_DAYS})",
        )
        parser.add_argument(
            "--devices-days", type=int, metavar="N",
            help=f"delete dead devices and tokens untouched this many days; 0 keeps them all "
                 f"(default PUSHER_DEVICE_RETENTION_DAYS, {settings.PUSHER_DEVICE_RETENTION_DAYS})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = retention_prune(
                deliveries_days=options["deliveries_days"], devices_days=options["devices_days"],
                batch_size=options["batch_size"], rest=options["rest"], dry_run=options["dry_run"],
            )
        except InvalidInput as exc:
            raise CommandError(f"{exc.message} (--deliveries-days, --devices-days, --batch-size, --rest)") from None
        except PusherError as exc:  # another prune runs
            raise CommandError(exc.message) from None
        self.stdout.write(("dry run: " if summary.dry_run else "") + summary.as_line())
