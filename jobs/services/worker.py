"""Runs from the worker's side: claim, heartbeat, progress, log lines, stop, success, failure, and marking the
runs of a lost worker interrupted. Each is one transaction, so the worker may retry it.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.text import get_valid_filename

from distill.callbacks import CACHING
from distill.config import HOST_PATHS, RunConfig, parse_config
from distill.export import write_model_card
from jobs.live.events import log_event, run_event_send_on_commit, status_send_on_commit
from jobs.models import Artifact, Evaluation, LogLine, MetricPoint, Run, StepTime, Teacher
from jobs.services.catalog import local_path, teacher_facts
from jobs.services.measurements import study_measure_when_done


def run_claim(run_id: int, *, host: str, task_id: str) -> Run | None:
    """Move a queued run to running; None if it is not queued (a redelivered message, another worker)."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
            status=Run.Status.RUNNING,
            host=host,
            celery_task_id=task_id,
            started_at=Coalesce(F("started_at"), now),
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            phase="",
            phase_progress=0.0,
        )
        if not claimed:
            return None
        run = Run.objects.get(pk=run_id)
        run_log(run.pk, f"attempt {run.attempts} started on {host}")
        status_send_on_commit(run)
    return run


def run_log(run_id: int, *lines: str) -> None:
    """Append lines to the run's log and send them to its watchers once the transaction commits."""
    created = LogLine.objects.bulk_create([LogLine(run_id=run_id, text=line) for line in lines])
    run_event_send_on_commit(run_id, log_event([(line.pk, line.text) for line in created]))


def _should_stop(run_id: int) -> bool:
    status, cancel = Run.objects.filter(pk=run_id).values_list("status", "cancel_requested").get()
    return cancel or status != Run.Status.RUNNING


class Phase(NamedTuple):
    """What a running run's worker does (``distill.callbacks.PHASES``) and the share of it done."""

    name: str
    progress: float


def _phase_fields(phase: Phase | None) -> dict[str, Any]:
    return {} if phase is None else {"phase": phase.name, "phase_progress": min(max(phase.progress, 0.0), 1.0)}


def run_heartbeat(run_id: int, phase: Phase | None = None, eta_s: float | None = None) -> bool:
    """The worker is alive: stamp the run (and its phase, with the run's ETA then). True when the worker should
    stop (cancel requested, or the run is not running any more, e.g. marked interrupted while this worker was
    cut off from the database)."""
    with transaction.atomic():
        running = Run.objects.filter(pk=run_id, status=Run.Status.RUNNING)
        fields = _phase_fields(phase) | ({"eta_s": eta_s} if phase is not None else {})
        running.update(heartbeat_at=timezone.now(), **fields)
        return _should_stop(run_id)


@transaction.atomic
def run_stopped(run_id: int) -> Run:
    """The trainer stopped early and checkpointed: a requested cancel ends as ``cancelled``."""
    run = Run.objects.select_for_update().get(pk=run_id)
    if run.status == Run.Status.RUNNING:
        run.status, run.eta_s, run.finished_at = Run.Status.CANCELLED, None, timezone.now()
        run.save(update_fields=["status", "eta_s", "finished_at"])
        status_send_on_commit(run)
    if run.phase == CACHING:  # before the first step: no checkpoint yet
        run_log(run.pk, f"stopped while caching the teacher's outputs, before training: {run.status}")
    elif run.total_steps and run.step >= run.total_steps:  # stopped in the finish
        phase = run.phase or "finishing"
        run_log(run.pk, f"stopped while {phase}, after training: {run.status}; resume redoes the finish")
    else:
        run_log(run.pk, f"stopped at step {run.step} / {run.total_steps} with a checkpoint: {run.status}")
    return run


