"""Writes: every change to kdweb's data goes through these functions.

Validation is the engine's own (``distill.config``, ``distill.students.validate_against``,
``distill.data``): its ``field: reason`` errors become a Django ``ValidationError`` keyed by the same
field paths, so forms can show each at the field it concerns. Work for the worker is enqueued on commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.text import get_valid_filename
from kombu.exceptions import OperationalError as BrokerError
from transformers import PretrainedConfig

from distill.checkpoint import has_checkpoint
from distill.config import ConfigError, DataConfig, RunConfig, parse_config
from distill.export import write_model_card
from distill.lora import validate_lora
from distill.students import validate_against
from distill.teachers import Architecture, describe, is_causal_lm, load_config
from jobs.events import log_event, run_event_send_on_commit, share_link_closed_on_commit, status_send_on_commit
from jobs.models import (
    Artifact,
    DatasetSpec,
    Evaluation,
    Invitation,
    LogLine,
    Membership,
    MetricPoint,
    Run,
    ShareLink,
    Study,
    Teacher,
    Team,
)
from jobs.permissions import require_owner, require_write
from jobs.selectors import ABLATIONS, BASELINES, FULL_METHOD, live_queues, teacher_hf_config

log = logging.getLogger(__name__)

UPLOAD_SUFFIXES = (".csv", ".jsonl", ".json", ".txt")
UPLOAD_TOO_LARGE = "The file is {size:,} bytes; the limit is {limit:,} bytes."
UPLOAD_BAD_TYPE = "Upload a .csv or .jsonl file (or, plain text for language models, a .txt file)."
IN_DATA_DIR = "That folder holds kdweb's own runs and uploads; they are registered by their team, not by path."
NO_IMPORT_ROOTS = "This server reads no local paths: upload the file, or use a package."
OUTSIDE_IMPORT_ROOTS = "Local paths must be under {roots}: upload the file, or use a package."
REMOTE_PREFIXES = ("package:", "packaged:", "hf:")


def config_errors(exc: ConfigError) -> ValidationError:
    """The engine's ``(field, message)`` pairs as a ValidationError keyed by field path."""
    errors: dict[str, list[str]] = {}
    for field, message in exc.errors:
        errors.setdefault(field, []).append(message)
    return ValidationError(errors)


# --- teachers and data sets ------------------------------------------------------------------------


def config_task(config: PretrainedConfig) -> str:
    """The run task a model can teach: ``causal_lm`` for a causal LM (the engine's ``is_causal_lm``: its saved
    architecture is one ``AutoModelForCausalLM`` builds), ``classification`` otherwise (a classifier, or a
    backbone to fine-tune)."""
    return Teacher.Task.CAUSAL_LM if is_causal_lm(config) else Teacher.Task.CLASSIFICATION


def teacher_facts(source: str) -> dict[str, Any]:
    """What a Teacher row stores about its source: architecture, task and the transformers config, read from
    the config alone (no weights). Engine errors are keyed ``source``."""
    try:
        config = load_config(source)
        arch = describe(config)
    except ConfigError as exc:
        raise ValidationError({"source": [m for _, m in exc.errors]}) from None
    return {
        "architecture": arch.as_dict(),
        "task": config_task(config),
        "hf_config": json.loads(config.to_json_string(use_diff=False)),
    }


@transaction.atomic
def teacher_register(*, user, team: Team, name: str, source: str) -> Teacher:
    """Register a teacher after reading its architecture (which proves the source is usable)."""
    require_write(user, team)
    if Teacher.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"This team already has a teacher named {name!r}."})
    import_path_check(source, "source", hub_ids=True)
    return Teacher.objects.create(team=team, name=name, source=source, created_by=user, **teacher_facts(source))


def local_path(source: str, *, hub_ids: bool = False) -> Path | None:
    """The file or folder a source names on this server, or None for a package, a packaged set, ``hf:`` or
    (with ``hub_ids``, as teachers take them) a hub id such as ``org/model`` that is no local path."""
    if source.startswith(REMOTE_PREFIXES):
        return None
    path = Path(source).expanduser()
    # the engine's rule (distill.teachers.resolve_source): what is not on disk and looks like org/model is a hub id
    if hub_ids and not path.exists() and not source.startswith((".", "/", "~")) and source.count("/") <= 1:
        return None
    return path


