"""The ASGI application served by daphne: Django over HTTP (static files included) and the live websockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kdweb.settings")
django_application = get_asgi_application()  # sets Django up before the imports that touch models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from jobs.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Static files (plotly.js, htmx) come from the finders, so no collectstatic step is needed to start.
        "http": ASGIStaticFilesHandler(django_application),
        # Origin first (a page of another site must not ride on the session cookie), then the session's user.
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
