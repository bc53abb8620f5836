"""Writes: every change to kdweb's data goes through these functions.

Validation is the engine's own (``distill.config``, ``distill.students.validate_against``,
``distill.data``): its ``field: reason`` errors become a Django ``ValidationError`` keyed by the same
field paths, so forms can show each at the field it concerns. Work for the worker is enqueued on commit.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.text import get_valid_filename

from distill.config import ConfigError, DataConfig, RunConfig, parse_config
from distill.students import validate_against
from distill.teachers import Architecture, inspect_teacher
from jobs.events import log_event, run_event_send_on_commit, status_send_on_commit
from jobs.models import Artifact, DatasetSpec, Evaluation, LogLine, MetricPoint, Run, Teacher, Team
from jobs.permissions import require_write

UPLOAD_SUFFIXES = (".csv", ".jsonl", ".json")
UPLOAD_TOO_LARGE = "The file is {size:,} bytes; the limit is {limit:,} bytes."
UPLOAD_BAD_TYPE = "Upload a .csv or .jsonl file."
IN_DATA_DIR = "That folder holds kdweb's own runs and uploads; they are registered by their team, not by path."


def config_errors(exc: ConfigError) -> ValidationError:
    """The engine's ``(field, message)`` pairs as a ValidationError keyed by field path."""
    errors: dict[str, list[str]] = {}
    for field, message in exc.errors:
        errors.setdefault(field, []).append(message)
    return ValidationError(errors)


# --- teachers and data sets ------------------------------------------------------------------------


@transaction.atomic
def teacher_register(*, user, team: Team, name: str, source: str) -> Teacher:
    """Register a teacher after reading its architecture (which proves the source is usable)."""
    require_write(user, team)
    if Teacher.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"This team already has a teacher named {name!r}."})
    _refuse_data_dir(source, "source")
    try:
        arch = inspect_teacher(source)
    except ConfigError as exc:
        raise ValidationError({"source": [m for _, m in exc.errors]}) from None
    return Teacher.objects.create(team=team, name=name, source=source, architecture=arch.as_dict(), created_by=user)


def _refuse_data_dir(source: str, field: str) -> None:
    """Another team's exports and uploads live under DATA_DIR: a path into it must not bypass the team check."""
    if Path(source).expanduser().resolve().is_relative_to(Path(settings.DATA_DIR).resolve()):
        raise ValidationError({field: IN_DATA_DIR})


def _store_upload(upload: UploadedFile) -> str:
    if upload.size > settings.UPLOAD_MAX_BYTES:
        raise ValidationError({"upload": UPLOAD_TOO_LARGE.format(size=upload.size, limit=settings.UPLOAD_MAX_BYTES)})
    if not upload.name.lower().endswith(UPLOAD_SUFFIXES):
        raise ValidationError({"upload": UPLOAD_BAD_TYPE})
    return default_storage.save(f"uploads/{upload.name}", upload)


def dataset_describe(data_cfg: DataConfig) -> dict[str, Any]:
    """Labels, split sizes and the first rows of a data set, read with the engine (errors by field)."""
    from distill.data import load_data, preview

    try:
        data = load_data(data_cfg)
        rows = preview(data_cfg, rows=5)
    except ConfigError as exc:
        raise config_errors(exc) from None
    sizes = {name: len(data.split(name)) for name in ("train", "validation", "test")}
    return {"labels": list(data.labels), "sizes": sizes, "preview": rows}


@transaction.atomic
def dataset_create(
    *,
    user,
    team: Team,
    name: str,
    source: str = "",
    upload: UploadedFile | None = None,
    text_column: str = "text",
    label_column: str = "label",
) -> DatasetSpec:
    """Register a data set from a packaged name, a path or an uploaded CSV/JSONL, after reading it."""
    require_write(user, team)
    if DatasetSpec.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"This team already has a data set named {name!r}."})
    if source and not upload:
        _refuse_data_dir(source, "source")
    stored = _store_upload(upload) if upload else ""
    if stored:
        source = default_storage.path(stored)
    if not source:
        raise ValidationError({"source": "Choose a packaged set or upload a file."})
    try:
        described = dataset_describe(DataConfig(source=source, text_column=text_column, label_column=label_column))
    except ValidationError as exc:
        if stored:
            default_storage.delete(stored)
        raise ValidationError({k.removeprefix("data."): v for k, v in exc.message_dict.items()}) from None
    return DatasetSpec.objects.create(
        team=team,
        name=name,
        source=source,
        upload=stored,
        text_column=text_column,
        label_column=label_column,
        created_by=user,
        **described,
    )


