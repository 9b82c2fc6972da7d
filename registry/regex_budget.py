"""A static budget on User-Agent rule regexes, checked before one is compiled (pure: no Django).

The `regex` module expands counted repetition when it compiles: `a{1000}` becomes about a thousand
nodes, and nested counts multiply, so the 15 characters of `(a{1000}){1000}` cost ~260 MB and
`((a{1000}){1000}){1000}` more memory than the machine has. The match timeout cannot help: the
memory is taken by `regex.compile`. So a rule's regex is measured first, with the `regex` module's
own parser (the exact parse `regex.compile` would make, `regex`-only syntax and verbose-mode
counts like `{1 000}` included), and refused when

* it is longer than MAX_PATTERN_CHARS (the model's column size),
* its repetition counts expand it to more than MAX_EXPANDED_ELEMENTS elements (each character,
  class member or other leaf of the parse, times the counts of every repeat around it; `{m,n}`
  counts n, `{m,}` counts m, `*`, `+` and `?` count 1 - unbounded runs are cheap, only explicit
  counts are expanded), or
* it nests deeper than MAX_NESTING levels of the parse (a capturing group or a branch takes two
  levels, `(?:...)` none), or so deep that the parser runs out of Python stack: the `regex`
  module's parser and compiler recurse.

Measured with regex 2026.11.19: an element costs 200-400 bytes once compiled (`a{10000}`: 2.9 MB),
up to ~1.3 KB for `\\X` or full case folding, so a rule within the limit takes at most ~13 MB;
`(a{1000}){1000}` is 1,000,000 elements, 263 MB and 0.35 s.

The parser is `regex`'s private API. It is checked against a probe pattern before it is trusted;
if a `regex` upgrade breaks it, a pattern is instead compiled in a child process limited to
CHILD_MEMORY_BYTES of memory beyond its start-up size and CHILD_CPU_S of CPU, and refused if the
child cannot compile it within those.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
from typing import Any

import regex

__all__ = ["MAX_EXPANDED_ELEMENTS", "MAX_NESTING", "MAX_PATTERN_CHARS", "regex_refusal", "regex_size"]

logger = logging.getLogger("registry.regex_budget")

MAX_PATTERN_CHARS = 1000
MAX_EXPANDED_ELEMENTS = 10_000
MAX_NESTING = 100
CHILD_MEMORY_BYTES = 64 * 1024 * 1024
CHILD_CPU_S = 2
CHILD_TIMEOUT_S = 10.0

# The flags the rules are compiled with (registry.pushobject.compile_rule_regex).
RULE_FLAGS = regex.VERSION0 | regex.ASCII

_PROBE = ("(?x)(?:a{2 }|[bc]{0,3}){5}", 40)  # (2 + 2 * 3) * 5 elements, a verbose-mode count included


class _TooDeep(Exception):
    pass


def regex_refusal(pattern: str, flags: int = RULE_FLAGS) -> str | None:
    """Why `pattern` must not be compiled ("too complex: ..."), or None when it is within budget.

    A pattern that does not parse is not refused here: compiling it reports the syntax error."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"too long: {len(pattern):,} characters (limit {MAX_PATTERN_CHARS:,})"
    if not _parser_usable():
        return _child_refusal(pattern, flags)
    try:
        size = regex_size(pattern, flags)
    except _TooDeep:
        return f"too deeply nested (limit {MAX_NESTING} levels of its parse, about {MAX_NESTING // 2} nested groups)"
    except RecursionError:
        return "too deeply nested"
    except (regex.error, ValueError, OverflowError):
        return None  # not a valid pattern: compiling it says why
    except Exception:  # a corner of the private parser we do not know: let the child compile it
        logger.exception("measuring User-Agent regex %r failed; compiling it in a child process", pattern)
        return _child_refusal(pattern, flags)
    if size > MAX_EXPANDED_ELEMENTS:
        return (
            f"too complex: its repetition counts expand it to {size:,} elements "
            f"(limit {MAX_EXPANDED_ELEMENTS:,}); use * or + for a long run"
        )
    return None


