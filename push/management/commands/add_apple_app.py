"""`manage.py add_apple_app APP_ID CERTFILE [HOST] [--port P]`: Kazoo's `sup pusher_maintenance add_apple_app`."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.errors import PusherError
from push.credentials import MAX_CREDENTIAL_BYTES
from push.management.commands._files import file_read
from push.management.commands._output import app_added_write
from push.models import CredentialKind, Provider
from push.services import APNS_PRODUCTION_HOST, push_app_add, push_app_address

APNS_PORT = 443


class Command(BaseCommand):
    help = (
        "Add or update an Apple push app with its APNs certificate (Kazoo's add_apple_app/2,3): a PEM file with "
        "the certificate and its unencrypted key, as Kazoo stores it, or a .p12 (with --password). "
        f"HOST defaults to {APNS_PRODUCTION_HOST}, as in Kazoo; a relay's port goes in --port (or HOST:PORT)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("app_id", help="the Token-App value, e.g. com.acme.phone.voip.prod")
        parser.add_argument("certfile", help="PEM (certificate + unencrypted key) or .p12 file")
        parser.add_argument("host", nargs="?", default=APNS_PRODUCTION_HOST,
                            help="APNs host name or IP address, e.g. api.sandbox.push.apple.com for development "
                            "builds")
        parser.add_argument("--port", type=int, default=None,
                            help=f"APNs port (default {APNS_PORT}, or the one written as HOST:PORT)")
        parser.add_argument("--password", default=None, help="the .p12 password, if any")

    def handle(self, *args: Any, **options: Any) -> None:
        data = read_file(options["certfile"])
        try:
            host, port = push_app_address(host=options["host"], port=options["port"])
            # Like the host, the port is the whole address Kazoo's command set: not a relay's port left over.
            added = push_app_add(
                app_id=options["app_id"], provider=Provider.APPLE, kind=CredentialKind.APNS_CERTIFICATE, data=data,
                password=options["password"], host=host, port=APNS_PORT if port is None else port,
            )
        except PusherError as exc:
            raise CommandError(exc.message) from exc
        app_added_write(self, added)


def read_file(path: str) -> bytes:
    """The credential file's bytes, refused past the parser's own size limit without reading the
    rest; the error names the path unless the argument looks like a key or a certificate given in
    its place, which is never echoed."""
    return file_read(path, limit=MAX_CREDENTIAL_BYTES)
