"""``obj|manage_rights:request.user``: what the manage panel (``jobs/partials/manage.html``) offers on an object.

The panel is included with one line on run, study, data set and teacher pages and rows; this filter gives it
what it needs from ``jobs.permissions`` and ``jobs.selectors``, so no view prepares anything for it.
"""

from __future__ import annotations

from typing import Any

from django import template

from jobs.models import DatasetSpec, Run, Study, Teacher
from jobs.pages.manage import MODELS
from jobs.permissions import rights

register = template.Library()

KIND = {model: word for word, model in MODELS.items()}  # the URL word of each model


@register.filter
def manage_rights(obj: Run | Study | Teacher | DatasetSpec, user) -> dict[str, Any]:
    """``kind`` (URL word), ``label``, ``can_write`` (rename), ``is_owner`` (archive, delete), ``used_by`` (runs
    that use a teacher or data set, or a study's runs) and ``live`` (a run queued or running: not deletable)."""
    can_write, is_owner = rights(user, obj.team_id)
    used_by = 0 if isinstance(obj, Run) else obj.runs.count()
    return {
        "kind": KIND[type(obj)],
        "label": obj._meta.verbose_name,
        "can_write": can_write,
        "is_owner": is_owner,
        "used_by": used_by,
        "live": isinstance(obj, Run) and obj.status in (Run.Status.QUEUED, Run.Status.RUNNING),
        "max_length": type(obj)._meta.get_field("name").max_length,
    }