def import_path_check(source: str, field: str, *, hub_ids: bool = False) -> None:
    """Refuse a local path outside the operator's ``KDWEB_IMPORT_ROOTS`` (symlinks and ``..`` resolved first),
    or inside DATA_DIR, where other teams' exports and uploads live, unless a root inside DATA_DIR (the local
    demo's ``var/imports``) holds it. The answer is the same whether the path exists or not, so it tells
    nothing about the server's files."""
    path = local_path(source, hub_ids=hub_ids)
    if path is None:
        return
    roots = [Path(root).resolve() for root in settings.KDWEB_IMPORT_ROOTS]
    if not roots:
        raise ValidationError({field: NO_IMPORT_ROOTS})
    resolved = path.resolve()
    holders = [root for root in roots if resolved.is_relative_to(root)]
    if not holders:
        raise ValidationError({field: OUTSIDE_IMPORT_ROOTS.format(roots=", ".join(map(str, roots)))})
    data_dir = Path(settings.DATA_DIR).resolve()
    if resolved.is_relative_to(data_dir) and not any(root.is_relative_to(data_dir) for root in holders):
        raise ValidationError({field: IN_DATA_DIR})


def _store_upload(upload: UploadedFile) -> str:
    if upload.size > settings.UPLOAD_MAX_BYTES:
        raise ValidationError({"upload": UPLOAD_TOO_LARGE.format(size=upload.size, limit=settings.UPLOAD_MAX_BYTES)})
    if not upload.name.lower().endswith(UPLOAD_SUFFIXES):
        raise ValidationError({"upload": UPLOAD_BAD_TYPE})
    return default_storage.save(f"uploads/{upload.name}", upload)


def dataset_describe(data_cfg: DataConfig, task: str = Teacher.Task.CLASSIFICATION) -> dict[str, Any]:
    """Labels, split sizes and the first rows of a data set, read with the engine (errors by field). As
    plain text for ``causal_lm`` (no labels: the texts alone, split as a language model's run splits them)."""
    from distill.data import load_data, load_text_data, preview

    try:
        data = load_text_data(data_cfg) if task == Teacher.Task.CAUSAL_LM else load_data(data_cfg)
        rows = preview(data_cfg, rows=5, task=task)
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
    task: str = Teacher.Task.CLASSIFICATION,
) -> DatasetSpec:
    """Register a data set from a packaged name, a path or an uploaded CSV/JSONL, after reading it; with
    ``task="causal_lm"`` as plain text without labels (also a .txt file), for language models only."""
    require_write(user, team)
    if DatasetSpec.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"This team already has a data set named {name!r}."})
    if source and not upload:
        import_path_check(source, "source")
    stored = _store_upload(upload) if upload else ""
    if stored:
        source = default_storage.path(stored)
    if not source:
        raise ValidationError({"source": "Choose a packaged set or upload a file."})
    try:
        data_cfg = DataConfig(source=source, text_column=text_column, label_column=label_column)
        described = dataset_describe(data_cfg, task)
    except Exception as exc:
        if stored:  # a refused file is not kept, nor one that broke the reader
            default_storage.delete(stored)
        if isinstance(exc, ValidationError):
            raise ValidationError({k.removeprefix("data."): v for k, v in exc.message_dict.items()}) from None
        raise
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


TASK_MISMATCH = (
    "{teacher} is a {have} model: it teaches {have} runs only; choose that task, or a teacher registered for {want}"
)


def run_config_build(*, kind: str, teacher: Teacher, dataset: DatasetSpec, name: str, sections: dict) -> RunConfig:
    """The engine config of a run, validated by the engine against the teacher and the data's labels.

    ``sections`` holds the user's choices (student, loss, optim, data limits, seed, generation, lora,
    teacher.dtype...); teacher and data sources come from the registered objects, so a run cannot point at
    another team's files. The task is the teacher's unless ``sections`` names one, which must then be it.
    """
    data = {**sections.get("data", {}), **dataset.data_config()}
    raw = {
        "task": teacher.task,
        **sections,
        "kind": kind,
        "name": name,
        "teacher": {**sections.get("teacher", {}), "source": teacher.source},
        "data": data,
    }
    try:
        cfg = parse_config(raw)
        validate_against(cfg, Architecture(**teacher.architecture))
        if cfg.lora is not None:  # target layers that the model lacks fail here, not when the worker starts
            validate_lora(cfg.lora, teacher_hf_config(teacher), cfg.task)
    except ConfigError as exc:
        raise config_errors(exc) from None
    if cfg.task != teacher.task:
        labels = dict(Teacher.Task.choices)
        message = TASK_MISMATCH.format(teacher=teacher.name, have=labels[teacher.task], want=labels[cfg.task])
        raise ValidationError({"task": message})
    if cfg.task == Teacher.Task.CLASSIFICATION and not dataset.labels:
        raise ValidationError({"dataset": f"{dataset.name} is plain text without labels: it serves language models"})
    labelled = cfg.task == Teacher.Task.CLASSIFICATION and kind != Run.Kind.TEACHER_FINETUNE
    if labelled and teacher.labels != list(dataset.labels):
        message = (
            f"{teacher.name} is fine-tuned for {teacher.labels or 'no task'}, the data has {list(dataset.labels)}: "
            "fine-tune it on this data first"
        )
        raise ValidationError({"dataset": message})
    return cfg


