"""The kdweb Django project: settings, URLs, the ASGI app and the Celery app."""

from kdweb.celery import app as celery_app

__all__ = ["celery_app"]
