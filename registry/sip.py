"""SIP Contact header parsing and Kazoo routing-key encoding (pure: no ORM, no network).

Kazoo's pusher parsed the reg_success ``Contact`` with nklib and crashed on anything but a single
name-addr. Here the whole header value is parsed (RFC 3261 §20.10 / §25.1, leniently where real
clients are sloppy) and any failure is one ``ContactParseError`` the consumer can dead-letter.

Liberal in what it accepts: one malformed *parameter* (a name that is not a token, an unbalanced
or trailing-text quoted value, a value in bare angle brackets) does not sink the Contact. It is
left out of the parameters and listed in ``Contact.skipped`` with the problem, and the caller
decides whether it needed it (registry.pushobject refuses the Contact then). A URI that does not
parse (scheme, user, host, port), or a header whose elements cannot be told apart, still raises.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from core.errors import ContactParseError

__all__ = ["Contact", "amqp_encode", "parse_contacts", "percent_decode"]

# A REGISTER Contact is a few hundred bytes even with RFC 8599 params and Linphone's feature
# tags; anything near this is hostile or broken, and bounding it bounds the parser's work.
MAX_CONTACT_BYTES = 8 * 1024

Params = tuple[tuple[str, str | None], ...]
# (parameter name as written, lower-cased when it is a token; what is wrong with it)
Skipped = tuple[tuple[str, str], ...]
# A skipped parameter is named in logs and reasons: a hostile one must not fill them.
_SKIPPED_NAME_MAX = 40

# RFC 3261 `token`; parameter names (including feature tags like `+sip.instance` and Cisco's
# `+u.sip!devicename.ccm.cisco.com`) must be tokens, which is what tells a parameter from junk.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_.])?")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9_.\-]+)?\]")
_PCT_RUN_RE = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
# Header folding (RFC 3261 §7.3.1): CRLF or bare LF followed by whitespace is one space.
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_WS = " \t"


@dataclass(frozen=True)
class Contact:
    """One Contact header element; ``uri`` keeps the text as written, the rest is decoded."""

    display_name: str | None
    uri: str
    scheme: str
    user: str | None
    host: str
    port: int | None
    uri_params: Params
    header_params: Params
    is_star: bool = False
    skipped: Skipped = ()

    def param(self, name: str) -> str | None:
        """Value of parameter ``name``: URI params first, then header params, like Kazoo's lookup.

        Names compare case-insensitively (RFC 3261 §19.1.4), first occurrence wins; a flag (no
        ``=``) returns None because Kazoo can't use a flag as a value source either.
        """
        wanted = name.lower()
        for key, value in self.uri_params + self.header_params:
            if key == wanted:
                return value
        return None

    def skipped_problem(self, name: str) -> str | None:
        """Why a parameter called ``name`` was left out as malformed, or None if none was."""
        wanted = name.lower()
        for key, problem in self.skipped:
            if key == wanted:
                return problem
        return None

    def params(self) -> dict[str, str]:
        """All valued params merged the way ``param`` resolves them (URI params win)."""
        merged: dict[str, str] = {}
        seen: set[str] = set()
        for key, value in self.uri_params + self.header_params:
            if key in seen:
                continue
            seen.add(key)
            if value is not None:
                merged[key] = value
        return merged


STAR = Contact(
    display_name=None,
    uri="*",
    scheme="",
    user=None,
    host="",
    port=None,
    uri_params=(),
    header_params=(),
    is_star=True,
)


def parse_contacts(value: str) -> list[Contact]:
    """Parse a full Contact header value into its elements, or raise ``ContactParseError``."""
    if not isinstance(value, str):
        raise ContactParseError(f"Contact must be a string, got {type(value).__name__}")
    if len(value) > MAX_CONTACT_BYTES or len(value.encode("utf-8", "surrogatepass")) > MAX_CONTACT_BYTES:
        raise ContactParseError(f"Contact longer than {MAX_CONTACT_BYTES} bytes")
    text = _FOLD_RE.sub(" ", value).strip(" \t\r\n")
    _reject_control_chars(text)
    if not text:
        raise ContactParseError("empty Contact")
    if text == "*":
        return [STAR]

    contacts: list[Contact] = []
    pos = 0
    while pos < len(text):
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            # RFC 7230-style empty list elements ("a, , b") carry nothing; tolerate them.
            pos += 1
            continue
        if pos >= len(text):
            break
        if text[pos] == "*":
            raise ContactParseError("'*' Contact must be alone in the header")
        contact, pos = _parse_element(text, pos)
        contacts.append(contact)
        pos = _skip_ws(text, pos)
        if pos < len(text):
            if text[pos] != ",":
                raise ContactParseError(f"unexpected {text[pos]!r} at offset {pos}")
            pos += 1
    if not contacts:
        raise ContactParseError("empty Contact")
    return contacts


def amqp_encode(s: str) -> str:
    """Encode one routing-key word like Kazoo's ``kz_amqp_util:encode`` / Kamailio's ``kz.encode``.

    ``.`` separates topic words, so it must be escaped; the lone wildcards ``*`` and ``#`` pass
    through so callers can build binding patterns with the same function.
    """
    if s in ("*", "#"):
        return s
    out: list[str] = []
    for byte in s.encode("utf-8"):
        char = chr(byte)
        if char.isascii() and (char.isalnum() or char in "-~_"):
            out.append(char)
        elif char == " ":
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


# Cc: C0/C1 controls and DEL (a bare CR/LF left after unfolding is header injection), tab excepted;
# Cs: lone surrogates, which JSON can carry but nothing downstream can store or encode.
# (One regex scan: the per-character loop was a fifth of a reg_success's handling time.)
_FORBIDDEN_CHAR = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def _reject_control_chars(text: str) -> None:
    found = _FORBIDDEN_CHAR.search(text)
    if found is not None:
        raise ContactParseError(f"non-printable character U+{ord(found.group()):04X} at offset {found.start()}")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_ESCAPED = re.compile(r"\\(.)", re.S)


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``text[pos] == '"'``; return (unescaped, index after)."""
    found = _QUOTED.match(text, pos)
    if found is None:
        raise ContactParseError(f"unbalanced quote starting at offset {pos}")
    return _ESCAPED.sub(r"\1", found.group(1)), found.end()


