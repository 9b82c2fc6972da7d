"""Reading a file named on a command line (not a command: Django skips modules starting with "_").

Every command that takes a file reads it here: at most `limit` bytes are ever read, so /dev/zero
or a huge file is refused at once instead of filling memory, and only regular files are opened,
because opening a FIFO blocks until a writer comes and a device never ends."""

from __future__ import annotations

import os
import stat
import sys

from django.core.management.base import CommandError

from core.text import path_shown


def path_problem(path: str) -> str | None:
    """Why `path` is no regular file we can open ("no such file", "is a directory", ...), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return "no such file" if isinstance(exc, FileNotFoundError) else (exc.strerror or type(exc).__name__)
    except ValueError:  # a NUL in the path
        return "not a usable path"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode):
        return "not a regular file (a device, a pipe or a socket)"
    return None


def file_read(path: str, *, limit: int) -> bytes:
    """The bytes of the regular file `path` ('-' = stdin), at most `limit` of them; CommandError
    naming the path (unless it looks like a secret given in its place, never echoed) otherwise."""
    shown = "stdin" if path == "-" else path_shown(path)
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        problem = path_problem(path)
        if problem:
            raise CommandError(f"cannot read {shown}: {problem}")
        try:
            # O_NONBLOCK: a FIFO swapped in since the stat opens at once (and is refused below)
            # instead of blocking; it changes nothing for a regular file.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with open(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise CommandError(f"cannot read {shown}: not a regular file")
                data = handle.read(limit + 1)
        except OSError as exc:
            raise CommandError(f"cannot read {shown}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:
        raise CommandError(f"cannot read {shown}: too large (the limit is {limit:,} bytes)")
    return data