QUEUE_NOT_LIVE = (
    "No worker consumes the queue “{queue}”: a run there would wait forever. Live queues: {live}; or the default "
    "queue “{default}”, where a run waits for a worker."
)


def _checked_queue(queue: str) -> str:
    """The queue to launch on: the default one when blank; a named one only if a live worker consumes it (the
    default one is always accepted, a run there waits for a worker)."""
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    if not queue or queue == default or queue in live_queues():
        return queue or default
    live = live_queues(fresh=True)  # a worker may have started since the cached answer
    if queue not in live:
        message = QUEUE_NOT_LIVE.format(queue=queue, live=", ".join(live) or "none", default=default)
        raise ValidationError({"queue": message})
    return queue


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
    queue = _checked_queue(queue)
    run = Run.objects.create(
        team=team,
        name=name,
        kind=kind,
        teacher=teacher,
        dataset=dataset,
        config=cfg.model_dump(mode="json"),
        queue=queue,
        created_by=user,
    )
    status_send_on_commit(run)  # the runs lists open on the team show it at once
    transaction.on_commit(lambda: _enqueue(run))
    return run


# --- runs: sending them to the broker ------------------------------------------------------------------
# A run is committed first, then its message is sent (on commit), and ``enqueued_at`` records that the broker
# took it. A run queued with ``enqueued_at`` unset was never sent (the broker was down): the watchdog's sweep
# (``runs_send_unsent``) sends it. Both send under the run's row lock, only while it is queued and unsent, so
# the message goes out once; were it ever sent twice, the worker's claim (``run_claim``) runs it once.

SEND_GRACE_S = 5.0  # the sweep leaves runs this young to the request that queued them
BROKER_DOWN_S = 5.0  # after a failed send, the requests of this process do not try for this long
BROKER_DOWN_KEY = "kdweb:broker-down"
WAITING_FOR_BROKER = (
    "not sent yet: the broker does not answer ({error}); the run stays queued and is sent as soon as it does"
)


def _send(run_id: int) -> Run | None:
    """Send the run's message if it is queued and unsent and no one else is sending it (its row is locked for
    the send); the run as sent, or None. Raises ``BrokerError`` when the broker cannot be reached."""
    from jobs.tasks import run_execute

    with transaction.atomic():
        unsent = Run.objects.select_for_update(skip_locked=True).filter(
            pk=run_id, status=Run.Status.QUEUED, enqueued_at=None
        )
        run = unsent.first()
        if run is None:
            return None
        run.celery_task_id = run_execute.apply_async((run.pk,), queue=run.queue).id
        run.enqueued_at = timezone.now()
        run.save(update_fields=["celery_task_id", "enqueued_at"])
        return run


def _enqueue(run: Run) -> None:
    """On commit of the request that queued ``run``: send it. A broker that does not answer fails nothing: the
    run stays queued, its log says why, and the sweep sends it later. Updates ``run`` when sent."""
    error = "nor did it a moment ago" if cache.get(BROKER_DOWN_KEY) else None
    if error is None:
        try:
            sent = _send(run.pk)
        except BrokerError as exc:
            cache.set(BROKER_DOWN_KEY, True, BROKER_DOWN_S)  # the next runs of a study need not wait for it too
            error = str(exc)
        else:
            if sent is not None:
                run.celery_task_id, run.enqueued_at = sent.celery_task_id, sent.enqueued_at
            return
    log.warning("run %s not sent to the broker: %s", run.pk, error)
    run_log(run.pk, WAITING_FOR_BROKER.format(error=error))