# --- runs: creation ---------------------------------------------------------------------------------


def run_config_build(*, kind: str, teacher: Teacher, dataset: DatasetSpec, name: str, sections: dict) -> RunConfig:
    """The engine config of a run, validated by the engine against the teacher and the data's labels.

    ``sections`` holds the user's choices (student, loss, optim, data limits, seed...); teacher and data
    sources come from the registered objects, so a run cannot point at another team's files.
    """
    data = {**sections.get("data", {}), **dataset.data_config()}
    raw = {**sections, "kind": kind, "name": name, "teacher": {"source": teacher.source}, "data": data}
    try:
        cfg = parse_config(raw)
        validate_against(cfg, Architecture(**teacher.architecture))
    except ConfigError as exc:
        raise config_errors(exc) from None
    if kind != Run.Kind.TEACHER_FINETUNE and teacher.labels != list(dataset.labels):
        message = (
            f"{teacher.name} is fine-tuned for {teacher.labels or 'no task'}, the data has {list(dataset.labels)}: "
            "fine-tune it on this data first"
        )
        raise ValidationError({"dataset": message})
    return cfg


@transaction.atomic
def run_create(
    *, user, teacher: Teacher, dataset: DatasetSpec, kind: str, name: str, sections: dict, queue: str = ""
) -> Run:
    """Validate and save a run, then enqueue it on ``queue`` once the transaction commits."""
    team = teacher.team
    require_write(user, team)
    if dataset.team_id != team.id:
        raise ValidationError({"dataset": "The data set belongs to another team."})
    cfg = run_config_build(kind=kind, teacher=teacher, dataset=dataset, name=name, sections=sections)
    run = Run.objects.create(
        team=team,
        name=name,
        kind=kind,
        teacher=teacher,
        dataset=dataset,
        config=cfg.model_dump(mode="json"),
        queue=queue or settings.CELERY_TASK_DEFAULT_QUEUE,
        created_by=user,
    )
    status_send_on_commit(run)  # the runs lists open on the team show it at once
    transaction.on_commit(lambda: _enqueue(run))
    return run


def _enqueue(run: Run) -> None:
    from jobs.tasks import run_execute

    result = run_execute.apply_async((run.id,), queue=run.queue)
    Run.objects.filter(pk=run.pk).update(celery_task_id=result.id)


# --- runs: the worker's side ---------------------------------------------------------------------------


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
        )
        if not claimed:
            return None
        run = Run.objects.get(pk=run_id)
        run_log(run.pk, f"attempt {run.attempts} started on {host}")
        status_send_on_commit(run)
    return run


def run_log(run_id: int, *lines: str) -> None:
    """Append lines to the run's log and send them to its watchers once the transaction commits."""
    LogLine.objects.bulk_create([LogLine(run_id=run_id, text=line) for line in lines])
    run_event_send_on_commit(run_id, log_event(list(lines)))


def _should_stop(run_id: int) -> bool:
    status, cancel = Run.objects.filter(pk=run_id).values_list("status", "cancel_requested").get()
    return cancel or status != Run.Status.RUNNING


def run_heartbeat(run_id: int) -> bool:
    """The worker is alive: stamp the run. True when the worker should stop (cancel requested, or the run
    is not running any more, e.g. marked interrupted while this worker was cut off from the database)."""
    with transaction.atomic():
        Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(heartbeat_at=timezone.now())
        return _should_stop(run_id)


@transaction.atomic
def run_stopped(run_id: int) -> Run:
    """The trainer stopped early and checkpointed: a requested cancel ends as ``cancelled``."""
    run = Run.objects.select_for_update().get(pk=run_id)
    if run.status == Run.Status.RUNNING:
        run.status, run.eta_s, run.finished_at = Run.Status.CANCELLED, None, timezone.now()
        run.save(update_fields=["status", "eta_s", "finished_at"])
        status_send_on_commit(run)
    run_log(run.pk, f"stopped at step {run.step} / {run.total_steps} with a checkpoint: {run.status}")
    return run


@transaction.atomic
def run_cancel(*, user, run: Run) -> Run:
    """Cancel a run: a queued run at once, a running one at its next step (it checkpoints, then stops)."""
    require_write(user, run.team)
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.status == Run.Status.QUEUED:
        # the task may still be in the broker: its claim finds the run not queued and does nothing
        run.status, run.finished_at = Run.Status.CANCELLED, timezone.now()
    elif run.status == Run.Status.RUNNING:
        run.cancel_requested = True
    else:
        raise ValidationError(f"A {run.status} run cannot be cancelled.")
    run.save(update_fields=["status", "finished_at", "cancel_requested"])
    run_log(run.pk, f"cancel requested by {user.get_username()}")
    status_send_on_commit(run)
    return run


