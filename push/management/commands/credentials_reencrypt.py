"""`manage.py credentials_reencrypt`: re-encrypt every stored secret (credentials, webhook and token
reporter secrets, the shared APNs provider tokens) with the first FIELD_ENCRYPTION_KEY (after
prepending a new key), so the old key can then be dropped."""

from typing import Any

from django.core.management.base import BaseCommand

from hooks.services import webhook_secrets_reencrypt
from push.services import credentials_reencrypt
from push.services.apns_tokens import apns_provider_tokens_reencrypt
from registry.reporting import token_reporters_reencrypt


class Command(BaseCommand):
    help = ("Re-encrypt stored credentials, webhook secrets, token reporter secrets and the shared APNs provider "
            "tokens with the first key of "
            "FIELD_ENCRYPTION_KEY "
            "(key rotation).")

    def handle(self, *args: Any, **options: Any) -> None:
        done = credentials_reencrypt()
        hooks_done, hooks_lost = webhook_secrets_reencrypt()
        self.stdout.write(f"re-encrypted {done.count} credential(s) and {hooks_done} webhook secret(s) with the "
                          "current key")
        if done.undecryptable:
            self.stderr.write(
                f"{len(done.undecryptable)} credential(s) cannot be decrypted with any key of FIELD_ENCRYPTION_KEY "
                f"and were left as they are: {', '.join(done.undecryptable)}. Add the key they were written with "
                "to the list and run this again, or upload them again."
            )
        if hooks_lost:
            self.stderr.write(
                f"{len(hooks_lost)} webhook secret(s) cannot be decrypted with any key of FIELD_ENCRYPTION_KEY and "
                f"were left as they are: {', '.join(hooks_lost)}. Add the key they were written with to the list "
                "and run this again, or set a new secret on those subscriptions."
            )
        count, undecryptable = token_reporters_reencrypt()
        self.stdout.write(f"re-encrypted {count} token reporter secret(s) with the current key")
        if undecryptable:
            self.stderr.write(
                f"{len(undecryptable)} token reporter secret(s) cannot be decrypted with any key of "
                f"FIELD_ENCRYPTION_KEY and were left as they are: {', '.join(undecryptable)}. Add the key they were "
                "written with to the list and run this again, or set those secrets again."
            )
        tokens_done, tokens_dropped = apns_provider_tokens_reencrypt()
        self.stdout.write(f"re-encrypted {tokens_done} APNs provider token(s) with the current key"
                          + (f"; deleted {tokens_dropped} no key decrypts (minted again on the next push)"
                             if tokens_dropped else ""))