def runs_send_unsent(older_than_s: float = SEND_GRACE_S) -> list[int]:
    """Send the queued runs whose message never reached the broker, oldest first (the watchdog's sweep).
    Returns the ids sent; raises ``BrokerError`` when the broker is still down (the rest waits for the next
    sweep)."""
    unsent = Run.objects.filter(
        status=Run.Status.QUEUED, enqueued_at=None, created_at__lt=timezone.now() - timedelta(seconds=older_than_s)
    )
    sent = []
    for run_id in unsent.order_by("created_at", "pk").values_list("pk", flat=True):
        run = _send(run_id)
        if run is not None:
            run_log(run_id, f"the broker answers again: sent to the queue {run.queue}")
            sent.append(run_id)
    return sent


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


def run_heartbeat(run_id: int, phase: Phase | None = None) -> bool:
    """The worker is alive: stamp the run (and its phase). True when the worker should stop (cancel requested,
    or the run is not running any more, e.g. marked interrupted while this worker was cut off from the
    database)."""
    with transaction.atomic():
        running = Run.objects.filter(pk=run_id, status=Run.Status.RUNNING)
        running.update(heartbeat_at=timezone.now(), **_phase_fields(phase))
        return _should_stop(run_id)


@transaction.atomic
def run_stopped(run_id: int) -> Run:
    """The trainer stopped early and checkpointed: a requested cancel ends as ``cancelled``."""
    run = Run.objects.select_for_update().get(pk=run_id)
    if run.status == Run.Status.RUNNING:
        run.status, run.eta_s, run.finished_at = Run.Status.CANCELLED, None, timezone.now()
        run.save(update_fields=["status", "eta_s", "finished_at"])
        status_send_on_commit(run)
    if run.total_steps and run.step >= run.total_steps:  # stopped in the finish
        phase = run.phase or "finishing"
        run_log(run.pk, f"stopped while {phase}, after training: {run.status}; resume redoes the finish")
    else:
        run_log(run.pk, f"stopped at step {run.step} / {run.total_steps} with a checkpoint: {run.status}")
    return run


@transaction.atomic
def run_cancel(*, user, run: Run) -> Run:
    """Cancel a run: a queued run at once, a running one at its next step (it checkpoints, then stops), or
    within a second in the finish (evaluation, latency measurement, export: resuming redoes that)."""
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
    """Queue a cancelled, interrupted or failed run again; its worker continues from the last checkpoint (a
    failed run needs one: it failed before its first otherwise, and is launched anew)."""
    require_write(user, run.team)
    run = Run.objects.select_for_update().get(pk=run.pk)
    if not run.is_resumable:
        raise ValidationError(f"Only a failed, cancelled or interrupted run can be resumed; this one is {run.status}.")
    if run.status == Run.Status.FAILED and not has_checkpoint(run_output_dir(run)):
        raise ValidationError("This run failed before its first checkpoint: nothing to resume; launch it again.")
    run.status, run.cancel_requested, run.error, run.finished_at = Run.Status.QUEUED, False, "", None
    run.enqueued_at = None  # a new message to send
    run.save(update_fields=["status", "cancel_requested", "error", "finished_at", "enqueued_at"])
    run_log(run.pk, f"resume requested by {user.get_username()}")
    status_send_on_commit(run)
    transaction.on_commit(lambda: _enqueue(run))
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


def run_output_dir(run: Run) -> Path:
    return Path(settings.RUNS_DIR) / f"run-{run.pk}"


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
    """Record evaluations and the exported model; a fine-tuned teacher is registered as a Teacher. Once only:
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
    run.status, run.progress, run.eta_s, run.finished_at = Run.Status.SUCCEEDED, 1.0, None, timezone.now()
    run.save(update_fields=["status", "progress", "eta_s", "finished_at"])
    run_log(run.pk, f"succeeded: exported {size / 2**20:.1f} MB (zip)")
    status_send_on_commit(run)
    return run


def export_config(run: Run) -> RunConfig:
    """The run's config as its export states it (the zip a public link may serve): the registered teacher's
    and data set's names stand for their local paths, and the output folder is the engine's default."""
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
            "output_dir": RunConfig.model_fields["output_dir"].default,
        }
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
    status_send_on_commit(Run.objects.get(pk=run_id))


# --- teams and sharing -------------------------------------------------------------------------------------

INVITATION_SUBJECT = "You are invited to the team {team} on kdweb"
INVITATION_BODY = "{inviter} invites you to the team {team} on kdweb, as {role}.\n\nJoin it here (once): {url}\n"
LAST_OWNER = "A team keeps at least one owner: make someone else an owner first."


@transaction.atomic
def team_create(*, user, name: str) -> Team:
    """A new team, with its creator as its first owner."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the team a name."})
    if Team.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": f"There is already a team named {name!r}."})
    team = Team.objects.create(name=name)
    Membership.objects.create(team=team, user=user, role=Membership.Role.OWNER)
    return team


