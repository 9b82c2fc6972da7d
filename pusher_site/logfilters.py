"""Log filters the logging configuration (pusher_site/settings.py) installs. Nothing of Django's
apps is imported here: the settings load this module before the apps are ready."""

from __future__ import annotations

import logging
import re

# /report/<slug>/<secret>/?<parameters>: the secret, and the query string with the tokens.
_REPORT_SECRET = re.compile(r"(/report/[A-Za-z0-9_\-]{1,64}/)[^/\s?\"'#]+")
_REPORT_QUERY = re.compile(r"(/report/[^\s?\"'#]*)\?[^\s\"'#]*")


def report_path_mask(text: str) -> str:
    """`text` with every token report URL's secret and query string replaced by `***`."""
    if "/report/" not in text:
        return text
    return _REPORT_QUERY.sub(r"\1?***", _REPORT_SECRET.sub(r"\1***", text))


class ReportPathFilter(logging.Filter):
    """Masks token report URLs (pusher_site.report) in every record: the secret in their path and
    the tokens in their query string, wherever a line names them (Django's request log, an access
    log, a traceback's message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format is left for the handler to report
            return True
        masked = report_path_mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
