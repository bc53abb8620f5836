"""Reads: what a user may list and look at, shaped for the pages."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from jobs.models import DatasetSpec, Evaluation, MetricPoint, Run, Teacher
from jobs.permissions import teams_for_user


def teacher_list(user) -> QuerySet[Teacher]:
    return Teacher.objects.filter(team__in=teams_for_user(user)).select_related("team")


def dataset_list(user) -> QuerySet[DatasetSpec]:
    return DatasetSpec.objects.filter(team__in=teams_for_user(user)).select_related("team")


def run_list(user, *, status: str = "", kind: str = "", teacher: str = "", team: str = "") -> QuerySet[Run]:
    """The user's runs, newest first, with what the list shows; empty filters are ignored."""
    runs = Run.objects.filter(team__in=teams_for_user(user)).select_related("team", "teacher", "dataset")
    filters = {"status": status, "kind": kind, "teacher_id": teacher, "team_id": team}
    runs = runs.filter(**{k: v for k, v in filters.items() if v})
    return runs.prefetch_related(
        Prefetch("evaluations", queryset=Evaluation.objects.order_by("role"), to_attr="final_evaluations")
    )


def run_series(run: Run) -> dict[str, list[list[float]]]:
    """Every stored metric of a run as ``name -> [[step, value], ...]``, in step order."""
    series: dict[str, list[list[float]]] = {}
    for name, step, value in run.points.order_by("name", "step").values_list("name", "step", "value"):
        series.setdefault(name, []).append([step, value])
    return series


def run_points_count(run: Run) -> int:
    return MetricPoint.objects.filter(run=run).count()


def live_queues(timeout: float = 1.0) -> list[str]:
    """Queues that running workers consume (Celery inspect); empty when no worker answers in time."""
    from kdweb.celery import app

    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except OSError:  # the broker is down: no worker can be reached either
        return []
    return sorted({q["name"] for queues in replies.values() for q in queues})
