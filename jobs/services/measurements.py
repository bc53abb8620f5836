"""Side-by-side measurements: asking for one (a user's button, or a study whose runs have all finished), and the
worker's side of it (claim, the models to load, success, failure).

One measurement loads the teacher and every student of the runs it covers on one worker and times them
alternately (``distill.side_by_side``); the scorecard's × faster comes from it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from jobs.models import Artifact, Measurement, Run, Study
from jobs.permissions import require_write
from kdweb.celery import app

log = logging.getLogger(__name__)

MEASURE_SIDE_BY_SIDE = "jobs.measure_side_by_side"  # the Celery task (jobs.worker.tasks)
NOTHING_TO_MEASURE = "No succeeded student run with an exported model to measure."
TEACHERS_DIFFER = "These runs have different teachers: a side-by-side measurement compares students of one teacher."


def measured_runs(runs: Iterable[Run]) -> list[Run]:
    """The runs a measurement times next to their teacher: succeeded students that exported a model."""
    return [
        run
        for run in runs
        if run.status == Run.Status.SUCCEEDED
        and run.kind != Run.Kind.TEACHER_FINETUNE
        and any(a.kind == Artifact.Kind.STUDENT for a in run.artifacts.all())
    ]


def _send(measurement: Measurement) -> None:
    """On commit: send the task; a broker that does not answer fails the measurement (ask again later)."""
    try:
        app.send_task(MEASURE_SIDE_BY_SIDE, (measurement.pk,), queue=measurement.queue)
    except BrokerError as exc:
        log.warning("measurement %s not sent: %s", measurement.pk, exc)
        measurement_fail(measurement.pk, f"the broker does not answer ({exc}); measure again when it does")


@transaction.atomic
def measurement_request(*, user, runs: Iterable[Run], study: Study | None = None) -> Measurement:
    """Queue a side-by-side measurement of ``runs`` (their succeeded students and their one teacher), on the
    queue of the runs' workers; ``user`` None is kdweb itself (a study whose runs have all finished). A
    measurement of the same study, or of the same runs, that is still queued or running is returned instead
    (one whose worker stopped answering is marked failed, and a new one queued)."""
    students = measured_runs(runs)
    if not students:
        raise ValidationError(NOTHING_TO_MEASURE)
    if len({run.teacher_id for run in students}) > 1:
        raise ValidationError(TEACHERS_DIFFER)
    team = students[0].team
    if user is not None:
        require_write(user, team)
    ids = {run.pk for run in students}
    for pending in Measurement.objects.filter(team=team, study=study, status__in=Measurement.PENDING):
        if study is None and set(pending.runs.values_list("pk", flat=True)) != ids:
            continue
        if pending.is_pending:
            return pending
        measurement_fail(pending.pk, "its worker stopped answering while it measured; measured again")
    measurement = Measurement.objects.create(team=team, study=study, queue=students[-1].queue, created_by=user)
    measurement.runs.set(students)
    transaction.on_commit(lambda: _send(measurement))
    return measurement


def study_measure_when_done(run: Run) -> Measurement | None:
    """Called in the transaction that records a run's success or failure: when it was the last of its study's
    runs to finish and a student succeeded, queue the study's side-by-side measurement. The study's row is
    locked first, so of two runs that finish at once exactly the second sees both finished."""
    if run.study_id is None:
        return None
    study = Study.objects.select_for_update().get(pk=run.study_id)
    runs = list(study.runs.prefetch_related("artifacts"))
    if any(not r.is_finished for r in runs) or not measured_runs(runs):
        return None
    return measurement_request(user=None, runs=runs, study=study)


# --- the worker's side ----------------------------------------------------------------------------------


def measurement_claim(measurement_id: int, *, host: str) -> Measurement | None:
    """Move a queued measurement to running on ``host``; None if it is not queued (a redelivered message)."""
    claimed = Measurement.objects.filter(pk=measurement_id, status=Measurement.Status.QUEUED).update(
        status=Measurement.Status.RUNNING, host=host, started_at=timezone.now()
    )
    return Measurement.objects.get(pk=measurement_id) if claimed else None


def measurement_models(measurement: Measurement) -> tuple[str, list[tuple[Run, Artifact]]]:
    """What to load: the teacher's source (from the runs' configs: the engine's own path) and each run with its
    exported model (a zip in the default storage)."""
    runs = list(measurement.runs.order_by("pk").prefetch_related("artifacts"))
    exports = [(run, next(a for a in run.artifacts.all() if a.kind == Artifact.Kind.STUDENT)) for run in runs]
    return runs[0].config["teacher"]["source"], exports


def measurement_succeed(measurement_id: int, result: dict[str, Any]) -> None:
    """Store the measurement (``SideBySide.as_dict()``, each model with its ``run`` id, None for the teacher)."""
    Measurement.objects.filter(pk=measurement_id).update(
        status=Measurement.Status.SUCCEEDED, result=result, error="", finished_at=timezone.now()
    )


def measurement_fail(measurement_id: int, error: str) -> None:
    Measurement.objects.filter(pk=measurement_id).update(
        status=Measurement.Status.FAILED, error=error[:10_000], finished_at=timezone.now()
    )
