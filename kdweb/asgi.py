"""The ASGI application served by daphne: Django over HTTP, static files included."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kdweb.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

# Static files (plotly.js, htmx) come from the finders, so no collectstatic step is needed to start.
application = ASGIStaticFilesHandler(get_asgi_application())
