"""The Celery side: the tasks that train a run, measure a study side by side and preview a run's loss balance
(tasks), the run's progress monitor (progress) and database retries (retry).

May import the core (models, services, selectors) and jobs.live.events; nothing of the pages, API or wizard.
"""
