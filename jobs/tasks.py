"""Celery tasks: interfaces that fetch by id and call the engine and the services, nothing more."""

from __future__ import annotations

import logging
import socket
import traceback

from celery import shared_task

from distill.config import parse_config
from distill.trainer import train
from jobs import services
from jobs.progress import RecordProgress

log = logging.getLogger(__name__)


@shared_task(bind=True, name="jobs.run_execute")
def run_execute(self, run_id: int) -> None:
    """Train one run. The database claim makes a redelivered message a no-op."""
    run = services.run_claim(run_id, host=socket.gethostname(), task_id=self.request.id or "")
    if run is None:
        log.info("run %s is not queued any more; nothing to do", run_id)
        return
    try:  # once claimed, the run must end succeeded or failed: nothing else would move it on
        cfg = parse_config({**run.config, "output_dir": str(services.run_output_dir(run))})
        result = train(cfg, [RecordProgress(run.id)])
        services.run_succeed(run.id, result.as_dict())
    except Exception as exc:
        log.exception("run %s failed", run_id)
        services.run_fail(run.id, f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
