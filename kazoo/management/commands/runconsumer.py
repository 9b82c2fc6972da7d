"""`python manage.py runconsumer`: the AMQP consumer, a thin command around kazoo.worker."""

import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.logqueue import log_queue_start, log_queue_stop
from kazoo.models import ConsumerStatus
from kazoo.sync import sync_loop
from kazoo.topology import QueueDeclaration
from kazoo.warmup import warm_loop
from kazoo.worker import Worker, WorkerConfig
from push.providers import apns

log = logging.getLogger("pusher.consumer")


class Command(BaseCommand):
    help = "Consume reg_success and push_req from the Kazoo bus (RabbitMQ at AMQP_URL)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--queue", default=settings.PUSHER_QUEUE_NAME)
        parser.add_argument(
            "--workers", type=int, default=settings.PUSHER_WORKERS, help="threads for redelivered push_req"
        )
        parser.add_argument("--prefetch", type=int, default=settings.PUSHER_PREFETCH)
        parser.add_argument(
            "--metrics-port", type=int, default=0,
            help="serve /metrics and /ready (connected and consuming) on this port; 0 = off",
        )
        parser.add_argument("--metrics-host", default="127.0.0.1")

    def handle(self, *args: Any, **options: Any) -> None:
        try:  # a consumer that cannot build its APNs client would only dead-letter every push: say so now
            apns.get_client()
        except Exception as exc:  # noqa: BLE001 - reported as one line
            raise CommandError(
                f"cannot build the APNs client ({type(exc).__name__}: {exc}); check PUSHER_APNS_CA_FILE"
            ) from None
        worker = Worker(
            WorkerConfig(
                amqp_url=settings.AMQP_URL,
                queue=options["queue"],
                queue_declaration=QueueDeclaration(
                    durable=settings.PUSHER_QUEUE_DURABLE, auto_delete=settings.PUSHER_QUEUE_AUTO_DELETE,
                    max_length=settings.PUSHER_QUEUE_MAX_LENGTH, message_ttl_ms=settings.PUSHER_QUEUE_MESSAGE_TTL_MS,
                ),
                dead_letter_exchange=settings.PUSHER_DEAD_LETTER_EXCHANGE,
                dead_letter_queue=settings.PUSHER_DEAD_LETTER_QUEUE,
                prefetch=options["prefetch"],
                push_workers=options["workers"],
            )
        )
        worker.install_signal_handlers()
        threading.Thread(target=_heartbeat_loop, args=(worker,), name="heartbeat", daemon=True).start()
        threading.Thread(target=sync_loop, args=(worker.stopping,), name="kazoo-sync", daemon=True).start()
        threading.Thread(target=warm_loop, args=(worker.connected, worker.stopping), name="provider-warm",
                         daemon=True).start()
        if options["metrics_port"]:
            _serve_metrics(worker, options["metrics_host"], options["metrics_port"])
        logs = log_queue_start()  # the message threads hand their log lines to one writer
        try:
            code = worker.run()
            _heartbeat(worker, final=True)
        finally:
            log_queue_stop(logs)
        raise SystemExit(code)


_started = timezone.now()


def _heartbeat(worker: Worker, *, final: bool = False, previous: list | None = None) -> None:
    now = time.time()
    rate = 0.0
    if previous is not None:
        last_total, last_time = previous
        rate = (worker.messages_total - last_total) / max(now - last_time, 1e-6)
        previous[:] = [worker.messages_total, now]
    ConsumerStatus.objects.update_or_create(
        name=f"{socket.gethostname()}:{os.getpid()}",
        defaults={
            "connected": worker.connected.is_set() and not final,
            "started_at": _started,
            "last_message_at": (
                datetime.fromtimestamp(worker.last_message_at, tz=UTC) if worker.last_message_at else None
            ),
            "messages_total": worker.messages_total,
            "messages_per_s": rate,
            "updated_at": timezone.now(),
        },
    )


def _heartbeat_loop(worker: Worker) -> None:
    previous = [0, time.time()]
    while not worker.stopping.wait(5.0):
        try:
            close_old_connections()
            _heartbeat(worker, previous=previous)
        except Exception:
            log.debug("heartbeat not written", exc_info=True)


def _serve_metrics(worker: Worker, host: str, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype, status = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path in ("/ready", "/healthz"):
                ready = worker.connected.is_set()
                body = json.dumps({"ready": ready, "messages_total": worker.messages_total}).encode()
                ctype, status = "application/json", 200 if ready else 503
            else:
                body, ctype, status = b"not found", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics and readiness on http://%s:%d/metrics and /ready", host, port)
