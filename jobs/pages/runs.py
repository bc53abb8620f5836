"""Pages: runs list and detail, artifact downloads, teachers, data sets.

Views stay thin: parse the input, ask ``jobs.permissions`` what the user may see or change, call one
selector or service, render. Objects of other teams answer 404 (``get_for_user``); viewers get 403
on writes. The new-run wizard lives in ``jobs.wizard``.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs import scorecard, selectors, services
from jobs.configs import config_rows
from jobs.models import Artifact, DatasetSpec, Run, Teacher
from jobs.pages.forms import DatasetCreateForm, RunFilterForm, TeacherRegisterForm, add_service_errors
from jobs.pages.teams import share_panel
from jobs.permissions import READ_ONLY, get_for_user, teams_for_user

LIVE = (Run.Status.QUEUED, Run.Status.RUNNING)
SPLIT_ORDER = ("train", "validation", "test")


# --- small display helpers ---------------------------------------------------------------------------


def eta_text(seconds: float | None) -> str:
    """``3 h 05 min``, ``4 min 10 s``, ``12 s``; empty when unknown."""
    if seconds is None or seconds < 0:
        return ""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


# --- runs -----------------------------------------------------------------------------------------------


@login_required
@require_GET
def runs(request: HttpRequest) -> HttpResponse:
    teams = teams_for_user(request.user)
    form = RunFilterForm(request.GET or None, teachers=selectors.teacher_list(request.user, archived=True), teams=teams)
    filters = form.filters()
    run_list = list(selectors.run_list(request.user, **filters))
    for run in run_list:
        run.final_score = scorecard.final_score(run, run.final_evaluations)
        run.final_metric = scorecard.primary_metric(scorecard.run_task(run.config))
        run.eta_text = eta_text(run.eta_s) if run.status == Run.Status.RUNNING else ""
    context = {
        "runs": run_list,
        "form": form,
        "filtered": bool(filters),
        "can_launch": teams_for_user(request.user, write=True).exists(),
        "in_a_team": teams_for_user(request.user).exists(),
    }
    return render(request, "jobs/runs.html", context)


RUN_ACTIONS = {
    "cancel": (
        services.run_cancel,
        "Cancel requested: the run stops at its next step (in its finish, at the next batch), keeping its checkpoint.",
    ),
    "resume": (services.run_resume, "Resumed: the run continues from its last checkpoint when a worker is free."),
}


@login_required
@require_POST
def run_action(request: HttpRequest, run_id: int, action: str) -> HttpResponse:
    """Cancel or resume (owner and member roles); refusals come back as a message on the run page."""
    service, done = RUN_ACTIONS[action]
    run, _can_write = get_for_user(Run, request.user, run_id)
    try:
        service(user=request.user, run=run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, done)
    return redirect("run_detail", run_id=run.pk)


def run_page(request: HttpRequest, run: Run, template: str, config: dict, **extra: Any) -> HttpResponse:
    """The run page (or, with ``?partial=status``, its status block, which htmx polls while the live socket
    is down; once the run has stopped it reloads the whole page for its results and curves). The team's page
    and the public one differ only in ``template``, the config shown and ``extra``."""
    run.eta_text = eta_text(run.eta_s) if run.status == Run.Status.RUNNING else ""
    status_context = {"run": run, "live": run.status in LIVE, "can_write": False, **extra}
    if request.GET.get("partial") == "status":
        response = render(request, "jobs/partials/run_status.html", status_context)
        if run.status not in LIVE:
            response["HX-Refresh"] = "true"
        return response
    results = scorecard.evaluation_table(list(run.evaluations.order_by("split", "-role")))
    backfill = selectors.run_backfill(run)  # what the websocket would send first: live.js asks for what follows
    context = {
        **status_context,
        "config_rows": config_rows(config),
        "evaluations": results["rows"],
        "comparisons": results["comparisons"],
        "metric_columns": results["metrics"],
        "primary_label": results["primary_label"],
        "series": backfill["series"],
        "last_step": backfill["last_step"],
        "log_tail": backfill["log"],
        **extra,  # last: the public page replaces the log tail
    }
    return render(request, template, context)


@login_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run, can_write = get_for_user(
        Run.objects.select_related("team", "teacher", "dataset", "study"), request.user, run_id
    )
    return run_page(
        request,
        run,
        "jobs/run_detail.html",
        run.config,
        can_write=can_write,
        artifacts=run.artifacts.order_by("kind", "created_at"),
        registered=selectors.registered_teacher(run),
        **share_panel(run, can_write),
    )


@login_required
@require_GET
def artifact_download(request: HttpRequest, run_id: int, artifact_id: int) -> FileResponse:
    run, _ = get_for_user(Run, request.user, run_id)
    artifact = get_object_or_404(run.artifacts, pk=artifact_id)
    return FileResponse(open_artifact(artifact), as_attachment=True, filename=PurePosixPath(artifact.path).name)


def open_artifact(artifact: Artifact) -> File:
    """The artifact's stored file, open for reading; 404 when storage no longer has it."""
    try:
        return default_storage.open(artifact.path, "rb")
    except FileNotFoundError:
        raise Http404("The artifact's file is no longer in storage.") from None


