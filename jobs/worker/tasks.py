"""Celery tasks and worker hooks: interfaces that fetch by id and call the engine and the services: training a
run, and measuring a study's models side by side."""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
import traceback
import zipfile
from pathlib import Path

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from celery.worker import state as worker_state
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connections

from distill.balance import first_steps
from distill.callbacks import CACHING, Control, StopRequested, TrainState
from distill.config import RunConfig, parse_config
from distill.side_by_side import measure_side_by_side
from distill.teacher_cache import build_for_config
from distill.trainer import train
from jobs import services
from jobs.worker.progress import RunMonitor
from jobs.worker.retry import retrying

log = logging.getLogger(__name__)


@shared_task(bind=True, name=services.RUN_EXECUTE)
def run_execute(self, run_id: int) -> None:
    """Train one run, or resume it from its checkpoint. The database claim makes a redelivered message a no-op.

    The worker's node name (``celery@host``) is stored as the run's host: a worker that starts again under
    that name marks the run interrupted if its heartbeat is stale (``interrupt_runs_of_restarted_worker``).
    Each write survives a dropped database connection (``jobs.worker.retry``).
    """
    host, task_id = self.request.hostname or socket.gethostname(), self.request.id or ""
    run = retrying(services.run_claim, run_id, host=host, task_id=task_id)
    if run is None:
        log.info("run %s is not queued any more; nothing to do", run_id)
        return
    output_dir = services.run_output_dir(run)
    try:  # once claimed, the run must end succeeded, failed or stopped: nothing else would move it on
        cfg = services.run_worker_config(run)
        with RunMonitor(run.id, run.team_id) as monitor:
            study_cache = services.study_cache_config(run)
            cached = study_cache is None or study_cache_build(study_cache, monitor)
            result = train(cfg, [monitor], resume=True) if cached else None
        if result is None or result.stopped:
            retrying(services.run_stopped, run.id)
        else:
            retrying(services.run_succeed, run.id, result.as_dict())
    except Exception as exc:
        log.exception("run %s failed", run_id)
        retrying(services.run_fail, run.id, f"{failure(exc, output_dir)}\n\n{traceback.format_exc()}")


