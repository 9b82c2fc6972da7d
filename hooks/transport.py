"""The webhook POST, transport only: it takes a URL, a body and headers and returns what the receiver
answered; it never touches the ORM (the sender in hooks.services decides what an answer means)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import httpx

from hooks.wire import url_origin

# What is kept of a refusing receiver's answer, for the delivery log.
ANSWER_SNIPPET_BYTES = 200


@dataclass(frozen=True)
class PostResult:
    status: int | None  # the HTTP status, or None when no answer came (refused, timed out, TLS...)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Poster(Protocol):
    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> PostResult: ...


@contextmanager
def webhook_poster(*, timeout_s: float) -> Iterator[Poster]:
    """A poster for a run of webhooks: one HTTP client, so that the requests to one receiver reuse
    its connection. `timeout_s` bounds each network step (connecting, sending, each read).
    Redirects are not followed: a receiver that moved answers 3xx, which is not a delivery.
    HTTP_PROXY / HTTPS_PROXY / NO_PROXY from the environment apply (httpx's own rules)."""
    with httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False) as client:

        def post(url: str, body: bytes, headers: dict[str, str]) -> PostResult:
            return _post(client, url, body, headers, timeout_s)

        yield post


def _post(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> PostResult:
    try:
        with client.stream("POST", url, content=body, headers=headers) as response:
            if 200 <= response.status_code < 300:
                return PostResult(response.status_code)
            snippet = b""
            for chunk in response.iter_bytes():
                snippet += chunk
                if len(snippet) >= ANSWER_SNIPPET_BYTES:
                    break
            text = snippet[:ANSWER_SNIPPET_BYTES].decode("utf-8", "replace").replace("\x00", "").strip()
            reason = f"HTTP {response.status_code}"
            if 300 <= response.status_code < 400 and response.headers.get("location"):
                reason += " (a redirect: pusher does not follow them; update the URL)"
            return PostResult(response.status_code, f"{reason}: {text}" if text else reason)
    except httpx.TimeoutException as exc:
        return PostResult(None, f"no answer within {timeout_s:g} s ({type(exc).__name__})")
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # (a host IDNA refuses is a ValueError)
        # Some of httpx's messages quote the URL, whose path or query may hold the receiver's token.
        detail = str(exc).replace(url, url_origin(url)) or "no detail"
        return PostResult(None, f"{type(exc).__name__}: {detail}")
