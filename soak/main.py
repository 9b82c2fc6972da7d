"""`python -m soak [--scenario NAME ...]`: run the scenarios, print one table, clean up.

The parent prepares what outlives a scenario (the `pusher_soak` database, a private RabbitMQ
vhost, the private PostgreSQL for the restart scenario) and runs each scenario in a child process
(`python -m soak --child NAME`): one Django setup per database, and a scenario that hangs or
crashes is killed with its consumers (its own process group) without stopping the others.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from soak import broker
from soak.counting import Figures
from soak.env import ROOT, database_create_if_missing, django_setup, migrate, say, soak_environ
from soak.privatepg import PrivatePostgres
from soak.scenarios import SCENARIOS, Context, Scenario

# The whole soak stays under 10 minutes: a scenario gets what is left of this budget at most.
BUDGET_S = 560.0
COLUMNS = ("scenario", "sent", "handled", "dead-lettered", "pushes sent", "duplicates", "lost", "stuck",
           "expired", "late", "s", "verdict")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--vhost", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--pg-dir", help=argparse.SUPPRESS)
    parser.add_argument("--pg-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    soak_environ()
    if args.child:
        return child(args)
    return parent([s for s in SCENARIOS if not args.scenario or s.name in args.scenario])


# --- parent ----------------------------------------------------------------------------------------------


def parent(scenarios: list[Scenario]) -> int:
    started = time.monotonic()
    database_url = os.environ["DATABASE_URL"]
    if database_create_if_missing(database_url):
        say("soak: created the database")
    migrate(database_url)
    vhost, _ = broker.vhost_create("pusher_soak", os.environ["AMQP_URL"])
    say(f"soak: database {database_url}; RabbitMQ vhost {vhost} (private, removed at the end)")
    results: list[Figures] = []
    try:
        for scenario in scenarios:
            say(f"\n== {scenario.name}: {scenario.title}")
            left = BUDGET_S - (time.monotonic() - started)
            if left < 30:
                results.append(Figures(scenario.name, verdict="SKIP", problems=["the soak's time budget is spent"]))
                continue
            results.append(run_child(scenario, vhost, timeout=min(scenario.timeout_s, left)))
            result = results[-1]
            examples = [f"e.g. {', '.join(result.examples)}"] if result.problems and result.examples else []
            for line in result.notes + [f"PROBLEM: {p}" for p in result.problems] + examples:
                say(f"  {line}")
    finally:
        broker.vhost_delete(vhost)
        say(f"\nsoak: removed vhost {vhost} (its queues and exchanges)")
    say(f"\nsoak figures ({time.monotonic() - started:.0f} s in all)\n")
    say(table(results))
    return 1 if any(r.verdict != "ok" for r in results) else 0


def run_child(scenario: Scenario, vhost: str, *, timeout: float) -> Figures:
    env = dict(os.environ)
    command = [sys.executable, "-m", "soak", "--child", scenario.name, "--vhost", vhost]
    pg = None
    with tempfile.NamedTemporaryFile(prefix=f"soak_{scenario.name}_", suffix=".json", delete=False) as handle:
        result_path = handle.name
    command += ["--result", result_path]
    try:
        if scenario.private_pg:
            pg = PrivatePostgres().start()
            migrate(pg.url())
            env["DATABASE_URL"] = pg.url()
            command += ["--pg-dir", pg.directory, "--pg-port", str(pg.port)]
            say(f"  private PostgreSQL on 127.0.0.1:{pg.port} in {pg.directory}")
        # Its own session: on a timeout the whole group (the child and its consumers) is killed.
        process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)  # noqa: S603 - fixed argv
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            return Figures(scenario.name, verdict="FAIL", problems=[f"timed out after {timeout:.0f} s"])
        data = Path(result_path).read_text() if Path(result_path).stat().st_size else ""
        if process.returncode != 0 or not data:
            return Figures(scenario.name, verdict="FAIL", problems=[f"the scenario crashed ({process.returncode})"])
        return Figures(**json.loads(data))
    finally:
        Path(result_path).unlink(missing_ok=True)
        if pg is not None:
            pg.remove()
            say(f"  private PostgreSQL stopped and {pg.directory} removed")


def table(results: list[Figures]) -> str:
    rows = [[r.scenario, r.sent, r.handled, r.dead_lettered, r.pushes_sent, r.duplicates, r.lost, r.stuck,
             r.expired, r.late, f"{r.seconds:.0f}", r.verdict] for r in results]
    cells = [list(COLUMNS)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- child -----------------------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    from soak.fakes import Fakes

    scenario = next(s for s in SCENARIOS if s.name == args.child)
    django_setup()
    logging.getLogger().setLevel(logging.WARNING)  # the report, not the service's INFO lines
    fakes = Fakes.start()
    private_pg = PrivatePostgres.attach(args.pg_dir, args.pg_port) if args.pg_dir else None
    ctx = Context(name=scenario.name, vhost=args.vhost, amqp_url=broker.vhost_url(os.environ["AMQP_URL"], args.vhost),
                  fakes=fakes, private_pg=private_pg)
    try:
        fakes.seed()
        ctx.prepare()
        figures = scenario.run(ctx).close()
    finally:
        with contextlib.suppress(Exception):
            ctx.cleanup()
        fakes.stop()
        from django.db import connections

        connections.close_all()
    Path(args.result).write_text(json.dumps(asdict(figures)))
    return 0
