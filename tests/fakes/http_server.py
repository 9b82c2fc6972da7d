"""What the HTTP/1.1 fakes (FCM, Crossbar) share: a threaded server on 127.0.0.1 that hands every
request to its fake's `_handle`, the request record the tests read, and the JSON reply.

(The fake APNs speaks HTTP/2 by hand and has its own machinery; see tests/fakes/apns.py.)
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # as received; use header() for a case-insensitive lookup
    body: Any  # what the fake parsed (JSON, form fields), or None when absent or unparsable
    raw: bytes
    time: float

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


def record(handler: BaseHTTPRequestHandler, body: Any, raw: bytes, *, path: str | None = None) -> RecordedRequest:
    return RecordedRequest(
        method=handler.command,
        path=handler.path if path is None else path,
        headers=dict(handler.headers.items()),
        body=body,
        raw=raw,
        time=time.time(),
    )


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: Any  # the object whose _handle(handler) answers every request
    connections_accepted = 0  # TCP connections clients opened (keep-alive reuses one)

    def get_request(self) -> tuple[Any, Any]:
        accepted = super().get_request()
        self.connections_accepted += 1
        return accepted

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout tests) leaves a broken pipe behind: expected, not worth a traceback.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class FakeHandler(BaseHTTPRequestHandler):
    """Subclasses name the methods their fake serves (`do_POST = FakeHandler.dispatch`); any other
    method gets http.server's 501, as from a server that does not know it."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the real services do; every reply carries Content-Length
    server: FakeServer

    def dispatch(self) -> None:
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request stderr lines
        pass


def serve(fake: Any, handler: type[FakeHandler], *, name: str, tls: ssl.SSLContext | None = None) -> FakeServer:
    """Start a server on an ephemeral 127.0.0.1 port in a daemon thread; stop it with `shutdown`."""
    server = FakeServer(("127.0.0.1", 0), handler)
    server.fake = fake
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def shutdown(server: FakeServer) -> None:
    server.shutdown()
    server.server_close()


def reply_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: Any,
    headers: dict[str, str] | None = None,
    *,
    content_type: str = "application/json",
) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)
