"""`manage.py export_kazoo_config [FILE]`: the rules and apps as Kazoo's system_config/pusher, without secrets."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from kazoo.config import kazoo_config_export


class Command(BaseCommand):
    help = (
        "Write the User-Agent rules and push apps as Kazoo's system_config/pusher document (JSON). "
        "Secrets (certificates, keys) are never exported."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", nargs="?", help="write here instead of stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        text = json.dumps(kazoo_config_export(), indent=2, ensure_ascii=False) + "\n"
        path = options["file"]
        if not path or path == "-":
            self.stdout.write(text, ending="")
            return
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self.stderr.write(f"written to {path}")
