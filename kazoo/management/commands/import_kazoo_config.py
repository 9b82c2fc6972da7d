"""`manage.py import_kazoo_config FILE`: Kazoo's system_config/pusher document -> rules and push apps."""

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.errors import PusherError
from core.text import path_shown
from kazoo.config import kazoo_config_import


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
        try:
            if path == "-":
                document = json.load(sys.stdin)
            else:
                with open(path, encoding="utf-8-sig") as handle:
                    document = json.load(handle)
        except OSError as exc:
            raise CommandError(f"cannot read {path_shown(path)}: {exc.strerror or type(exc).__name__}") from None
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path_shown(path)} is not JSON (line {exc.lineno}, column {exc.colno})") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path_shown(path)} is not UTF-8 text (expected the JSON document)") from None
        except ValueError:  # a NUL in the path
            raise CommandError(f"cannot read {path_shown(path)}: not a usable path") from None
        try:
            summary = kazoo_config_import(document=document)
        except PusherError as exc:
            raise CommandError(exc.message) from exc
        for line in summary.lines():
            self.stdout.write(self.style.WARNING(line) if line.startswith("warning:") else line)