def invitation_url(invitation: Invitation, site: str = "") -> str:
    """The link that accepts ``invitation``; absolute when ``site`` (``scheme://host``) is given."""
    return f"{site}{reverse('invitation_accept', args=[invitation.token])}"


@transaction.atomic
def member_invite(
    *, user, team: Team, who: str, role: str = Membership.Role.MEMBER, site: str = ""
) -> Membership | Invitation:
    """Add someone to ``team`` (owners only), by username or e-mail address.

    A known username or e-mail address becomes a membership at once; an unknown address gets an
    Invitation, mailed to it with its link (which the page also shows the inviter, to pass on).
    """
    require_owner(user, team)
    who = who.strip()
    if role not in Membership.Role.values:
        raise ValidationError({"role": f"Choose one of {', '.join(Membership.Role.values)}."})
    users = get_user_model().objects.filter(is_active=True)
    by_email = "@" in who
    invitee = users.filter(email__iexact=who).order_by("pk").first() if by_email else users.filter(username=who).first()
    if invitee is None and not by_email:
        raise ValidationError({"who": f"No user is named {who!r}; invite them by e-mail address instead."})
    if invitee is None:
        invitation = Invitation.objects.create(team=team, email=who, role=role, invited_by=user)
        url = invitation_url(invitation, site)
        body = INVITATION_BODY.format(inviter=user.get_username(), team=team.name, role=role, url=url)
        # sent after the commit: a rolled-back invitation must not reach anyone
        transaction.on_commit(lambda: send_mail(INVITATION_SUBJECT.format(team=team.name), body, None, [who]))
        return invitation
    if Membership.objects.filter(team=team, user=invitee).exists():
        raise ValidationError({"who": f"{invitee.get_username()} is already a member of {team.name}."})
    return Membership.objects.create(team=team, user=invitee, role=role)


@transaction.atomic
def invitation_accept(*, user, token: str) -> Membership:
    """Join the invitation's team with its role; an invitation is used once."""
    invitation = Invitation.objects.select_for_update().select_related("team").filter(token=token).first()
    if invitation is None or invitation.accepted_at is not None:
        raise ValidationError("This invitation is unknown or has been used already.")
    if Membership.objects.filter(team=invitation.team, user=user).exists():
        raise ValidationError(f"You are already a member of {invitation.team.name}.")
    invitation.accepted_by, invitation.accepted_at = user, timezone.now()
    invitation.save(update_fields=["accepted_by", "accepted_at"])
    return Membership.objects.create(team=invitation.team, user=user, role=invitation.role)


def _keep_an_owner(membership: Membership) -> None:
    """Refuse a change that would leave the membership's team without an owner (its owners locked first,
    so two owners demoting each other at once cannot both succeed)."""
    owners = Membership.objects.select_for_update().filter(team_id=membership.team_id, role=Membership.Role.OWNER)
    if membership.role == Membership.Role.OWNER and list(owners.values_list("pk", flat=True)) == [membership.pk]:
        raise ValidationError(LAST_OWNER)


