"""ASGI entry point: HTTP goes to Django, websockets through authentication to the
chat consumer (contract section 1)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.signals import request_finished  # noqa: E402

from chat.auth import WebsocketAuthMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chat.tasks import BindServerLoop  # noqa: E402
from config.runtime import close_request_connections  # noqa: E402

# Each HTTP request's thread ends with it: so do its database connections.
request_finished.connect(close_request_connections, dispatch_uid="parley-close-request-db")

# BindServerLoop: services started from threads (REST views, database_sync_to_async)
# hand background work such as character replies to this loop (chat/tasks.py).
application = BindServerLoop(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
        }
    )
)