def runs_interrupt(
    *,
    stale_after_s: float | None = None,
    host: str | None = None,
    task_ids: Iterable[str] | None = None,
    reason: str | None = None,
) -> list[int]:
    """Mark running runs ``interrupted``, those that meet every condition given: a heartbeat older than
    ``stale_after_s`` (a worker that died or lost the database), claimed by the node ``host``, run by one of
    the Celery tasks ``task_ids`` (a worker that is shutting down). ``reason`` goes to the runs' logs.
    Returns the ids marked."""
    stale = Run.objects.filter(status=Run.Status.RUNNING)
    if stale_after_s is not None:
        stale = stale.filter(heartbeat_at__lt=timezone.now() - timedelta(seconds=stale_after_s))
    if host is not None:
        stale = stale.filter(host=host)
    if task_ids is not None:
        stale = stale.filter(celery_task_id__in=list(task_ids))
    marked = []
    for run_id in stale.values_list("pk", flat=True):
        with transaction.atomic():
            # the conditions again, in the update: a heartbeat or a finish that lands meanwhile wins
            if not stale.filter(pk=run_id).update(status=Run.Status.INTERRUPTED, eta_s=None):
                continue
            run = Run.objects.get(pk=run_id)
            why = reason or (f"{run.host} started again" if host else f"no heartbeat for {stale_after_s:g} s")
            run_log(run_id, f"interrupted at step {run.step}: {why}; resume continues from the last checkpoint")
            status_send_on_commit(run)
        marked.append(run_id)
    return marked


class Stored(NamedTuple):
    """What ``run_progress`` did: whether the worker should stop, and the log lines stored, ``(id, text)``."""

    stop: bool
    lines: list[tuple[int, str]]


def run_progress(
    run_id: int,
    points: Iterable[tuple[str, int, float]],
    *,
    step: int,
    total_steps: int,
    eta_s: float | None,
    lines: Sequence[str] = (),
    phase: Phase | None = None,
) -> Stored:
    """Store metric points (idempotent per run, name and step), log lines and the progress, as one heartbeat
    in one transaction. Publishing is the caller's (the worker's monitor sends what this stored).
    ``stop`` is what ``run_heartbeat`` returns: whether the worker should stop."""
    with transaction.atomic():
        MetricPoint.objects.bulk_create(
            [MetricPoint(run_id=run_id, name=n, step=s, value=v) for n, s, v in points], ignore_conflicts=True
        )
        created = LogLine.objects.bulk_create([LogLine(run_id=run_id, text=line) for line in lines])
        Run.objects.filter(pk=run_id).update(
            step=step,
            total_steps=total_steps,
            progress=step / total_steps if total_steps else 0.0,
            eta_s=eta_s,
            heartbeat_at=timezone.now(),
            **_phase_fields(phase),
        )
        return Stored(_should_stop(run_id), [(line.pk, line.text) for line in created])


