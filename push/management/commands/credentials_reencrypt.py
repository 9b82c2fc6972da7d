"""`manage.py credentials_reencrypt`: re-encrypt every stored secret with the first FIELD_ENCRYPTION_KEY
(after prepending a new key), so the old key can then be dropped."""

from typing import Any

from django.core.management.base import BaseCommand

from push.services import credentials_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt stored credentials with the first key of FIELD_ENCRYPTION_KEY (key rotation)."

    def handle(self, *args: Any, **options: Any) -> None:
        count = credentials_reencrypt()
        self.stdout.write(f"re-encrypted {count} credential(s) with the current key")