@functools.lru_cache(maxsize=32)
def _stops_pattern(stops: str) -> re.Pattern[str]:
    return re.compile('["' + re.escape(stops) + "]")


def _scan_until(text: str, pos: int, stops: str) -> int:
    """Index of the first char in ``stops`` outside quoted strings (``len(text)`` if none).

    A quote that is never closed is taken as a plain character: it can only belong to a malformed
    parameter value, which the parameter parser then skips, instead of swallowing the rest of
    the header (and the push parameters in it)."""
    pattern = _stops_pattern(stops)
    i = pos
    while True:
        found = pattern.search(text, i)
        if found is None:
            return len(text)
        if found.group() != '"':
            return found.start()
        closed = _QUOTED.match(text, found.start())
        i = closed.end() if closed is not None else found.start() + 1


def _parse_element(text: str, pos: int) -> tuple[Contact, int]:
    start = pos
    display_name: str | None = None
    if text[pos] == '"':
        display_name, pos = _read_quoted(text, pos)
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != "<":
            raise ContactParseError("quoted display name not followed by '<'")
    else:
        # A display name is plain tokens, so hitting ';' or ',' (or the end) before any '<'
        # means this element is a bare addr-spec.
        stop = start
        while stop < len(text) and text[stop] not in '<";,':
            stop += 1
        if stop < len(text) and text[stop] == '"':
            raise ContactParseError(f"unexpected quote at offset {stop}")
        if stop < len(text) and text[stop] == "<":
            name = " ".join(text[start:stop].split())
            display_name = name or None
            pos = stop
        else:
            return _parse_addr_spec(text, start)

    # name-addr: pos is at '<'; '>' may legitimately appear inside a quoted URI param value.
    close = _scan_until(text, pos + 1, "<>")
    if close >= len(text) or text[close] != ">":
        raise ContactParseError(f"unbalanced '<' at offset {pos}")
    uri = text[pos + 1 : close].strip(_WS)
    scheme, user, host, port, uri_params, uri_skipped = _parse_uri(uri)
    header_params, header_skipped, end = _parse_header_params(text, close + 1)
    contact = Contact(
        display_name=display_name,
        uri=uri,
        scheme=scheme,
        user=user,
        host=host,
        port=port,
        uri_params=uri_params,
        header_params=header_params,
        skipped=uri_skipped + header_skipped,
    )
    return contact, end


def _parse_addr_spec(text: str, pos: int) -> tuple[Contact, int]:
    # RFC 3261 §20.10 says the ';' params after a bare addr-spec are *header* params. Kazoo's nklib
    # parser files them as URI params instead, and Kazoo users' UA rules rely on that lookup, so
    # they stay URI params here (``param()`` searches both anyway; only ``uri_params`` differs).
    end = _scan_until(text, pos, ",")
    uri = text[pos:end].strip(_WS)
    scheme, user, host, port, uri_params, skipped = _parse_uri(uri)
    contact = Contact(
        display_name=None,
        uri=uri,
        scheme=scheme,
        user=user,
        host=host,
        port=port,
        uri_params=uri_params,
        header_params=(),
        skipped=skipped,
    )
    return contact, end


