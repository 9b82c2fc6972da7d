"""Optional sampling profile of the consumer with py-spy (not a requirement: `pip install py-spy`).

`Profiler(pid, path)` records collapsed stacks while its block runs; `summary(path)` folds them
into where the time goes: the functions most often on the CPU (self) and the project
functions most often on the stack (inclusive), per thread group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PROJECT = ("push/", "registry/", "pusher_site/", "kazoo/", "core/")


def py_spy() -> str | None:
    here = os.path.join(os.path.dirname(os.path.abspath(os.sys.executable)), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


class Profiler:
    def __init__(self, pid: int, path: str, *, rate: int = 100, idle: bool = False) -> None:
        self.pid, self.path, self.rate, self.idle = pid, path, rate, idle
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        exe = py_spy()
        if exe is None:
            print("  (py-spy not installed: no profile; `pip install py-spy`)")
            return self
        command = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
                   "--threads", "--output", self.path, "--nonblocking"]
        if self.idle:
            command.append("--idle")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # attached before the work starts
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.replace(os.getcwd() + "/", "")
    return f"{match['func']} ({path})"


def _thread_group(frame: str) -> str:
    """'thread (1234): push_17' -> 'push'; 'thread (99): reg-lane-3_0' -> 'reg-lane'."""
    match = re.match(r"thread \(\w+\):?\s*(?P<name>.*)$", frame)
    name = (match["name"] if match else frame).strip().strip('"')
    for _ in range(2):
        name = re.sub(r"[-_]\d+$", "", name)
    return name or "thread"


def summary(path: str, *, top: int = 12, threads: str | None = None) -> str:
    """Fold a raw profile; `threads` keeps only that thread group (e.g. "push")."""
    if not os.path.exists(path):
        return "  (no profile recorded)"
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    with open(path) as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            # With --threads the first frames name the process and the thread.
            thread_frames = [f for f in frames[:2] if f.startswith(("thread", "process", '"'))]
            code = frames[len(thread_frames):]
            group = _thread_group(thread_frames[-1]) if thread_frames else "thread"
            if threads is not None and group != threads:
                continue
            total += count
            groups[group] += count
            if code:
                self_counts[_short(code[-1])] += count
            seen = set()
            for frame in code:
                short = _short(frame)
                if short.endswith(")") and any(p in short for p in _PROJECT) and short not in seen:
                    seen.add(short)
                    inclusive[short] += count
    if not total:
        return "  (empty profile)"
    scope = f" of {threads} threads" if threads else ""
    by_thread = ", ".join(f"{g} {n * 100 / total:.0f}%" for g, n in groups.most_common(6))
    lines = [f"  {total} samples{scope}; by thread: {by_thread}"]
    lines.append("  on CPU (self):")
    lines += [f"    {n * 100 / total:5.1f}%  {f}" for f, n in self_counts.most_common(top)]
    lines.append("  project functions on the stack (inclusive):")
    lines += [f"    {n * 100 / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)
