"""Runs from the user's side: building a run's config, creating, cancelling and resuming it, and sending it to
the broker (on commit, and again by the watchdog's sweep when the broker was down).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from distill.checkpoint import has_checkpoint
from distill.config import HOST_PATHS, ConfigError, RunConfig, parse_config
from distill.lora import validate_lora
from distill.students import validate_against
from distill.teachers import Architecture
from jobs.live.events import status_send_on_commit
from jobs.models import DatasetSpec, Run, Teacher
from jobs.permissions import require_write
from jobs.selectors import live_queues, run_output_dir, teacher_hf_config
from jobs.services.catalog import config_errors
from jobs.services.worker import run_log
from kdweb.celery import app

log = logging.getLogger(__name__)


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
    } | {path: RunConfig.model_fields[path].default for path in HOST_PATHS}  # the worker sets its own folders
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


ARCHIVED = "{name} is archived: an owner can bring it back (unarchive) before a new run uses it."

QUEUE_NOT_LIVE = (
    "No worker consumes the queue “{queue}”: a run there would wait forever. Live queues: {live}; or the default "
    "queue “{default}”, where a run waits for a worker."
)


def checked_queue(queue: str) -> str:
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
    for field, chosen in (("teacher", teacher), ("dataset", dataset)):
        if chosen.archived:
            raise ValidationError({field: ARCHIVED.format(name=chosen.name)})
    cfg = run_config_build(kind=kind, teacher=teacher, dataset=dataset, name=name, sections=sections)
    queue = checked_queue(queue)
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

RUN_EXECUTE = "jobs.run_execute"  # the Celery task that trains a run (jobs.worker.tasks)
SEND_GRACE_S = 5.0  # the sweep leaves runs this young to the request that queued them
BROKER_DOWN_S = 5.0  # after a failed send, the requests of this process do not try for this long
BROKER_DOWN_KEY = "kdweb:broker-down"
WAITING_FOR_BROKER = (
    "not sent yet: the broker does not answer ({error}); the run stays queued and is sent as soon as it does"
)


def _send(run_id: int) -> Run | None:
    """Send the run's message if it is queued and unsent and no one else is sending it (its row is locked for
    the send); the run as sent, or None. Raises ``BrokerError`` when the broker cannot be reached."""

    with transaction.atomic():
        unsent = Run.objects.select_for_update(skip_locked=True).filter(
            pk=run_id, status=Run.Status.QUEUED, enqueued_at=None
        )
        run = unsent.first()
        if run is None:
            return None
        run.celery_task_id = app.send_task(RUN_EXECUTE, (run.pk,), queue=run.queue).id
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