# `name = <` at the end of a parameter's text so far: a value written in bare angle brackets
# (e.g. `+sip.instance=<urn:uuid:...>` without the quotes RFC 5626 asks for).
_ANGLE_VALUE_RE = re.compile(r"[^=<>]*=[ \t]*\Z")


def _parse_header_params(text: str, pos: int) -> tuple[Params, Skipped, int]:
    params: list[tuple[str, str | None]] = []
    skipped: list[tuple[str, str]] = []
    pos = _skip_ws(text, pos)
    while pos < len(text) and text[pos] == ";":
        end = _scan_until(text, pos + 1, ";,<>")
        if end < len(text) and text[end] == "<" and _ANGLE_VALUE_RE.match(text, pos + 1, end):
            close = text.find(">", end)
            if close == -1:
                raise ContactParseError(f"unbalanced '<' in Contact parameters at offset {end}")
            name = text[pos + 1 : end].partition("=")[0]
            skipped.append((_skipped_name(name), "value in angle brackets without quotes"))
            pos = _scan_until(text, close + 1, ";,<>")
            if pos < len(text) and text[pos] in "<>":
                raise ContactParseError(f"unexpected {text[pos]!r} in Contact parameters at offset {pos}")
            continue
        if end < len(text) and text[end] == "," and _has_unclosed_quote(text, pos + 1, end):
            # A quoted value cut short (a truncated `+org.linphone.specs="a,b`): its commas are
            # the value's, not Contact separators; it runs to the next parameter.
            end = _first_of_from(text, end, ";<>")
        if end < len(text) and text[end] in "<>":
            # Not a parameter slip: a missing ',' between two Contacts, or worse.
            raise ContactParseError(f"unexpected {text[end]!r} in Contact parameters at offset {end}")
        _param_add(text[pos + 1 : end], params, skipped)
        pos = end
    return tuple(params), tuple(skipped), pos


