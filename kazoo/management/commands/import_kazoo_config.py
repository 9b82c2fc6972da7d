"""`manage.py import_kazoo_config FILE`: Kazoo's system_config/pusher document -> rules and push apps."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.errors import PusherError
from core.jsonlimits import MAX_JSON_DEPTH, json_depth_exceeds
from core.text import path_shown
from kazoo.config import MAX_KAZOO_CONFIG_BYTES, kazoo_config_import
from push.management.commands._files import file_read


class Command(BaseCommand):
    help = (
        "Import Kazoo's system_config/pusher document: its User-Agents rules (from default and node/zone "
        "sections, in order) and its per-app apple/firebase sections with their certificates and keys. "
        "Idempotent; a certificate that does not parse is reported, not fatal; an invalid regex aborts."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "file", help="the document as JSON ('-' = stdin), e.g. from `GET /system_config/pusher` in CouchDB "
            "or Crossbar's `GET /v2/system_configs/pusher`",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        shown = "stdin" if path == "-" else path_shown(path)
        # Bounded and regular files only: /dev/zero or a 23 MB document used to hang the command.
        raw = file_read(path, limit=MAX_KAZOO_CONFIG_BYTES)
        try:
            text = raw.decode("utf-8-sig")
            # The API's limit: json.loads recurses once per level, and deep nesting is a RecursionError.
            if json_depth_exceeds(text, MAX_JSON_DEPTH):
                raise CommandError(f"{shown} is JSON nested deeper than {MAX_JSON_DEPTH} levels")
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{shown} is not JSON (line {exc.lineno}, column {exc.colno})") from None
        except UnicodeDecodeError:
            raise CommandError(f"{shown} is not UTF-8 text (expected the JSON document)") from None
        try:
            summary = kazoo_config_import(document=document)
        except PusherError as exc:
            raise CommandError(exc.message) from exc
        for line in summary.lines():
            self.stdout.write(self.style.WARNING(line) if line.startswith("warning:") else line)
