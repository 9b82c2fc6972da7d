"""The peer's side of `python -m bench.push --peer`: one bulk send of django-push-notifications.

Runs in the scratch venv bench/peer.py makes (django-push-notifications with its aioapns extra),
never in pusher's: it imports nothing of this repository. `python peer_runner.py CONFIG.json`, with
DJANGO_SETTINGS_MODULE naming the settings module the bench wrote for the run (SQLite in a
temporary directory, the app installed, PUSH_NOTIFICATIONS_SETTINGS for the fake's credential).

It creates `count` APNSDevice rows, then times one `APNSDevice.objects.filter(...).send_message(...)`
(the peer's bulk path: one asyncio.gather over aioapns, each push given 1 s) and prints one JSON
line on stdout: what the peer itself reports, its CPU time and its peak RSS. What reached APNs is
counted at the fake, by the bench, not here.

The only harness code: aioapns dials api(.development).push.apple.com:443 with
`ssl.create_default_context()`, so the fake's address is put in its protocol classes, and the
context it creates also trusts the fake's test CA and offers ALPN "h2" (aioapns offers none; the
fake, strict where Apple is lenient, hangs up on a client that did not negotiate HTTP/2).
"""

from __future__ import annotations

import collections
import json
import resource
import ssl
import sys
import time
from typing import Any


def point_at_the_fake(host: str, port: int, ca_file: str) -> None:
    from aioapns import connection

    for protocol in (connection.APNsProductionClientProtocol, connection.APNsDevelopmentClientProtocol):
        protocol.APNS_SERVER = host
        protocol.APNS_PORT = port
    default_context = ssl.create_default_context

    def context_trusting_the_fake(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = default_context(*args, **kwargs)
        context.load_verify_locations(cafile=ca_file)
        context.set_alpn_protocols(["h2"])
        return context

    ssl.create_default_context = context_trusting_the_fake


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    with open("/proc/self/status") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def error_kinds(message: str) -> dict[str, int]:
    """The peer raises APNSError("One or more errors failed with errors: A, B, ...") once every push
    has an outcome; its results are lost with it, so its failures are counted from the message
    (a kind is the description up to its first colon: TimeoutError, CommunicationError...)."""
    listed = message.partition("errors: ")[2]
    return dict(collections.Counter(item.split(":", 1)[0].strip() or "?" for item in listed.split(", ") if item))


def main() -> None:
    with open(sys.argv[1]) as handle:
        config = json.load(handle)
    point_at_the_fake(config["host"], config["port"], config["ca_file"])

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    from push_notifications import apns_async  # noqa: F401  (imported before the clock starts)
    from push_notifications.exceptions import APNSError, APNSServerError
    from push_notifications.models import APNSDevice

    count, prefix = config["count"], config["token_prefix"]
    APNSDevice.objects.bulk_create(
        [APNSDevice(registration_id=f"{prefix}{i:08x}", active=True) for i in range(count)], batch_size=500
    )
    devices = APNSDevice.objects.filter(registration_id__startswith=prefix)
    rss_before, _ = rss_mb()
    success, errors, failure = 0, {}, ""
    started_at, cpu_before, wall_before = time.time(), cpu_s(), time.perf_counter()
    try:
        results = devices.send_message(config["alert"], extra=config["extra"])
        success = sum(1 for result in results for outcome in result.values() if outcome == "Success")
    except APNSServerError as exc:  # aioapns could not connect at all: the whole bulk failed
        failure = f"APNSServerError: {exc}"[:300]
    except APNSError as exc:
        errors = error_kinds(str(exc))
        success = count - sum(errors.values())
    call_s, cpu = time.perf_counter() - wall_before, cpu_s() - cpu_before
    rss_after, hwm = rss_mb()
    print(json.dumps({
        "asked": count, "success": success, "errors": errors, "failure": failure, "started_at": started_at,
        "call_s": call_s, "cpu_s": cpu, "process_cpu_s": cpu_s(), "rss_before_mb": rss_before,
        "rss_after_mb": rss_after, "rss_hwm_mb": hwm,
    }), flush=True)


if __name__ == "__main__":
    main()
