"""The endpoints of the manage panel (``jobs/partials/manage.html``): rename, archive, unarchive and delete a
run, study, teacher or data set. One view: the object through ``jobs.permissions`` (other teams 404), the change
through ``jobs.services`` (viewers 403 on a rename, non-owners 403 on archive and delete), the outcome as a
message, then back to the object's page (or, once deleted, its list).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from jobs import services
from jobs.models import DatasetSpec, Run, Study, Teacher
from jobs.permissions import get_for_user

MODELS: dict[str, type[Run | Study | Teacher | DatasetSpec]] = {
    "run": Run,
    "study": Study,
    "teacher": Teacher,
    "dataset": DatasetSpec,
}
LISTS = {"run": "runs", "study": "studies", "teacher": "teachers", "dataset": "datasets"}
ACTIONS = ("rename", "archive", "unarchive", "delete")


PAGES = {"run": "run_detail", "study": "study_detail", "teacher": "teacher_detail", "dataset": "dataset_detail"}


def _page_of(kind: str, obj: Run | Study | Teacher | DatasetSpec) -> str:
    """The object's own page."""
    return reverse(PAGES[kind], args=[obj.pk])


def _back(request: HttpRequest, fallback: str) -> HttpResponse:
    """To the page the panel was on (``next``, a path of this site), else to ``fallback``."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect(fallback)


@login_required
@require_POST
def manage(request: HttpRequest, kind: str, pk: int, action: str) -> HttpResponse:
    if kind not in MODELS or action not in ACTIONS:
        raise Http404("Runs, studies, teachers and data sets can be renamed, archived or deleted.")
    obj, _ = get_for_user(MODELS[kind], request.user, pk)
    label = obj._meta.verbose_name
    try:
        if action == "rename":
            old = obj.name
            services.object_rename(user=request.user, obj=obj, name=request.POST.get("name", ""))
            messages.success(request, f"Renamed {label} {old} to {obj.name}.")
        elif action in ("archive", "unarchive"):
            services.object_archive(user=request.user, obj=obj, archived=action == "archive")
            done = "archived: it leaves the lists and stays readable here" if obj.archived else "back in the lists"
            messages.success(request, f"{obj.name} is {done}.")
        else:
            outcome = services.object_delete(user=request.user, obj=obj, with_runs=request.POST.get("with_runs") == "1")
            if outcome.deleted:
                messages.success(request, outcome.message)
                return redirect(LISTS[kind])
            messages.warning(request, outcome.message)
    except ValidationError as exc:
        field = "Name: " if hasattr(exc, "error_dict") and "name" in exc.error_dict else ""
        messages.error(request, field + " ".join(exc.messages))
    except services.Conflict as exc:
        messages.error(request, str(exc))
    return _back(request, _page_of(kind, obj))
