"""A webhook receiver for the tests: a real HTTP server on 127.0.0.1 that records every request and
answers with the statuses it is told to, and can be taken down (its port closed: connection
refused) and brought back up on the same port."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A sender that gave up waiting (the timeout test) leaves a broken pipe behind: expected.
        if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            super().handle_error(request, client_address)


class Receiver:
    def __init__(self, *, port: int | None = None, path: str = "/hooks/pusher") -> None:
        self.port = port or free_port()
        self.path = path
        self.received: list[Received] = []
        self.answers: deque[int] = deque()  # statuses for the next requests, in order; then default
        self.default = 200
        self.delay_s = 0.0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                status = receiver.answers.popleft() if receiver.answers else receiver.default
                answer = b"ok" if status < 300 else b"receiver says no"
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), name="webhook-receiver", daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def header(self, index: int, name: str) -> str:
        headers = {k.lower(): v for k, v in self.received[index].headers.items()}
        return headers[name.lower()]
