"""The Celery app: configured from Django settings (``CELERY_*``), its tasks in ``jobs.worker.tasks``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kdweb.settings")

app = Celery("kdweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["jobs.worker"])  # the task module lives in the worker package, not at jobs.tasks
