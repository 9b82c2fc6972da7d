"""First push on a fresh consumer, with and without the provider warm-up:
`python -m bench.push --first-push [--repeat 5] [--delay-ms 30] [--consumer-env NAME=VALUE]`.

For each repetition, each provider (APNs with .p8 token auth, APNs with a certificate, FCM HTTP v1)
and each mode (warm-up off and on, back to back; off first in odd repetitions, on first in even
ones, so that a drift in the machine's load falls on both modes alike), a fresh consumer
(`manage.py runconsumer`, started by bench.push.consumer_start) with `PUSHER_PROVIDER_WARMUP=0` or `1`:

  1. wait until it is consuming, then SETTLE_S in both modes; in the warm mode also until the
     consumer logged the end of its first warm-up round (`warm-up: N APNs connection(s) open, M FCM
     access token(s) fetched in T ms`; warm-up ms in the table is that T);
  2. publish ONE push_req for the provider's app and measure publish to receipt at the fake (the
     time.time_ns() put in the Payload just before basic_publish, as in the steady mode, against the
     fake's receipt time);
  3. once its delivery is settled, a second push_req on the same consumer, for reference.

The fakes run in this process. APNs: tests/fakes/apns.py (HTTP/2 + TLS, JWT checked), answering
after --delay-ms (receipt is taken before that). FCM: tests/fakes/fcm.py over TLS (the consumer
trusts its CA through PUSHER_FCM_CA_FILE); the service account's token URI names `localhost` and
the send endpoint `127.0.0.1`, two connection pools as for Google's two hosts, so that the token
fetch cannot warm the send's connection here when it would not against Google. The consumer warms
every enabled app in the database, so every consumer warms all three whichever one is measured;
"before" columns: APNs connections open at the fake and FCM tokens issued, just before the first
publish (0 and 0 when the warm-up is off).

Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import database_label, percentile, run_id, say, setup, table, wait_until
from bench.push import (
    apns_app_setup,
    consumer_finish,
    consumer_start,
    deliveries,
    latencies_ms,
    publish_burst,
    received,
)

MODES = (("off", "0"), ("on", "1"))
PROVIDERS = ("apns-token", "apns-cert", "fcm")
SETTLE_S = 1.0  # after the consumer is consuming, in both modes, before the first publish
WARM_TIMEOUT_S = 20.0  # longer than the warm-up's own (push.services.clients.WARM_TIMEOUT_S)
RECEIPT_TIMEOUT_S = 30.0
TOKEN_APP_ID = "com.acme.first.voip"
FCM_APP_ID = "com.acme.first"
FCM_PROJECT = "acme-first-push"
FCM_TOKEN = "bench-first-push-fcm-registration-token"
WARM_LINE = re.compile(
    r"warm-up: (\d+) APNs connection\(s\) open, (\d+) FCM access token\(s\) fetched in (\d+) ms"
)


@dataclass
class FirstRun:
    mode: str
    provider: str
    repetition: int
    first_ms: float
    second_ms: float
    warm_ms: float | None  # the consumer's first warm-up round, from its log
    apns_open_before: int
    fcm_tokens_before: int
    load: float
    problems: int  # WARNING/ERROR lines in the consumer's log


# --- the apps and the fakes -------------------------------------------------------------------


@dataclass
class Bench:
    apns: Any  # FakeApns
    fcm: Any  # FakeFcm
    templates: dict[str, dict[str, Any]]  # provider -> push_req body for its app


def apps_setup(apns: Any, fcm: Any, run: str) -> dict[str, Any]:
    """The three apps on the fakes: the Kamailio sample's (certificate, bench.push's), a .p8 one and
    an FCM one. Returns the rows made or updated, to delete at the end."""
    from push import services
    from push.models import Provider, PushApp
    from tests.fakes.fcm import make_service_account

    cert_app, cert_credential = apns_app_setup(apns, run)
    key = apns.new_token_key(team_id="TEAM123456")
    token_credential = services.credential_save(name=f"bench first-push p8 {run}", parsed=services.credential_parse(
        kind="apns_token", data=key.key_pem, key_id=key.key_id, team_id=key.team_id))
    token_app, _ = PushApp.objects.update_or_create(
        app_id=TOKEN_APP_ID, provider=Provider.APPLE,
        defaults={"credential": token_credential, "host": apns.host, "port": apns.port, "push_type": "voip",
                  "enabled": True, "flagged_reason": "", "bad_device_token_count": 0},
    )
    port = int(fcm.endpoint.rsplit(":", 1)[1])
    info = make_service_account(FCM_PROJECT, f"https://localhost:{port}/token")
    fcm.register_service_account(info)
    fcm_credential = services.credential_save(name=f"bench first-push fcm {run}", parsed=services.credential_parse(
        kind="fcm_service_account", data=json.dumps(info)))
    fcm_app, _ = PushApp.objects.update_or_create(
        app_id=FCM_APP_ID, provider=Provider.FIREBASE,
        defaults={"credential": fcm_credential, "enabled": True, "flagged_reason": ""},
    )
    return {"apps": [cert_app, token_app, fcm_app], "credentials": [cert_credential, token_credential, fcm_credential]}


def templates(sample_body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    token = copy.deepcopy(sample_body)
    token["Token-App"] = TOKEN_APP_ID
    fcm = copy.deepcopy(sample_body)
    fcm.update({"Token-Type": "firebase", "Token-App": FCM_APP_ID, "Token-ID": FCM_TOKEN})
    return {"apns-token": token, "apns-cert": copy.deepcopy(sample_body), "fcm": fcm}


def receipt_ms(bench: Bench, provider: str, tag: str) -> float:
    """Publish to receipt of the one push_req of `tag` at its fake (nan if it never came)."""
    if provider == "fcm":
        def mine() -> list[Any]:
            return [r for r in bench.fcm.requests if _fcm_data(r).get("bench_run") == tag]

        if not wait_until(lambda: bool(mine()), timeout=RECEIPT_TIMEOUT_S, interval=0.005):
            return float("nan")
        request = mine()[0]
        return request.time * 1000 - int(_fcm_data(request)["bench_sent_ns"]) / 1e6
    if not wait_until(lambda: bool(received(bench.apns, tag)), timeout=RECEIPT_TIMEOUT_S, interval=0.005):
        return float("nan")
    return latencies_ms(received(bench.apns, tag)[:1])[0]


def _fcm_data(request: Any) -> dict[str, Any]:
    body = request.body if isinstance(request.body, dict) else {}
    data = body.get("message", {}).get("data", {})
    return data if isinstance(data, dict) else {}


def warm_round_ms(log_path: str, *, timeout: float) -> float | None:
    """Wait for the consumer's log line ending its first warm-up round; its duration in ms, or None
    (not seen within `timeout`, or the round only failed: then the log says why)."""
    found: list[float] = []

    def seen() -> bool:
        text = Path(log_path).read_text(errors="replace") if os.path.exists(log_path) else ""
        match = WARM_LINE.search(text)
        if match:
            found.append(float(match.group(3)))
        return bool(match) or "warm-up failed" in text

    wait_until(seen, timeout=timeout, interval=0.02)
    return found[0] if found else None


# --- one run ------------------------------------------------------------------------------------


def first_run(args: argparse.Namespace, bench: Bench, *, run: str, mode: str, flag: str, provider: str,
              repetition: int) -> FirstRun:
    name = f"{run}_{mode}_{provider.replace('-', '')}_r{repetition}"
    env = {**args.consumer_env_dict, "PUSHER_PROVIDER_WARMUP": flag, "PUSHER_FCM_ENDPOINT": bench.fcm.endpoint,
           "PUSHER_FCM_CA_FILE": bench.fcm.ca_file}
    bench.apns.reset()  # records and counters only: keys, and connections still open, are kept
    bench.fcm.reset()
    consumer = consumer_start(run=name, workers=args.workers, prefetch=args.first_prefetch, ca_file=bench.apns.ca_file,
                              extra_env=env)
    consuming = time.monotonic()
    try:
        warm_ms = warm_round_ms(consumer.log_path, timeout=WARM_TIMEOUT_S) if flag == "1" else None
        time.sleep(max(0.0, consuming + SETTLE_S - time.monotonic()))
        apns_open = sum(1 for c in bench.apns.connections if c.closed_at is None)
        fcm_tokens = len(bench.fcm.token_requests)
        load = os.getloadavg()[0]
        template = bench.templates[provider]
        tag = f"bench-{run}-first-{mode}-{provider}-r{repetition}"
        publish_burst(template, tag=f"{tag}-1st", count=1)
        first = receipt_ms(bench, provider, f"{tag}-1st")
        deliveries(f"{tag}-1st", 1, timeout=RECEIPT_TIMEOUT_S)  # settled before the reference push
        publish_burst(template, tag=f"{tag}-2nd", count=1)
        second = receipt_ms(bench, provider, f"{tag}-2nd")
        deliveries(f"{tag}-2nd", 1, timeout=RECEIPT_TIMEOUT_S)
    finally:
        end = consumer_finish(consumer)
    result = FirstRun(mode, provider, repetition, first, second, warm_ms, apns_open, fcm_tokens, load, end.problems[0])
    say(f"  {mode:>3} {provider:<10} rep {repetition}: first {first:.1f} ms, second {second:.1f} ms; before the "
        f"first: {apns_open} APNs connection(s) open, {fcm_tokens} FCM token(s) issued"
        + (f"; warm-up round {warm_ms:.0f} ms" if warm_ms is not None else "")
        + ("; warm-up line NOT seen in the consumer log" if flag == "1" and warm_ms is None else ""))
    return result


# --- the whole mode -----------------------------------------------------------------------------


def first_push_main(args: argparse.Namespace) -> None:
    if not 1 <= args.repeat <= 50:
        raise SystemExit("--first-push: --repeat 1..50")
    run = run_id()
    log_path = setup(log_name=f"bench_first_{run}")

    from django.conf import settings

    from push.models import Credential, Delivery, PushApp
    from tests.fakes.apns import FakeApns
    from tests.fakes.fcm import FakeFcm
    from tests.fixtures import sample

    args.workers = args.workers or settings.PUSHER_WORKERS
    args.first_prefetch = int(args.prefetch.split(",")[0]) if args.prefetch else settings.PUSHER_PREFETCH
    load_start = os.getloadavg()[0]
    apns = FakeApns.start(delay=args.delay_ms / 1000.0)
    fcm = FakeFcm(tls=True).start()
    rows: dict[str, Any] = {"apps": [], "credentials": []}
    runs: list[FirstRun] = []
    say(f"first-push bench {run}: database {database_label()}; bench log {log_path}")
    say(f"  fake APNs on {apns.address} (answers after {args.delay_ms:g} ms), fake FCM on {fcm.endpoint} (TLS); "
        f"a fresh `manage.py runconsumer` per run (--prefetch {args.first_prefetch}, --workers {args.workers}); "
        f"load average {load_start:.2f} on {os.cpu_count()} CPUs")
    if args.consumer_env_dict:
        say(f"  consumer environment overrides: {args.consumer_env_dict}")
    try:
        rows = apps_setup(apns, fcm, run)
        bench = Bench(apns=apns, fcm=fcm, templates=templates(sample("push_req_kamailio_master.json")["body"]))
        for repetition in range(1, args.repeat + 1):
            for provider in PROVIDERS:
                for mode, flag in MODES if repetition % 2 else MODES[::-1]:
                    runs.append(first_run(args, bench, run=run, mode=mode, flag=flag, provider=provider,
                                          repetition=repetition))
    finally:
        apns.stop()
        fcm.stop()
        if not args.keep:
            Delivery.objects.filter(msg_id__startswith=f"bench-{run}-").delete()
        PushApp.objects.filter(pk__in=[app.pk for app in rows["apps"]]).delete()
        Credential.objects.filter(pk__in=[c.pk for c in rows["credentials"]]).delete()
    report(args, runs, load_start=load_start, load_end=os.getloadavg()[0])


def report(args: argparse.Namespace, runs: list[FirstRun], *, load_start: float, load_end: float) -> None:
    say()
    say(f"First push on a fresh consumer, warm-up off and on (PUSHER_PROVIDER_WARMUP=0/1, off first in odd "
        f"repetitions, on first in even ones), {args.repeat} repetitions; publish (time.time_ns in Payload) to "
        f"receipt at the fake; second = the next push_req on the same consumer. Published {SETTLE_S:g} s after "
        f"the consumer started consuming (on: and after its first warm-up round).")
    say(table(
        ["mode", "provider", "rep", "first ms", "second ms", "warm-up ms", "APNs conns before", "FCM tokens before",
         "WARN/ERR lines", "load"],
        [[r.mode, r.provider, r.repetition, r.first_ms, r.second_ms, "-" if r.warm_ms is None else r.warm_ms,
          r.apns_open_before, r.fcm_tokens_before, r.problems, r.load] for r in runs],
    ))
    say()
    rows = []
    for provider in PROVIDERS:
        for mode, _ in MODES:
            mine = [r for r in runs if r.mode == mode and r.provider == provider]
            if not mine:
                continue
            first = [r.first_ms for r in mine if r.first_ms == r.first_ms]
            second = [r.second_ms for r in mine if r.second_ms == r.second_ms]
            rows.append([mode, provider, len(mine), len(first), percentile(first, 50), max(first, default=float("nan")),
                         percentile(second, 50), max(second, default=float("nan"))])
    say(table(["mode", "provider", "runs", "received", "first p50 ms", "first max ms", "second p50 ms",
               "second max ms"], rows))
    say()
    highest = max((r.load for r in runs), default=float("nan"))
    say(f"1-minute load average: {load_start:.2f} at the start, {load_end:.2f} at the end, {highest:.2f} the highest "
        f"at a first publish; {os.cpu_count()} CPUs.")
    say("p50 is nearest-rank. The first push of either mode also pays what every consumer's")
    say("first push pays (the app cache's first read, the push path's first database statements); only the provider")
    say("connection (TCP, TLS, HTTP/2, JWT / OAuth2 token) differs. FCM warm: the token is fetched ahead, the send's")
    say("TLS connection is not (nor is it against Google).")