def _zip_folder(folder: Path, name: str) -> tuple[str, int, str]:
    """Zip ``folder`` into the default storage as ``name``; returns (stored name, bytes, sha256)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(shutil.make_archive(str(Path(tmp) / "export"), "zip", folder))
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        with archive.open("rb") as f:
            stored = default_storage.save(name, File(f))
        return stored, archive.stat().st_size, digest


@transaction.atomic
def run_succeed(run_id: int, result: dict[str, Any]) -> Run:
    """Record evaluations, the exported model and the run's measured times (``step_time_record``); a fine-tuned
    teacher is registered as a Teacher; the last run of a study to finish queues the study's side-by-side
    measurement. Once only:
    a retry whose first try committed (the reply lost with the connection) finds the run succeeded."""
    run = Run.objects.select_for_update().get(pk=run_id)
    if run.status == Run.Status.SUCCEEDED:
        return run
    for role, metrics in result["metrics"].items():
        eff = result["efficiency"][role]
        Evaluation.objects.update_or_create(
            run=run,
            role=role,
            split=metrics["split"],
            defaults={
                "metrics": {k: v for k, v in metrics.items() if k != "split"},
                "params": eff["params"],
                "bytes": eff.get("bytes"),
                "latency": eff["latency"],
            },
        )
    export = Path(result["export_dir"])
    write_model_card(export, export_config(run), result["metrics"], result["efficiency"])
    # the run's name is user input: as a file name it must not add folders or climb out of runs/<pk>/
    stored, size, digest = _zip_folder(export, f"runs/{run.pk}/{get_valid_filename(f'{run.name}-export.zip')}")
    Artifact.objects.create(run=run, kind=Artifact.Kind.STUDENT, path=stored, bytes=size, sha256=digest)
    if run.kind == Run.Kind.TEACHER_FINETUNE:
        Teacher.objects.create(
            team=run.team,
            name=_free_teacher_name(run),
            source=str(export),
            from_run=run,
            **teacher_facts(str(export)),
            created_by=run.created_by,
        )
    step_time_record(run.pk, result.get("timings") or {})
    run.status, run.progress, run.eta_s, run.finished_at = Run.Status.SUCCEEDED, 1.0, None, timezone.now()
    run.save(update_fields=["status", "progress", "eta_s", "finished_at"])
    run_log(run.pk, f"succeeded: exported {size / 2**20:.1f} MB (zip)")
    status_send_on_commit(run)
    study_measure_when_done(run)  # the study's last run: its models are measured side by side
    return run


def step_time_record(run_id: int, timings: dict[str, dict[str, float]]) -> StepTime | None:
    """Keep what a succeeded run measured on its worker (``TrainResult.timings``) for later estimates; one
    record per run (a resumed run's last attempt). None when the run measured no step (resumed in its finish)."""
    run = Run.objects.select_related("teacher").get(pk=run_id)
    measured, analytic = timings.get("measured") or {}, timings.get("analytic") or {}
    if "step_s" not in measured or not analytic:
        return None
    cfg = parse_config(run.config)
    student = cfg.student
    hidden = (student.hidden_size or run.teacher.architecture.get("hidden_size")) if student else None
    record, _ = StepTime.objects.update_or_create(
        run=run,
        defaults={
            "teacher": run.teacher,
            "task": cfg.task,
            "kind": run.kind,
            "student_layers": student.layers if student else None,
            "student_hidden": hidden,
            "batch_size": cfg.optim.batch_size,
            "max_length": cfg.data.max_length,
            "host": run.host,
            "queue": run.queue,
            "measured": measured,
            "analytic": analytic,
        },
    )
    return record


def export_config(run: Run) -> RunConfig:
    """The run's config as its export states it (the zip a public link may serve): the registered teacher's
    and data set's names stand for their local paths, and the host's folders are the engine's defaults."""
    cfg = parse_config(run.config)
    teacher, data = cfg.teacher.source, cfg.data.source
    if local_path(teacher, hub_ids=True) is not None:
        teacher = f"kdweb teacher {run.teacher.name!r}"
    if local_path(data) is not None:
        data = f"kdweb data set {run.dataset.name!r}"
    return cfg.model_copy(
        update={
            "teacher": cfg.teacher.model_copy(update={"source": teacher}),
            "data": cfg.data.model_copy(update={"source": data}),
        }
        | {path: RunConfig.model_fields[path].default for path in HOST_PATHS}
    )


def _free_teacher_name(run: Run) -> str:
    stem = run.name[: Teacher._meta.get_field("name").max_length - len(" (fine-tuned 999)")]
    name, n = f"{stem} (fine-tuned)", 1
    while Teacher.objects.filter(team=run.team, name=name).exists():
        n += 1
        name = f"{stem} (fine-tuned {n})"
    return name


@transaction.atomic
def run_fail(run_id: int, error: str) -> None:
    Run.objects.filter(pk=run_id).update(
        status=Run.Status.FAILED, error=error[:10_000], eta_s=None, finished_at=timezone.now()
    )
    run_log(run_id, f"failed: {error.splitlines()[0] if error else 'no message'}")
    run = Run.objects.get(pk=run_id)
    status_send_on_commit(run)
    study_measure_when_done(run)  # the study's last run to finish may fail: the others are measured still