def regex_size(pattern: str, flags: int = RULE_FLAGS) -> int:
    """How many elements compiling `pattern` expands to (see the module docstring)."""
    return _size(_parse(pattern, flags), 0)


def _parse(pattern: str, flags: int) -> Any:
    """`regex`'s parse of `pattern`, as `regex.compile` does it (regex._main._compile)."""
    from regex import _regex_core

    core: Any = _regex_core  # regex's private parser, which types-regex does not describe
    global_flags = flags
    while True:
        source = core.Source(pattern)
        info = core.Info(global_flags, source.char_type, {})
        info.guess_encoding = core.UNICODE
        source.ignore_space = bool(info.flags & core.VERBOSE)
        try:
            return core._parse_pattern(source, info)
        except core._UnscopedFlagSet:  # a global flag found mid-pattern: parse again with it
            global_flags = info.global_flags


def _children(node: Any) -> list[Any]:
    from regex._regex_core import RegexBase  # type: ignore[attr-defined]  # private: not in types-regex

    found = []
    for value in vars(node).values():
        if isinstance(value, RegexBase):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(item for item in value if isinstance(item, RegexBase))
    return found


def _size(node: Any, depth: int) -> int:
    # Generic over the node classes: any node's sub-nodes are summed, and a node with repeat
    # counts (Greedy/Lazy/PossessiveRepeat) multiplies its sub-nodes by them.
    if depth > MAX_NESTING:
        raise _TooDeep
    children = _children(node)
    if not children:
        return max(1, len(getattr(node, "characters", ())))
    inner = sum(_size(child, depth + 1) for child in children)
    if hasattr(node, "min_count") and hasattr(node, "max_count"):
        count = node.max_count if node.max_count is not None else node.min_count
        return max(1, count) * inner
    return inner


@functools.cache
def _parser_usable() -> bool:
    pattern, expected = _PROBE
    try:
        size = regex_size(pattern)
    except Exception:  # any failure of the private API means "do not trust it"
        logger.exception("regex's parser is not usable for the rule regex budget")
        size = None
    if size != expected:
        logger.warning(
            "regex %s: its parser measured the probe %r as %r, not %d; rule regexes are compiled in a "
            "limited child process instead", regex.__version__, pattern, size, expected,
        )
        return False
    return True


_CHILD = """\
import resource, sys
pattern, flags, memory, cpu = sys.stdin.read(), int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
import regex
with open("/proc/self/statm") as statm:
    size = int(statm.read().split()[0]) * resource.getpagesize()
for kind, soft in ((resource.RLIMIT_AS, size + memory), (resource.RLIMIT_CPU, cpu)):
    hard = resource.getrlimit(kind)[1]
    soft = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
    resource.setrlimit(kind, (soft, hard))
try:
    regex.compile(pattern, flags=flags, cache_pattern=False)
except MemoryError:
    sys.exit(3)
except Exception:
    pass
sys.exit(0)
"""


def _child_refusal(pattern: str, flags: int) -> str | None:
    limits = f"{CHILD_MEMORY_BYTES // (1024 * 1024)} MB or {CHILD_CPU_S} s of CPU"
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter, fixed code, the pattern on stdin
            [sys.executable, "-I", "-c", _CHILD, str(int(flags)), str(CHILD_MEMORY_BYTES), str(CHILD_CPU_S)],
            input=pattern, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        return f"too complex: it did not compile within {CHILD_TIMEOUT_S:g} s"
    except OSError as exc:
        return f"not checkable here: no child process to compile it in ({exc})"
    if done.returncode == 0:
        return None
    if done.returncode == 3 or done.returncode < 0:
        return f"too complex: compiling it needs more than {limits}"
    return f"not checkable here: its child process failed (exit status {done.returncode}: {done.stderr.strip()[-200:]})"
