"""`python manage.py send_webhooks [--loop]`: the webhook and alert round the consumer runs in a
thread (kazoo.alerting), on demand or as a process of its own."""

import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.signals import stop_on_signals
from kazoo.alerting import alerting_loop, alerting_round


class Command(BaseCommand):
    help = ("Check consumers and credentials, queue the push events subscriptions chose, and send the webhooks "
            "that are due (with --loop: every PUSHER_WEBHOOK_INTERVAL_S until stopped).")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--loop", action="store_true",
                            help="keep going, a round every PUSHER_WEBHOOK_INTERVAL_S, until SIGTERM or SIGINT")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["loop"]:
            summary = alerting_round()
            self.stdout.write(summary.as_line())
            if summary.errors:
                raise CommandError(f"{len(summary.errors)} step(s) failed (see the log)")
            return
        if settings.PUSHER_WEBHOOK_INTERVAL_S <= 0:
            raise CommandError("PUSHER_WEBHOOK_INTERVAL_S is 0 (off): set the seconds between rounds")
        stop = threading.Event()
        stop_on_signals(stop)
        self.stdout.write(f"sending webhooks every {settings.PUSHER_WEBHOOK_INTERVAL_S:g} s until stopped")
        alerting_loop(stop)
