"""/ws/events/: the live feed, for logged-in staff only."""

from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.events import EVENT_TYPES, GROUP

# Close code for a refused handshake (before accept daphne answers the upgrade with HTTP 403).
CLOSE_FORBIDDEN = 4403
FILTER_HELP = 'send {"filter": {"types": ["push.sent", ...], "app": "...", "account": "..."}}; empty = everything'


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

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        raw = content.get("filter") if isinstance(content, dict) else None
        if not isinstance(raw, dict):
            await self.send_json({"error": FILTER_HELP})
            return
        try:
            self.filters = filters_parse(raw)
        except ValueError as exc:
            await self.send_json({"error": str(exc), "filter": self.filters})
            return
        await self.send_json({"filter": self.filters})

    async def pusher_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event_wanted(event, self.filters):
            await self.send_json(event)
