"""The Celery task's view of training: ``RunMonitor`` records, publishes, heartbeats and cancels.

- Points are buffered and written in one bulk insert every ``flush_every_s`` seconds (and at every
  evaluation and at the end), so the database sees a few writes per second at most, whatever the step rate.
  Each batch, once stored, is published to the run's watchers (``jobs.events``) with the run's status;
  publishing is best effort: without Redis training goes on, the database keeps every point, and pages
  backfill when their socket reconnects.
- A heartbeat thread stamps the run every ``heartbeat_s`` seconds, also while the trainer is busy outside
  its steps (loading, evaluating, exporting); a run whose stamp goes stale was lost with its worker
  (``services.runs_interrupt``). Each beat and each flush read the cancel flag: the next step end then asks
  the trainer to stop, and the trainer checkpoints before it returns.
- A few lines go to the run's log: start or resume, every tenth of the run, each evaluation, a stop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection

from distill.callbacks import Callback, Control, TrainState
from jobs import events, services

log = logging.getLogger(__name__)

# Points kept for publishing while Redis is down (~ 1 MB of JSON). Beyond that the oldest are dropped from
# the live stream only: they are stored, and a page that reconnects backfills them from the database.
MAX_UNPUBLISHED = 20_000


class RunMonitor(Callback):
    """Use as ``with RunMonitor(run.id, run.team_id) as monitor: train(cfg, [monitor], resume=True)``."""

    def __init__(self, run_id: int, team_id: int, flush_every_s: float = 1.0, heartbeat_s: float | None = None) -> None:
        self.run_id = run_id
        self.team_id = team_id
        self.flush_every_s = flush_every_s
        self.heartbeat_s = settings.KDWEB_HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.buffer: list[tuple[str, int, float]] = []  # to store
        self.unpublished: list[tuple[str, int, float]] = []  # stored, not yet sent to the watchers
        self.last_flush = time.monotonic()
        self.next_log_step = math.inf  # set when training begins
        self.stop_requested = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name=f"heartbeat-run-{run_id}", daemon=True)

    # --- heartbeat -----------------------------------------------------------------------------------

    def __enter__(self) -> RunMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _heartbeat(self) -> None:
        try:
            while not self._done.is_set():
                try:
                    if services.run_heartbeat(self.run_id):
                        self.stop_requested.set()
                except Exception:  # the database may be back at the next beat; training goes on meanwhile
                    log.exception("heartbeat of run %s not stored", self.run_id)
                    connection.close()  # a broken connection is not reused
                self._done.wait(self.heartbeat_s)
        finally:
            connection.close()  # this thread's own connection

    # --- storing and publishing ------------------------------------------------------------------------

    def _eta(self, state: TrainState) -> float | None:
        return state.elapsed_s / state.step * (state.total_steps - state.step) if state.step else None

    def flush(self, state: TrainState) -> None:
        points, self.buffer = self.buffer, []
        eta_s = self._eta(state)
        if services.run_progress(self.run_id, points, step=state.step, total_steps=state.total_steps, eta_s=eta_s):
            self.stop_requested.set()  # read at every flush too: a cancel takes effect within a second
        self.last_flush = time.monotonic()
        self.unpublished.extend(points)
        del self.unpublished[:-MAX_UNPUBLISHED]
        self.publish(state, eta_s)

    def publish(self, state: TrainState, eta_s: float | None) -> None:
        """The points not yet published and the progress, to the run's watchers.

        Points whose send failed (Redis down) go out with the next batch, so open pages keep a complete
        chart through a Redis restart; failures are logged, never raised."""
        status: events.StatusEvent = {
            "type": "status",
            "run_id": self.run_id,
            "status": "running",
            "progress": min(max(state.progress, 0.0), 1.0),
            "eta_s": eta_s,
            "step": state.step,
            "total_steps": state.total_steps,
            "cancel_requested": self.stop_requested.is_set(),
        }
        try:
            if self.unpublished:
                metrics: events.MetricsEvent = {
                    "type": "metrics",
                    "points": [
                        {"name": n, "step": s, "value": float(v) if math.isfinite(v) else None}
                        for n, s, v in self.unpublished
                    ],
                }
                if not events.run_event_send(self.run_id, metrics):
                    return  # Redis is down: the status would fail too
                self.unpublished = []
            events.run_event_send(self.run_id, status, team_id=self.team_id)
        except Exception:  # a bad payload must not stop training either: its points are stored
            log.exception("live events of run %s not published", self.run_id)
            self.unpublished = []

    def say(self, line: str) -> None:
        """A line in the run's log; like publishing, never a reason to stop training."""
        try:
            services.run_log(self.run_id, line)
        except Exception:
            log.exception("log line of run %s not stored: %s", self.run_id, line)

    # --- trainer hooks ---------------------------------------------------------------------------------

    def on_train_begin(self, state: TrainState, control: Control) -> None:
        if state.step:
            self.say(f"resumed from the checkpoint at step {state.step} / {state.total_steps}")
        else:
            self.say(f"training {state.total_steps} steps")
        self.next_log_step = state.step + max(state.total_steps // 10, 1)
        self.flush(state)

    def on_step_end(self, state: TrainState, control: Control, logs: dict[str, float]) -> None:
        self.buffer.extend((name, state.step, value) for name, value in logs.items())
        if self.stop_requested.is_set() and not control.should_stop:
            control.should_stop = True  # the trainer checkpoints this step, then returns
            self.say(f"stopping at step {state.step}: saving a checkpoint")
        if state.step >= self.next_log_step:
            self.next_log_step += max(state.total_steps // 10, 1)
            rate = state.step / state.elapsed_s if state.elapsed_s else 0.0
            self.say(
                f"step {state.step} / {state.total_steps} · loss {logs.get('loss/total', math.nan):.4f}"
                f" · {rate:.1f} steps/s"
            )
        if time.monotonic() - self.last_flush >= self.flush_every_s:
            self.flush(state)

    def on_evaluate(self, state: TrainState, control: Control, metrics: dict[str, Any]) -> None:
        scores = {name: value for name, value in metrics.items() if isinstance(value, float)}
        self.buffer.extend((f"val/{name}", state.step, value) for name, value in scores.items())
        self.flush(state)
        self.say(f"step {state.step} · validation " + " · ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        if state.step >= state.total_steps:  # what comes next takes a while and logs no steps
            self.say("training done: evaluating the trained model and the teacher, measuring latency, exporting")

    def on_save(self, state: TrainState, control: Control) -> None:
        self.flush(state)  # stored points never lag the checkpoint: a resume would skip the missing steps

    def on_train_end(self, state: TrainState, control: Control, result: Any) -> None:
        self.flush(state)

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        try:  # the points of the steps before the error are part of its story
            self.flush(state)
        except Exception:  # and must not hide the error itself (the database may be what failed)
            log.exception("points of run %s not stored after %s", self.run_id, type(exc).__name__)