@shared_task(bind=True, name=services.MEASURE_SIDE_BY_SIDE)
def measure_models_side_by_side(self, measurement_id: int) -> None:
    """Measure a study's teacher and students side by side on this worker (``distill.side_by_side``): each
    student's exported zip is unpacked into a temporary folder, all are loaded into this process and timed
    alternately at the runs' max length, with torch's thread count, for up to ``KDWEB_MEASURE_CAP_S``."""
    host = self.request.hostname or socket.gethostname()
    measurement = retrying(services.measurement_claim, measurement_id, host=host)
    if measurement is None:
        log.info("measurement %s is not queued any more; nothing to do", measurement_id)
        return
    try:
        teacher, exports = services.measurement_models(measurement)
        with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
            sources = [("teacher", teacher)]
            for run, artifact in exports:
                folder = Path(tmp) / f"run-{run.pk}"
                with default_storage.open(artifact.path) as f, zipfile.ZipFile(f) as archive:
                    archive.extractall(folder)
                sources.append((f"run {run.pk}", str(folder)))
            result = measure_side_by_side(
                sources,
                seq_len=parse_config(exports[0][0].config).data.max_length,
                time_cap_s=settings.KDWEB_MEASURE_CAP_S,
            ).as_dict()
        result["host"] = host  # the worker's node name, as runs record theirs
        # the temporary folders are gone: each model is known by its run (None: the teacher) and stored file
        for entry, (run, artifact) in zip(result["models"], [(None, None), *exports], strict=True):
            entry["run"], entry["source"] = (run.pk, artifact.path) if run else (None, teacher)
        retrying(services.measurement_succeed, measurement.pk, result)
    except Exception as exc:
        log.exception("measurement %s failed", measurement_id)
        retrying(services.measurement_fail, measurement.pk, f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")


@shared_task(name=services.BALANCE_PREVIEW)
def balance_preview(config: dict, reply_key: str) -> None:
    """The first-batch loss terms of a run config and the time of its first steps, for the wizard's review
    (``services.balance_preview``), pushed to ``reply_key``: ``distill.balance.FirstSteps`` as a dict, or
    ``{"error": ...}`` when the engine cannot build the run here."""
    try:
        answer = first_steps(parse_config(config)).as_dict()
    except Exception as exc:  # the review shows the reason in place of the preview
        log.exception("balance preview failed")
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    services.balance_reply(reply_key, answer)


def study_cache_build(cfg: RunConfig, monitor: RunMonitor) -> bool:
    """Build the teacher-output cache of a study (``services.study_cache_config``) before a run of it trains, in
    the run's ``caching`` phase: the study's first run to start builds it, the others wait for it, then every
    run reads it, whether or not a run of its length would build one. False when a cancel stopped the build."""
    state, control = TrainState(), Control()
    units = done = 0
    started = time.monotonic()

    def start(total: int) -> None:
        nonlocal units
        units = total
        monitor.say("caching the teacher's outputs for the study's runs")
        monitor.on_phase(state, control, CACHING, 0, units)

    def tick() -> None:
        nonlocal done
        done += 1
        state.elapsed_s = time.monotonic() - started
        state.eta_s = state.elapsed_s / done * (units - done)  # the build's own rest; the run's comes with training
        monitor.on_phase(state, control, CACHING, done, units)
        if control.should_stop:
            raise StopRequested(CACHING)

    def wait() -> None:
        monitor.say("waiting for another run of the study, which is caching the teacher's outputs")

    try:
        build_for_config(cfg, tick=tick, built_by=cfg.name, on_units=start, on_wait=wait)
    except StopRequested:
        return False
    return True


def failure(exc: Exception, output_dir: Path) -> str:
    """The first line of a failed run's error: what went wrong, and for the run folder what to do."""
    path = getattr(exc, "filename", None)
    if isinstance(exc, OSError) and path and Path(path).is_relative_to(output_dir):
        return (
            f"the run folder {output_dir} cannot be written ({exc.strerror}: {path}); "
            "fix that, then resume the run: it continues from its last checkpoint"
        )
    return f"{type(exc).__name__}: {exc}"


@worker_ready.connect
def interrupt_runs_of_restarted_worker(sender, **kwargs) -> None:
    """A worker starting under a node name finds the runs still marked running under that name. Those whose
    heartbeat is stale died with a previous process of that name (killed, out of memory, host rebooted) and
    are marked interrupted at once, without waiting for the watchdog's next round. Those whose heartbeat is
    fresh belong to a live worker that has the same name: they are left alone."""
    marked = services.runs_interrupt(host=sender.hostname, stale_after_s=settings.KDWEB_STALE_AFTER_S)
    if marked:
        log.warning("runs %s were running on %s when it stopped: interrupted", marked, sender.hostname)
    connections.close_all()  # opened in the parent process: forked pool children must not share it


@worker_shutting_down.connect
def interrupt_runs_of_stopping_worker(sender: str, how: str, **kwargs) -> None:
    """A warm shutdown (SIGTERM) lets running tasks go on until the cold one kills them, checkpoints lost.
    Marking their runs interrupted at once makes each trainer stop at its next step end (the monitor reads
    the status within a second), checkpoint there and return, so the worker exits early and the runs resume
    from where they were. Only the runs of this worker's own tasks (by task id): another worker may run under
    the same node name (``sender``).

    This runs in a signal handler, which may have interrupted the task's own database work on this thread
    (solo pool): the update goes through a thread, and so a connection, of its own."""
    task_ids = [request.id for request in worker_state.active_requests]
    if how != "Warm" or not task_ids:
        return

    def interrupt() -> None:
        try:
            if marked := services.runs_interrupt(task_ids=task_ids, reason=f"{sender} is shutting down"):
                log.warning("runs %s interrupted: %s is shutting down; they stop at a checkpoint", marked, sender)
        finally:
            connections.close_all()

    thread = threading.Thread(target=interrupt, name="interrupt-on-shutdown")
    thread.start()
    thread.join()