def _has_unclosed_quote(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` (a stretch _scan_until went through) holds a quote it took as a
    plain character; a closed quoted string there is skipped whole, as _scan_until does."""
    i = start
    while True:
        quote = text.find('"', i, end)
        if quote == -1:
            return False
        closed = _QUOTED.match(text, quote, end)
        if closed is None:
            return True
        i = closed.end()


def _first_of_from(text: str, pos: int, chars: str) -> int:
    return pos + _first_of(text[pos:], chars)


class _MalformedParam(Exception):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(problem)
        self.name = name
        self.problem = problem


def _skipped_name(name: str) -> str:
    name = name.strip(_WS)
    if _TOKEN_RE.fullmatch(name):
        return name.lower()
    return name if len(name) <= _SKIPPED_NAME_MAX else name[:_SKIPPED_NAME_MAX] + "..."


def _param_add(raw: str, params: list[tuple[str, str | None]], skipped: list[tuple[str, str]]) -> None:
    """Parse one parameter into ``params``, or note it in ``skipped`` if it is malformed."""
    try:
        param = _parse_param(raw)
    except _MalformedParam as exc:
        skipped.append((_skipped_name(exc.name), exc.problem))
        return
    if param is not None:
        params.append(param)


def _parse_param(raw: str) -> tuple[str, str | None] | None:
    raw = raw.strip(_WS)
    if not raw:
        # A stray ';' (e.g. "<sip:a@b;>") is a common client slip, not a reason to drop the REGISTER.
        return None
    name, sep, value = raw.partition("=")
    name = name.strip(_WS)
    if not _TOKEN_RE.fullmatch(name):
        raise _MalformedParam(name, "invalid parameter name")
    if not sep:
        return name.lower(), None
    value = value.strip(_WS)
    if value.startswith('"'):
        found = _QUOTED.match(value)
        if found is None:
            raise _MalformedParam(name, "unbalanced quote in value")
        if value[found.end() :].strip(_WS):
            raise _MalformedParam(name, "text after quoted value")
        value = _ESCAPED.sub(r"\1", found.group(1))
    return name.lower(), percent_decode(value)


def _split_params(text: str) -> list[str]:
    pieces: list[str] = []
    pos = 0
    while True:
        end = _scan_until(text, pos, ";")
        pieces.append(text[pos:end])
        if end >= len(text):
            return pieces
        pos = end + 1


def _parse_uri(uri: str) -> tuple[str, str | None, str, int | None, Params, Skipped]:
    """Split a URI into (scheme, user, host, port, params, skipped params); ``?headers`` are parsed
    past and dropped."""
    if not uri:
        raise ContactParseError("empty URI in Contact")
    match = _SCHEME_RE.match(uri)
    if match is None:
        raise ContactParseError(f"URI {uri!r} has no scheme")
    scheme = match.group(1).lower()
    rest = uri[match.end() :]

    user: str | None = None
    if scheme in ("sip", "sips"):
        # '@' is legal neither in params nor headers (RFC 3261 §25.1), so the first one ends the
        # userinfo; one after a quote belongs to one of our leniently accepted quoted values.
        at = rest.find("@")
        quote = rest.find('"')
        if at != -1 and (quote == -1 or at < quote):
            userinfo, rest = rest[:at], rest[at + 1 :]
            # The password (deprecated, RFC 3261 §22.1) is dropped: it must never reach logs or the DB.
            raw_user = userinfo.partition(":")[0]
            if any(c in _WS for c in raw_user):
                raise ContactParseError(f"whitespace in user part of URI {uri!r}")
            user = percent_decode(raw_user)
        host_end = _first_of(rest, ";?")
        host, port = _parse_hostport(rest[:host_end], uri)
        rest = rest[host_end:]
    elif scheme == "tel":
        number_end = _first_of(rest, ";?")
        user, host, port = percent_decode(rest[:number_end].strip(_WS)) or None, "", None
        if user is None:
            raise ContactParseError(f"tel URI {uri!r} has no number")
        rest = rest[number_end:]
    else:
        # Other schemes (urn:, http:...) have no SIP hostport; keep only their ';' params.
        host, port = "", None
        rest = rest[_first_of(rest, ";?") :]

    headers_at = _scan_until(rest, 0, "?")
    param_text = rest[:headers_at]
    # Anything after '?' is URI headers (e.g. "?Subject=x"): meaningless for push, ignored.
    params: list[tuple[str, str | None]] = []
    skipped: list[tuple[str, str]] = []
    if param_text:
        if not param_text.startswith(";"):
            raise ContactParseError(f"unexpected text {param_text[:20]!r} in URI {uri!r}")
        for piece in _split_params(param_text[1:]):
            _param_add(piece, params, skipped)
    return scheme, user, host, port, tuple(params), tuple(skipped)


def _first_of(text: str, chars: str) -> int:
    positions = [i for i in (text.find(c) for c in chars) if i != -1]
    return min(positions) if positions else len(text)


def _parse_hostport(hostport: str, uri: str) -> tuple[str, int | None]:
    if not hostport:
        raise ContactParseError(f"URI {uri!r} has no host")
    if hostport.startswith("["):
        close = hostport.find("]")
        host, port_text = hostport[: close + 1], hostport[close + 1 :]
        if close == -1 or not _IPV6_RE.fullmatch(host):
            raise ContactParseError(f"invalid IPv6 host in URI {uri!r}")
    else:
        host, colon, port_text = hostport.partition(":")
        port_text = colon + port_text
        if not host:
            raise ContactParseError(f"URI {uri!r} has no host")
        if not _HOSTNAME_RE.fullmatch(host):
            raise ContactParseError(f"invalid host {host!r} in URI {uri!r}")
    if not port_text:
        return host, None
    digits = port_text[1:]
    if not port_text.startswith(":") or not digits.isascii() or not digits.isdigit() or int(digits) > 65535:
        raise ContactParseError(f"invalid port {port_text!r} in URI {uri!r}")
    return host, int(digits)


def percent_decode(value: str) -> str:
    """Decode ``%XX`` escapes as UTF-8; never ``+`` -> space (SIP is not form encoding).

    Kazoo 4.3 crashed on a malformed ``%`` and turned ``+`` into a space (breaking ``+``-prefixed
    numbers and base64-ish tokens); here a malformed or undecodable run is kept verbatim. A run
    that decodes to control characters is also kept verbatim: decoded values end up in
    ``X-KAZOO-PUSHER-*`` SIP headers, and a decoded CR/LF would be header injection.
    """
    if "%" not in value:
        return value

    def _decode_run(match: re.Match[str]) -> str:
        run = match.group(0)
        try:
            decoded = bytes.fromhex(run.replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            return run
        if any(unicodedata.category(c) == "Cc" for c in decoded):
            return run
        return decoded

    return _PCT_RUN_RE.sub(_decode_run, value)
