"""`python manage.py runconsumer`: the AMQP consumer, a thin command around kazoo.worker."""

import gc
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.utils import timezone
from prometheus_client import generate_latest

from core.logqueue import log_queue_start, log_queue_stop
from kazoo.alerting import alerting_loop
from kazoo.models import ConsumerStatus
from kazoo.reconcile import reconcile_loop
from kazoo.retention import prune_loop
from kazoo.supervisor import Supervisor, metrics_serve
from kazoo.sync import sync_loop
from kazoo.topology import QueueDeclaration
from kazoo.warmup import warm_thread_start
from kazoo.worker import Worker, WorkerConfig
from push.providers import apns

log = logging.getLogger("pusher.consumer")


class Command(BaseCommand):
    help = "Consume reg_success and push_req from the Kazoo bus (RabbitMQ at AMQP_URL)."
    # No system checks here: `migrate` (bin/serve runs it first) and `check` run them all, and in
    # this process, which serves no URL, the URL checks alone would load the URLconf: the API, its
    # serializers and the OpenAPI generator, ~9.5 MB of the consumer's RSS (98.5 -> 89 MB idle).
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--queue", default=settings.PUSHER_QUEUE_NAME, help="default PUSHER_QUEUE_NAME")
        parser.add_argument(
            "--workers", type=int, default=settings.PUSHER_WORKERS,
            help="threads for redelivered push_req, at least 1 (default PUSHER_WORKERS)",
        )
        parser.add_argument(
            "--prefetch", type=int, default=settings.PUSHER_PREFETCH,
            help=f"unacked messages in hand, 1 to {PREFETCH_MAX} (default PUSHER_PREFETCH)",
        )
        parser.add_argument(
            "--metrics-port", type=int, default=0,
            help="serve /metrics and /ready (connected and consuming) on this port (1-65535); 0 = off",
        )
        parser.add_argument("--metrics-host", default="127.0.0.1")
        parser.add_argument(
            "--processes", type=int, default=settings.PUSHER_CONSUMER_PROCESSES,
            help=f"consumer processes sharing the queue, 1 to {PROCESSES_MAX}; above 1 this process supervises "
                 "them and serves their merged metrics (default PUSHER_CONSUMER_PROCESSES)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        queue = _options_check(options)
        if options["processes"] > 1:
            supervisor = Supervisor(
                processes=options["processes"],
                child_args=["--queue", queue, "--workers", str(options["workers"]),
                            "--prefetch", str(options["prefetch"])],
                metrics_host=options["metrics_host"], metrics_port=options["metrics_port"],
            )
            supervisor.install_signal_handlers()
            try:
                code = supervisor.run()
            except (OSError, OverflowError) as exc:  # the metrics port: in use, not an address of this host
                raise _metrics_error(options["metrics_host"], options["metrics_port"], exc) from None
            raise SystemExit(code)
        try:  # a consumer that cannot build its APNs client would only dead-letter every push: say so now
            apns.get_client()
        except Exception as exc:  # noqa: BLE001 - reported as one line
            raise CommandError(
                f"cannot build the APNs client ({type(exc).__name__}: {exc}); check PUSHER_APNS_CA_FILE"
            ) from None
        worker = Worker(
            WorkerConfig(
                amqp_url=settings.AMQP_URL,
                queue=queue,
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
        if options["metrics_port"]:
            # Before anything starts: a port that is taken is a one-line error, not a half-started consumer.
            _serve_metrics(worker, options["metrics_host"], options["metrics_port"])
        worker.install_signal_handlers()
        threading.Thread(target=_heartbeat_loop, args=(worker,), name="heartbeat", daemon=True).start()
        threading.Thread(target=sync_loop, args=(worker.stopping,), name="kazoo-sync", daemon=True).start()
        threading.Thread(target=reconcile_loop, args=(worker.stopping,), name="kazoo-reconcile", daemon=True).start()
        warm_thread_start(worker.connected, worker.stopping)
        threading.Thread(target=prune_loop, args=(worker.stopping,), name="prune", daemon=True).start()
        threading.Thread(target=alerting_loop, args=(worker.stopping,), name="webhooks", daemon=True).start()
        logs = log_queue_start()  # the message threads hand their log lines to one writer
        gc_settle()
        try:
            code = worker.run()
            _heartbeat(worker, final=True)
        finally:
            log_queue_stop(logs)
        raise SystemExit(code)


# More processes than this on one host only fight over its cores and the database's connections.
PROCESSES_MAX = 64
# AMQP's basic.qos prefetch-count is a 16-bit number; 0 would mean "no limit".
PREFETCH_MAX = 65535
# The broker refuses queue names over 255 bytes, and declaring one starting with "amq." (reserved);
# either would only show up as a channel error, retried forever.
QUEUE_NAME_MAX_BYTES = 255


def _options_check(options: dict[str, Any]) -> str:
    """The options (or the settings they default to) that would crash or misbehave later, as one
    CommandError each. Returns the queue name."""
    queue = options["queue"]
    if not isinstance(queue, str) or not queue.strip():
        raise CommandError("--queue (PUSHER_QUEUE_NAME) must not be empty: an unnamed queue would fill up unread")
    if queue != queue.strip() or not queue.isprintable():
        raise CommandError(f"--queue (PUSHER_QUEUE_NAME) {queue!r} has leading/trailing spaces or control characters")
    if len(queue.encode("utf-8", "surrogateescape")) > QUEUE_NAME_MAX_BYTES:
        raise CommandError(f"--queue (PUSHER_QUEUE_NAME) is longer than {QUEUE_NAME_MAX_BYTES} bytes")
    if queue.startswith("amq."):
        raise CommandError(f"--queue (PUSHER_QUEUE_NAME) {queue!r}: names starting with 'amq.' are RabbitMQ's own")
    if options["workers"] < 1:
        raise CommandError(f"--workers (PUSHER_WORKERS) must be at least 1, not {options['workers']}")
    if not 1 <= options["prefetch"] <= PREFETCH_MAX:
        raise CommandError(f"--prefetch (PUSHER_PREFETCH) must be 1 to {PREFETCH_MAX}, not {options['prefetch']}")
    if not 1 <= options["processes"] <= PROCESSES_MAX:
        raise CommandError(f"--processes (PUSHER_CONSUMER_PROCESSES) must be 1 to {PROCESSES_MAX}, "
                           f"not {options['processes']}")
    if not 0 <= options["metrics_port"] <= 65535:
        raise CommandError(f"--metrics-port must be 1 to 65535 (0 = off), not {options['metrics_port']}")
    return queue


_started = timezone.now()


def gc_settle() -> None:
    """Once started, move every object alive (Django, its apps, the libraries: 85,000-95,000 of
    them) out of the cyclic collector's way. They live as long as the process, yet each full
    collection walks them all: one such pass, in a fresh consumer's first seconds, held the push
    lane's loop for 74-120 ms (gc.callbacks under bench.push --steady 500), the worst pushes of that
    run. Frozen, a full collection walks only what was made since (~10,000 objects, 8 ms).
    Reference counting still frees frozen objects; only a cycle among them would never be freed."""
    gc.collect()
    gc.freeze()
    log.info("%d objects alive at start-up moved out of the garbage collector's passes", gc.get_freeze_count())


def _heartbeat(worker: Worker, *, final: bool = False, previous: list | None = None) -> None:
    now = time.time()
    rate = 0.0
    if previous is not None:
        last_total, last_time = previous
        rate = (worker.messages_total - last_total) / max(now - last_time, 1e-6)
        previous[:] = [worker.messages_total, now]
    connected = worker.connected.is_set() and not final
    now_at = timezone.now()
    ConsumerStatus.objects.update_or_create(
        name=f"{socket.gethostname()}:{os.getpid()}",
        defaults={
            "connected": connected,
            **({"last_connected_at": now_at} if connected else {}),
            "started_at": _started,
            "last_message_at": (
                datetime.fromtimestamp(worker.last_message_at, tz=UTC) if worker.last_message_at else None
            ),
            "messages_total": worker.messages_total,
            "messages_per_s": rate,
            "updated_at": now_at,
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


def _metrics_error(host: str, port: int, exc: BaseException) -> CommandError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return CommandError(f"cannot serve metrics on {host}:{port}: {reason}")


def _serve_metrics(worker: Worker, host: str, port: int) -> ThreadingHTTPServer:
    def ready() -> dict[str, Any]:
        return {"ready": worker.connected.is_set(), "messages_total": worker.messages_total}

    try:
        server = metrics_serve(host, port, metrics=generate_latest, ready=ready)
    except (OSError, OverflowError) as exc:  # in use, not an address of this host, no such host
        raise _metrics_error(host, port, exc) from None
    log.info("metrics and readiness on http://%s:%d/metrics and /ready", host, port)
    return server
