"""/ws/events/: the live feed, for logged-in staff only."""

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from pusher_site.events import GROUP


class EventsConsumer(AsyncJsonWebsocketConsumer):
    """Streams events; the client may narrow the feed by sending
    `{"filter": {"types": [...], "app": "...", "account": "..."}}`."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4403)
            return
        self.filters: dict[str, Any] = {}
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        flt = content.get("filter") if isinstance(content, dict) else None
        if not isinstance(flt, dict):
            await self.send_json({"error": "send {\"filter\": {\"types\": [...], \"app\": ..., \"account\": ...}}"})
            return
        self.filters = {k: flt[k] for k in ("types", "app", "account") if flt.get(k)}
        await self.send_json({"filter": self.filters})

    def _wanted(self, event: dict[str, Any]) -> bool:
        types = self.filters.get("types")
        if types and event.get("type") not in types:
            return False
        if self.filters.get("app") and event.get("app") != self.filters["app"]:
            return False
        if self.filters.get("account") and event.get("account") != self.filters["account"]:
            return False
        return True

    async def pusher_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if self._wanted(event):
            await self.send_json(event)
