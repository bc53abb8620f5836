"""The Celery side: the task that trains a run (tasks), its progress monitor (progress) and database retries (retry).

May import the core (models, services, selectors) and jobs.live.events; nothing of the pages, API or wizard.
"""
