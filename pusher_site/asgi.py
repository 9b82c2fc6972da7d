"""ASGI entry point: HTTP (admin, API) and the /ws/events/ websocket, served by daphne."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pusher_site.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from pusher_site.consumers import EventsConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            # django-stubs' path() takes HTTP views only; channels routes ASGI apps with it as documented.
            AuthMiddlewareStack(URLRouter([path("ws/events/", EventsConsumer.as_asgi())]))  # type: ignore[arg-type,list-item]
        ),
    }
)