@transaction.atomic
def run_resume(*, user, run: Run) -> Run:
    """Queue a cancelled or interrupted run again; its worker continues from the last checkpoint."""
    require_write(user, run.team)
    run = Run.objects.select_for_update().get(pk=run.pk)
    if not run.is_resumable:
        raise ValidationError(f"Only a cancelled or interrupted run can be resumed; this one is {run.status}.")
    run.status, run.cancel_requested, run.error, run.finished_at = Run.Status.QUEUED, False, "", None
    run.save(update_fields=["status", "cancel_requested", "error", "finished_at"])
    run_log(run.pk, f"resume requested by {user.get_username()}")
    status_send_on_commit(run)
    transaction.on_commit(lambda: _enqueue(run))
    return run


def runs_interrupt(*, stale_after_s: float | None = None, host: str | None = None) -> list[int]:
    """Mark running runs ``interrupted``: those whose heartbeat is older than ``stale_after_s`` (a worker
    that died or lost the database), or those claimed by ``host`` (a worker that starts again under the name
    it had, so none of its runs can still be running). Returns the ids marked."""
    stale = Run.objects.filter(status=Run.Status.RUNNING)
    if stale_after_s is not None:
        stale = stale.filter(heartbeat_at__lt=timezone.now() - timedelta(seconds=stale_after_s))
    if host is not None:
        stale = stale.filter(host=host)
    marked = []
    for run_id in stale.values_list("pk", flat=True):
        with transaction.atomic():
            # the conditions again, in the update: a heartbeat or a finish that lands meanwhile wins
            if not stale.filter(pk=run_id).update(status=Run.Status.INTERRUPTED, eta_s=None):
                continue
            run = Run.objects.get(pk=run_id)
            reason = f"{run.host} started again" if host else f"no heartbeat for {stale_after_s:g} s"
            run_log(run_id, f"interrupted at step {run.step}: {reason}; resume continues from the last checkpoint")
            status_send_on_commit(run)
        marked.append(run_id)
    return marked


def run_output_dir(run: Run) -> Path:
    return Path(settings.RUNS_DIR) / f"run-{run.pk}"


def run_progress(
    run_id: int, points: Iterable[tuple[str, int, float]], *, step: int, total_steps: int, eta_s: float | None
) -> bool:
    """Store metric points (idempotent per run, name and step) and the progress, as one heartbeat.
    Returns what ``run_heartbeat`` returns: whether the worker should stop."""
    with transaction.atomic():
        MetricPoint.objects.bulk_create(
            [MetricPoint(run_id=run_id, name=n, step=s, value=v) for n, s, v in points], ignore_conflicts=True
        )
        Run.objects.filter(pk=run_id).update(
            step=step,
            total_steps=total_steps,
            progress=step / total_steps if total_steps else 0.0,
            eta_s=eta_s,
            heartbeat_at=timezone.now(),
        )
        return _should_stop(run_id)


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
    """Record evaluations and the exported model; a fine-tuned teacher is registered as a Teacher."""
    run = Run.objects.select_for_update().get(pk=run_id)
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
    # the run's name is user input: as a file name it must not add folders or climb out of runs/<pk>/
    stored, size, digest = _zip_folder(export, f"runs/{run.pk}/{get_valid_filename(f'{run.name}-export.zip')}")
    Artifact.objects.create(run=run, kind=Artifact.Kind.STUDENT, path=stored, bytes=size, sha256=digest)
    if run.kind == Run.Kind.TEACHER_FINETUNE:
        Teacher.objects.create(
            team=run.team,
            name=_free_teacher_name(run),
            source=str(export),
            architecture=inspect_teacher(str(export)).as_dict(),
            from_run=run,
            created_by=run.created_by,
        )
    run.status, run.progress, run.eta_s, run.finished_at = Run.Status.SUCCEEDED, 1.0, None, timezone.now()
    run.save(update_fields=["status", "progress", "eta_s", "finished_at"])
    run_log(run.pk, f"succeeded: exported {size / 2**20:.1f} MB (zip)")
    status_send_on_commit(run)
    return run


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
    status_send_on_commit(Run.objects.get(pk=run_id))
