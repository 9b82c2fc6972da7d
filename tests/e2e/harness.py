"""Real processes for the end-to-end tests: a Kamailio with the project's own configuration and
SIPp user agents, all on 127.0.0.1, each started in its own session so it can be stopped with
everything it forked, and never left running (stop() escalates to SIGKILL; fixtures call it on
failure too).

Why process groups: Kamailio forks its workers (and an AMQP process for the kazoo module); killing
only the main pid could leave children holding the port and the broker connection.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
KAMAILIO_CFG = HERE / "kamailio" / "kamailio.cfg"
SCENARIOS = HERE / "sipp"
LOOPBACK = "127.0.0.1"


def tools_missing() -> list[str]:
    """What bin/test-setup-e2e installs and this machine lacks."""
    missing = [name for name in ("kamailio", "sipp") if shutil.which(name) is None]
    if kamailio_modules_dir() is None:
        missing.append("kamailio-kazoo-modules")
    return missing


def kamailio_modules_dir() -> str | None:
    """Debian installs modules under the multiarch dir (e.g. /usr/lib/x86_64-linux-gnu/kamailio/modules)."""
    found = sorted(glob.glob("/usr/lib/*/kamailio/modules/kazoo.so")) + glob.glob("/usr/lib/kamailio/modules/kazoo.so")
    return os.path.dirname(found[0]) + "/" if found else None


def free_udp_port() -> int:
    """A UDP port on loopback nobody holds right now (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def udp_port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
        return False


def _stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process's whole session, then SIGKILL what is left after `grace` seconds."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Children may outlive the leader: the group is gone only when killpg finds nobody.
    deadline = time.monotonic() + grace
    while True:
        try:
            os.killpg(process.pid, signal.SIGKILL if time.monotonic() > deadline else signal.SIGTERM)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline + 5:
            raise RuntimeError(f"process group {process.pid} survived SIGKILL")
        time.sleep(0.05)
    if process.poll() is None:
        process.wait(timeout=5)


@dataclass
class Kamailio:
    """Kamailio on 127.0.0.1:`port` with tests/e2e/kamailio/kamailio.cfg; `media_port` is the
    source port it trusts as the media server."""

    workdir: Path
    port: int
    media_port: int
    amqp_url: str
    node_hostname: str = "e2e.pusher.test"
    # REGISTERs ask Kazoo's registrar (an authn_req on the bus) for their CCVs, as registrar-role.cfg.
    authn_query: bool = False
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "kamailio.log"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        modules = kamailio_modules_dir()
        assert modules is not None, "kamailio-kazoo-modules is not installed (bin/test-setup-e2e)"
        run_dir = self.workdir / "run"
        run_dir.mkdir(exist_ok=True)
        return [
            "kamailio", "-DD", "-E", "-f", str(KAMAILIO_CFG),
            "-l", f"udp:{LOOPBACK}:{self.port}",
            "-Y", str(run_dir), "-w", str(self.workdir),
            "-m", "64", "-M", "8",
            "-A", f'KZ_MODULES_PATH="{modules}"',
            "-A", f'KZ_AMQP_URL="{self.amqp_url}"',
            "-A", f'KZ_NODE_HOSTNAME="{self.node_hostname}"',
            "-A", f'MEDIA_SERVER_IP="{LOOPBACK}"',
            "-A", f"MEDIA_SERVER_PORT={self.media_port}",
            *(["-A", "KZ_AUTHN_QUERY=1"] if self.authn_query else []),
        ]

    def start(self, timeout: float = 15.0) -> None:
        # Its own session (process group): stop() signals Kamailio and every worker it forked.
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kamailio exited with {self.process.returncode}:\n{self.log_tail()}")
            if udp_port_bound(self.port) and self._amqp_ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"kamailio not ready in {timeout}s:\n{self.log_tail()}")

    def _amqp_ready(self) -> bool:
        # The kazoo module's AMQP process logs its connection; a publish before that would be lost.
        return "amqp|connection open" in self.log_text()

    def invite_held_at(self, call_id: str) -> float:
        """When the pusher role took the media server's INVITE (Unix time, from its log line)."""
        match = re.search(rf"pusher\|holding call {re.escape(call_id)} for \S+ since (\d+\.\d+)", self.log_text())
        if match is None:
            raise AssertionError(f"kamailio never held call {call_id}:\n{self.log_tail()}")
        return float(match.group(1))

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process, grace=5.0)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@dataclass
class SippMessage:
    at: float  # Unix time the message was sent or received
    direction: str  # "sent" or "received"
    first_line: str


