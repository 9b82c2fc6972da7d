"""What Django's error reports (the DEBUG 500 page, a mailed or logged report) may show of a request
that posts a secret: a view taking one marks it with `sensitive_post_parameters`."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter


def _posts_secret(request: HttpRequest | None) -> bool:
    return bool(getattr(request, "sensitive_post_parameters", None))


class SecretRequestReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, with two changes for a request marked as posting a secret:

    * it filters with DEBUG on too (Django's own stops filtering then, so `make run`'s 500 page
      showed a pasted private key in the POST table);
    * every frame's local variables are hidden, not only those named: below the view the secret
      travels as the form's cleaned data, an upload's bytes, a decoded text or a parsed key, under
      any name, in any frame."""

    def is_active(self, request: HttpRequest | None) -> bool:
        return super().is_active(request) or _posts_secret(request)

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: Any) -> Any:
        if _posts_secret(request):
            return {name: self.cleansed_substitute for name in tb_frame.f_locals}.items()
        return super().get_traceback_frame_variables(request, tb_frame)
