"""`manage.py push ACCOUNT_ID DEVICE_ID`: Kazoo 4.3's `sup pusher_maintenance push`, a test call push."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.errors import PusherError
from push.models import DeliverySource, DeliveryStatus
from push.services import TEST_PUSH_CALLER_NAME, TEST_PUSH_CALLER_NUMBER, delivery_outcome_text, push_test_send
from registry.selectors import device_get


class Command(BaseCommand):
    help = (
        "Send a test call push to a device's push object, shaped like Kamailio's push_req (caller "
        f"{TEST_PUSH_CALLER_NUMBER} '{TEST_PUSH_CALLER_NAME}'), and print the provider's answer. "
        "Exits non-zero when the push was not delivered."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("account_id")
        parser.add_argument("device_id", help="the device doc id (Kazoo's Authorizing-ID)")

    def handle(self, *args: Any, **options: Any) -> None:
        device = device_get(account_id=options["account_id"], device_id=options["device_id"])
        if device is None:
            raise CommandError(
                f"unknown device {options['account_id']}/{options['device_id']}: it has not registered with push "
                "parameters through this pusher"
            )
        try:
            delivery = push_test_send(device=device, source=DeliverySource.COMMAND)
        except PusherError as exc:
            raise CommandError(exc.message) from exc
        for label, value in (
            ("status", delivery.get_status_display()),
            ("provider", f"{delivery.provider} {delivery.app_id}"),
            ("token", delivery.token_masked),
            ("HTTP status", delivery.http_status),
            ("reason", delivery.reason),
            ("apns-id" if delivery.provider == "apple" else "message", delivery.provider_message_id),
            ("latency", f"{delivery.latency_ms:.0f} ms" if delivery.latency_ms is not None else None),
            ("error", delivery.error),
            ("delivery", f"#{delivery.pk}"),
        ):
            if value not in (None, ""):
                self.stdout.write(f"{label}: {value}")
        if delivery.status != DeliveryStatus.SENT:
            raise CommandError(f"test push not delivered: {delivery_outcome_text(delivery=delivery)}")
