"""/ws/events/: the live feed, for logged-in staff only."""

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.events import EVENT_TYPES, GROUP
from core.jsonlimits import MAX_JSON_DEPTH, json_depth_exceeds

log = logging.getLogger(__name__)

# Close code for a refused handshake (before accept daphne answers the upgrade with HTTP 403).
CLOSE_FORBIDDEN = 4403
FILTER_HELP = 'send {"filter": {"types": ["push.sent", ...], "app": "...", "account": "..."}}; empty = everything'
# A filter message is a few hundred characters; nothing a client sends needs more.
MAX_FRAME_CHARS = 64 * 1024


_JSON_TYPE_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
                    type(None): "null"}


def frame_decode(text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
    """The JSON object a client sent in a frame. Raises ValueError, with what is wrong, for a binary
    or empty frame, one over MAX_FRAME_CHARS, one nested too deep, text that is not JSON, or JSON
    that is not an object."""
    if text_data is None:
        raise ValueError("binary frames are not accepted: send JSON text")
    if len(text_data) > MAX_FRAME_CHARS:
        raise ValueError(f"frame too large ({len(text_data)} characters; at most {MAX_FRAME_CHARS})")
    if json_depth_exceeds(text_data, MAX_JSON_DEPTH):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        content = json.loads(text_data)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(content, dict):
        raise ValueError(f"expected a JSON object, not {_JSON_TYPE_NAMES.get(type(content), 'that')}")
    return content


def error_frame(detail: str, **extra: Any) -> dict[str, Any]:
    """What the server answers a message it cannot take. `error` repeats `detail` for clients of
    the first protocol, which read only that."""
    return {"type": "error", "detail": detail, "error": detail, **extra}


def filters_parse(raw: dict[str, Any]) -> dict[str, Any]:
    """The feed filter a client asked for: event types (a list or a comma-separated string),
    an app (Token-App) and an account id, each optional. Raises ValueError on bad input."""
    out: dict[str, Any] = {}
    types = raw.get("types") or []
    if isinstance(types, str):
        types = [t.strip() for t in types.split(",") if t.strip()]
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ValueError("types must be a list of event types")
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"unknown event type(s): {', '.join(unknown)}")
    if types:
        out["types"] = sorted(set(types))
    for key in ("app", "account"):
        value = raw.get(key) or ""
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        if value.strip():
            out[key] = value.strip()
    return out


def event_wanted(event: dict[str, Any], filters: dict[str, Any]) -> bool:
    types = filters.get("types")
    if types and event.get("type") not in types:
        return False
    for key in ("app", "account"):
        if filters.get(key) and event.get(key) != filters[key]:
            return False
    return True


class EventsConsumer(AsyncJsonWebsocketConsumer):
    """Streams events as they happen. The client narrows the feed with `?types=..&app=..&account=..`
    on the URL or, at any time, by sending `{"filter": {...}}` (answered with the filter in force)."""

    filters: dict[str, Any]

    async def connect(self) -> None:
        self.filters = {}
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active or not user.is_staff:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        query = {k: v[-1] for k, v in parse_qs(self.scope.get("query_string", b"").decode("latin-1")).items()}
        try:
            self.filters = filters_parse(query)
        except ValueError:
            self.filters = {}
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """A frame that cannot be decoded is answered with an error frame and the socket stays open
        (channels' own decoding raised, which closed the socket with 1011 and logged a traceback)."""
        try:
            content = frame_decode(text_data, bytes_data)
        except ValueError as exc:
            user = self.scope.get("user")
            log.warning("events socket: bad frame from %s refused: %s", getattr(user, "username", "?"), exc)
            await self.send_json(error_frame(f"{exc}; {FILTER_HELP}"))
            return
        await self.receive_json(content, **kwargs)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        raw = content.get("filter")
        if not isinstance(raw, dict):
            await self.send_json(error_frame(FILTER_HELP))
            return
        try:
            self.filters = filters_parse(raw)
        except ValueError as exc:
            await self.send_json(error_frame(str(exc), filter=self.filters))
            return
        await self.send_json({"filter": self.filters})

    async def pusher_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event_wanted(event, self.filters):
            await self.send_json(event)