# --- teachers and data sets -------------------------------------------------------------------------


def _writable_teams_for_post(request: HttpRequest):
    """Teams the user may add to; a POST from someone who may write to none is refused (403)."""
    writable = teams_for_user(request.user, write=True)
    if request.method == "POST" and not writable.exists():
        raise PermissionDenied(READ_ONLY)
    return writable


@login_required
@require_http_methods(["GET", "POST"])
def teachers(request: HttpRequest) -> HttpResponse:
    writable = _writable_teams_for_post(request)
    form = TeacherRegisterForm(request.POST or None, teams=writable)
    if request.method == "POST" and form.is_valid():
        try:
            teacher = services.teacher_register(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Registered teacher {teacher.name}.")
            return redirect("teachers")
    archived = bool(request.GET.get("archived"))
    context = {
        "teachers": selectors.teacher_list(request.user, archived=archived).select_related("from_run"),
        "archived": archived,
        "form": form,
        "can_write": writable.exists(),
    }
    return render(request, "jobs/teachers.html", context)


def teacher_origin(teacher: Teacher) -> str:
    """Where a teacher came from, in words: fine-tuned by a run, a Python package, a model folder or a hub id."""
    if teacher.from_run_id:
        return "fine-tuned by a run of this workbench"
    if teacher.source.startswith("package:"):
        return "a Python package"
    if services.local_path(teacher.source, hub_ids=True) is None:
        return "a model hub id"
    return "a model folder on the server"


@login_required
@require_GET
def teacher_detail(request: HttpRequest, teacher_id: int) -> HttpResponse:
    """A teacher: its architecture, where it came from, the runs that used it, and "distil this"."""
    teacher, can_write = get_for_user(
        Teacher.objects.select_related("team", "from_run__teacher", "created_by"), request.user, teacher_id
    )
    context = {
        "teacher": teacher,
        "origin": teacher_origin(teacher),
        "runs": selectors.run_list(request.user, archived=True).filter(teacher=teacher)[:50],
        "can_write": can_write,
    }
    return render(request, "jobs/teacher_detail.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def datasets(request: HttpRequest) -> HttpResponse:
    writable = _writable_teams_for_post(request)
    form = DatasetCreateForm(request.POST or None, request.FILES or None, teams=writable)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = services.dataset_create(user=request.user, **form.service_kwargs())
        except ValidationError as exc:
            add_service_errors(form, exc, aliases=form.error_aliases())
        else:
            messages.success(request, f"Added data set {dataset.name}.")
            return redirect("dataset_detail", dataset_id=dataset.pk)
    archived = bool(request.GET.get("archived"))
    context = {
        "datasets": selectors.dataset_list(request.user, archived=archived),
        "archived": archived,
        "form": form,
        "can_write": writable.exists(),
    }
    return render(request, "jobs/datasets.html", context)


@login_required
@require_GET
def dataset_detail(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset, _ = get_for_user(DatasetSpec.objects.select_related("team"), request.user, dataset_id)
    columns = list(dict.fromkeys(key for row in dataset.preview for key in row))
    rows = [[row.get(c, "") for c in columns] for row in dataset.preview]
    splits = sorted(dataset.sizes, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 3, s))
    sizes = [(split, dataset.sizes[split]) for split in splits]
    runs = selectors.run_list(request.user, archived=True).filter(dataset=dataset)[:20]
    context = {"dataset": dataset, "sizes": sizes, "columns": columns, "rows": rows, "runs": runs}
    return render(request, "jobs/dataset_detail.html", context)