@dataclass
class Sipp:
    """One SIPp user agent running `scenario` from 127.0.0.1:`port` towards `remote`."""

    name: str
    scenario: str
    port: int
    remote: str
    workdir: Path
    variables: dict[str, str] = field(default_factory=dict)
    call_id: str | None = None
    timeout_s: float = 30.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def message_log(self) -> Path:
        return self.workdir / f"{self.name}_messages.log"

    @property
    def error_log(self) -> Path:
        return self.workdir / f"{self.name}_errors.log"

    @property
    def output_log(self) -> Path:
        return self.workdir / f"{self.name}_output.log"

    def command(self) -> list[str]:
        cmd = [
            "sipp", self.remote, "-sf", str(SCENARIOS / self.scenario),
            "-i", LOOPBACK, "-p", str(self.port), "-t", "u1",
            "-m", "1", "-l", "1", "-nostdin", "-nd",
            # Bounded in time whatever the proxy does; timing out counts as a failure.
            "-timeout", f"{int(self.timeout_s)}s", "-timeout_error",
            # Media (RTP echo) and remote-control ports: not the defaults 6000 and 8888, so agents
            # running at the same time don't collide. (SIPp binds its control socket on all
            # interfaces; it only listens there, it sends nothing.)
            "-mp", str(free_udp_port()), "-cp", str(free_udp_port()),
            "-trace_msg", "-message_file", str(self.message_log),
            "-trace_err", "-error_file", str(self.error_log),
        ]
        if self.call_id:
            cmd += ["-cid_str", self.call_id]
        for name, value in self.variables.items():
            cmd += ["-set", name, value]
        return cmd

    def start(self) -> Sipp:
        with open(self.output_log, "wb") as out:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.workdir,
            )
        return self

    def wait(self, timeout: float | None = None) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout if timeout is not None else self.timeout_s + 10)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"sipp {self.name} still running after {timeout}s:\n{self.report()}") from None

    def run(self, timeout: float | None = None) -> int:
        self.start()
        return self.wait(timeout)

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process, grace=2.0)

    def messages(self) -> list[SippMessage]:
        """The trace SIPp wrote (-trace_msg): each message's time, direction and first line."""
        try:
            text = self.message_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        out = []
        header = re.compile(
            r"^-+ (\d{4}-\d{2}-\d{2})\s+(\d{2}:\d{2}:\d{2}\.\d+)\s*\n"  # ----- 2026-11-27 11:41:23.773863
            r"(UDP|TCP) message (sent|received)[^\n]*\n\n"  # UDP message sent (489 bytes):
            r"([^\n]*)",  # the start line
            re.MULTILINE,
        )
        for match in header.finditer(text):
            day, clock, _, direction, first_line = match.groups()
            at = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M:%S.%f").timestamp()
            out.append(SippMessage(at=at, direction=direction, first_line=first_line.strip()))
        return out

    def first(self, direction: str, starts_with: str) -> SippMessage:
        for message in self.messages():
            if message.direction == direction and message.first_line.startswith(starts_with):
                return message
        raise AssertionError(f"sipp {self.name} never {direction} {starts_with!r}:\n{self.report()}")

    def report(self) -> str:
        parts = [f"--- sipp {self.name}: {' '.join(self.command()[:3])} ..."]
        for path in (self.output_log, self.error_log):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        parts.append("--- messages: " + "; ".join(f"{m.direction} {m.first_line}" for m in self.messages()))
        return "\n".join(parts)