@transaction.atomic
def member_set_role(*, user, membership: Membership, role: str) -> Membership:
    """Change a member's role (owners only)."""
    require_owner(user, membership.team)
    if role not in Membership.Role.values:
        raise ValidationError({"role": f"Choose one of {', '.join(Membership.Role.values)}."})
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if role != Membership.Role.OWNER:
        _keep_an_owner(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def member_remove(*, user, membership: Membership) -> None:
    """Take someone out of a team (owners only)."""
    require_owner(user, membership.team)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _keep_an_owner(membership)
    membership.delete()


@transaction.atomic
def share_link_create(
    *, user, target: Run | Study, expires_at: datetime | None = None, allow_downloads: bool = False
) -> ShareLink:
    """A public read-only link to a run or a study (owners and members of its team)."""
    require_write(user, target.team)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    kind = "run" if isinstance(target, Run) else "study"
    return ShareLink.objects.create(
        team=target.team, allow_downloads=allow_downloads, expires_at=expires_at, created_by=user, **{kind: target}
    )


@transaction.atomic
def share_link_revoke(*, user, link: ShareLink) -> ShareLink:
    """Revoke a link for good (owners and members of its team); revoking twice changes nothing."""
    require_write(user, link.team)
    link = ShareLink.objects.select_for_update().get(pk=link.pk)
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
        share_link_closed_on_commit(link.pk)
    return link


# --- studies ------------------------------------------------------------------------------------------------

MAX_STUDY_SEEDS = 10


def study_variants(ablations: Iterable[str]) -> list[tuple[str, str, dict[str, float]]]:
    """``(variant, kind, loss weights set to 0)`` of a study: the full method, the chosen ablations of it, then
    the baselines, in the order the scorecard shows them."""
    chosen = set(ablations)
    unknown = sorted(chosen - set(ABLATIONS))
    if unknown:
        raise ValidationError(
            {"ablations": f"Unknown ablation {', '.join(unknown)}: choose from {', '.join(ABLATIONS)}."}
        )
    return [
        (FULL_METHOD, FULL_METHOD, {}),
        *((variant, FULL_METHOD, {zeroed: 0.0}) for variant, zeroed in ABLATIONS.items() if variant in chosen),
        *((kind, kind, {}) for kind in BASELINES),
    ]


def study_run_name(study: str, variant: str, seed: int) -> str:
    """``<study> · <variant> · seed <n>``, the study's name shortened to fit a run's name."""
    suffix = f" · {variant} · seed {seed}"
    return study[: Run._meta.get_field("name").max_length - len(suffix)] + suffix


def _labelled(exc: ValidationError, label: str) -> ValidationError:
    """The same errors (keyed by the same fields), each message saying which run of the study it concerns."""
    if hasattr(exc, "error_dict"):
        return ValidationError({key: [f"{label}: {m}" for m in ms] for key, ms in exc.message_dict.items()})
    return ValidationError([f"{label}: {m}" for m in exc.messages])


@transaction.atomic
def study_create(
    *,
    user,
    teacher: Teacher,
    dataset: DatasetSpec,
    name: str,
    sections: dict,
    ablations: Iterable[str] = (),
    seeds: Iterable[int] = (0,),
    queue: str = "",
) -> Study:
    """A study of the full method (kd_feature) against its baselines (kd_logits, no_kd) and the chosen
    ablations (``output+feature``: kd_feature without the attention term, ``output+attention``: without the
    feature term), each trained once per seed with the same student shape, data, budget and queue.

    One transaction: every run is validated and created by ``run_create`` (so each is enqueued on commit), or
    none is. Every run evaluates its teacher at its end, on the same split and host as its student
    (``Evaluation`` role ``teacher``): the scorecard compares with that, so no separate teacher run is needed.
    """
    require_write(user, teacher.team)
    variants = study_variants(ablations)
    seeds = list(dict.fromkeys(seeds))
    if not seeds:
        raise ValidationError({"seeds": "Give at least one seed."})
    if len(seeds) > MAX_STUDY_SEEDS:
        raise ValidationError({"seeds": f"At most {MAX_STUDY_SEEDS} seeds ({len(seeds)} given)."})
    queue = _checked_queue(queue)  # once for all its runs, unlabelled
    names = ", ".join(variant for variant, _, _ in variants)
    study = Study.objects.create(
        team=teacher.team,
        name=name,
        description=f"{names} on {dataset.name}; seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}",
        created_by=user,
    )
    for seed in seeds:
        for variant, kind, zeroed in variants:
            run_sections = {**sections, "seed": seed, "loss": {**sections.get("loss", {}), **zeroed}}
            try:
                run = run_create(
                    user=user,
                    teacher=teacher,
                    dataset=dataset,
                    kind=kind,
                    name=study_run_name(name, variant, seed),
                    sections=run_sections,
                    queue=queue,
                )
            except ValidationError as exc:
                raise _labelled(exc, f"{variant}, seed {seed}") from None
            run.study = study
            run.save(update_fields=["study"])
    return study
