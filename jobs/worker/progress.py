"""The Celery task's view of training: ``RunMonitor`` records, publishes, heartbeats and cancels.

- The training thread only appends each step's points (and the odd log line) to a buffer. The monitor's own
  thread stores them in one transaction every ``flush_every_s`` seconds and publishes what was stored to the
  run's watchers (``jobs.live.events``) with the run's status, so neither a slow database nor Redis holds a step
  up. Evaluations, checkpoints and the end store on the training thread (a checkpoint is written only once
  the points before it are stored: a resumed run starts after it) and wake the monitor to publish.
- Only the monitor's thread talks to Redis, on an event loop of its own: one connection for the whole run,
  where each ``async_to_sync`` call would open a new one. A batch that could not be stored stays buffered for
  the next try; what could not be published (Redis down) goes out with the next batch, so open pages keep a
  complete chart, and pages that reconnect backfill from the database.
- The same thread heartbeats the run when it has nothing to store, every ``heartbeat_s`` seconds, and every
  ``flush_every_s`` while the trainer's phase moves (validating, evaluating, measuring, exporting: the run
  shows its phase and the progress within it); a run whose stamp goes stale was lost with its worker
  (``services.runs_interrupt``). The ETA is the trainer's (``TrainState.eta_s``, ``distill.timing.Eta``): the
  steps left, then each finish phase, so a run in its finish shows the time its evaluation, latency measurement
  and export still take. Every write reads the cancel flag: the next step end then asks the trainer
  to stop, and the trainer checkpoints before it returns; in the finish, its next phase report stops it.
- Every write goes through ``jobs.worker.retry.retrying``: a dropped database connection is reopened and the write
  tried again (for up to ``KDWEB_DB_RETRY_S``), the points of the steps meanwhile kept in the buffer, so the
  run goes on; a checkpoint waits until the points before it are stored.
- A few lines go to the run's log: start or resume, every tenth of the run, each evaluation, a stop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.db import connection

from distill.callbacks import CACHING, STOPPABLE_PHASES, TRAINING, Callback, Control, TrainState
from distill.estimate import format_bytes
from jobs import services
from jobs.live import events
from jobs.worker.retry import retrying

log = logging.getLogger(__name__)

# Points kept for publishing while Redis is down (~ 1 MB of JSON). Beyond that the oldest are dropped from
# the live stream only: they are stored, and a page that reconnects backfills them from the database.
MAX_UNPUBLISHED = 20_000


def cache_text(manifest: Any) -> str:
    """A teacher-output cache as a run's log names it: its key's start, size, examples, who built it and when
    (``distill.teacher_cache.Manifest``; no server path)."""
    return (
        f"{manifest.key[:12]} ({format_bytes(manifest.bytes)}, {manifest.examples:,} examples, "
        f"built by {manifest.built_by} at {manifest.created})"
    )


class RunMonitor(Callback):
    """Use as ``with RunMonitor(run.id, run.team_id) as monitor: train(cfg, [monitor], resume=True)``."""

    def __init__(self, run_id: int, team_id: int, flush_every_s: float = 1.0, heartbeat_s: float | None = None) -> None:
        self.run_id = run_id
        self.team_id = team_id
        self.flush_every_s = flush_every_s
        self.heartbeat_s = settings.KDWEB_HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.buffer: list[tuple[str, int, float]] = []  # to store
        self.lines: list[str] = []  # log lines to store
        # Stored, not yet sent to the watchers: points, log lines, and the status of the last store.
        self.unpublished: list[tuple[str, int, float]] = []
        self.unpublished_lines: list[tuple[int, str]] = []  # (id, text)
        self.status: events.StatusEvent | None = None
        self.latest: TrainState | None = None  # the state at the last step end, for the thread's flushes
        self.phase = services.Phase("", 0.0)  # what the trainer does now
        self.stored_phase = self.phase
        self.last_write = time.monotonic()
        self.next_log_step = math.inf  # set when training begins
        self.stop_requested = threading.Event()
        self._buffer_lock = threading.Lock()  # appends and swaps only: the training thread never waits long
        self._flush_lock = threading.Lock()  # one store at a time, so batches are published in step order
        self._wake = threading.Event()  # something was stored: publish it now
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._background, name=f"monitor-run-{run_id}", daemon=True)

    # --- the monitor's thread -----------------------------------------------------------------------------

    def __enter__(self) -> RunMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._wake.set()
        self._thread.join()  # it stores and publishes what is left first

    def _background(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while True:
                self._wake.wait(self.flush_every_s)
                self._wake.clear()
                done = self._done.is_set()
                self._store_or_heartbeat()
                loop.run_until_complete(self._publish())
                if done:
                    return
        finally:
            loop.close()  # channels-redis closes its connections of this loop
            connection.close()  # this thread's own database connection

    def _store_or_heartbeat(self) -> None:
        try:
            if (self.buffer or self.lines) and self.latest is not None:
                self.flush(self.latest)
            elif self.phase != self.stored_phase or time.monotonic() - self.last_write >= self.heartbeat_s:
                phase, latest = self.phase, self.latest
                eta = latest.eta_s if latest is not None else None
                if retrying(services.run_heartbeat, self.run_id, phase, eta):
                    self.stop_requested.set()
                self.last_write, self.stored_phase = time.monotonic(), phase
                if latest is not None:
                    with self._buffer_lock:
                        self.status = self._status(latest, phase)
        except Exception:  # the database may be back at the next try; training goes on meanwhile
            log.exception("points or heartbeat of run %s not stored", self.run_id)
            connection.close()  # a broken connection is not reused

    # --- storing and publishing ------------------------------------------------------------------------

    def flush(self, state: TrainState) -> None:
        """Store the buffered points, log lines and the progress, and queue them for publishing. A batch that
        cannot be stored goes back to the buffer and the error propagates (the caller logs it or, at a
        checkpoint, fails)."""
        with self._flush_lock:
            with self._buffer_lock:
                points, self.buffer = self.buffer, []
                lines, self.lines = self.lines, []
            phase = self.phase
            try:
                stored = retrying(
                    services.run_progress,
                    self.run_id,
                    points,
                    step=state.step,
                    total_steps=state.total_steps,
                    eta_s=state.eta_s,
                    lines=lines,
                    phase=phase,
                )
            except Exception:
                with self._buffer_lock:
                    self.buffer[:0] = points
                    self.lines[:0] = lines
                raise
            if stored.stop:
                self.stop_requested.set()
            self.last_write, self.stored_phase = time.monotonic(), phase
            status = self._status(state, phase)
            with self._buffer_lock:
                self.unpublished.extend(points)
                del self.unpublished[:-MAX_UNPUBLISHED]
                self.unpublished_lines.extend(stored.lines)
                self.status = status
        if threading.current_thread() is not self._thread:
            self._wake.set()

    def _status(self, state: TrainState, phase: services.Phase) -> events.StatusEvent:
        """The status event of what was just stored."""
        return {
            "type": "status",
            "run_id": self.run_id,
            "status": "running",
            "progress": min(max(state.progress, 0.0), 1.0),
            "eta_s": state.eta_s,
            "step": state.step,
            "total_steps": state.total_steps,
            "cancel_requested": self.stop_requested.is_set(),
            "phase": phase.name,
            "phase_progress": min(max(phase.progress, 0.0), 1.0),
        }

    async def _publish(self) -> None:
        """Send what was stored and not yet published: points, log lines, then the latest status.

        What a failed send (Redis down) leaves unsent goes out with the next batch, so open pages keep a
        complete chart through a Redis restart; failures are logged, never raised."""
        with self._buffer_lock:
            points, self.unpublished = self.unpublished, []
            lines, self.unpublished_lines = self.unpublished_lines, []
            status, self.status = self.status, None
        sent = {"points": not points, "lines": not lines, "status": status is None}
        try:
            if points:
                metrics: events.MetricsEvent = {
                    "type": "metrics",
                    "points": [
                        {"name": n, "step": s, "value": float(v) if math.isfinite(v) else None} for n, s, v in points
                    ],
                }
                sent["points"] = await events.run_event_publish(self.run_id, metrics)
            if lines and sent["points"]:  # Redis is down otherwise: the rest would fail too
                sent["lines"] = await events.run_event_publish(self.run_id, events.log_event(lines))
            if status is not None and sent["points"] and sent["lines"]:
                sent["status"] = await events.run_event_publish(self.run_id, status, team_id=self.team_id)
        except Exception:  # a bad payload must not stop training either: what it carried is stored
            log.exception("live events of run %s not published", self.run_id)
            return
        with self._buffer_lock:  # newer batches were queued meanwhile: the unsent ones go first
            if not sent["points"]:
                self.unpublished[:0] = points
                del self.unpublished[:-MAX_UNPUBLISHED]
            if not sent["lines"]:
                self.unpublished_lines[:0] = lines
            if not sent["status"] and self.status is None:
                self.status = status

    def say(self, line: str) -> None:
        """A line in the run's log, stored and published with the next batch of points."""
        with self._buffer_lock:
            self.lines.append(line)

    # --- trainer hooks ---------------------------------------------------------------------------------

    def on_train_begin(self, state: TrainState, control: Control) -> None:
        if state.step:
            self.say(f"resumed from the checkpoint at step {state.step} / {state.total_steps}")
        else:
            self.say(f"training {state.total_steps} steps")
        self.next_log_step = state.step + max(state.total_steps // 10, 1)
        self.latest = replace(state)
        self.flush(state)

    def on_step_end(self, state: TrainState, control: Control, logs: dict[str, float]) -> None:
        with self._buffer_lock:
            self.buffer.extend((name, state.step, value) for name, value in logs.items())
        self.latest = replace(state)  # a copy: the trainer goes on changing its own
        self.phase = services.Phase(TRAINING, state.progress)
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

    def on_evaluate(self, state: TrainState, control: Control, metrics: dict[str, Any]) -> None:
        scores = {name: value for name, value in metrics.items() if isinstance(value, float)}
        with self._buffer_lock:
            self.buffer.extend((f"val/{name}", state.step, value) for name, value in scores.items())
        self.say(f"step {state.step} · validation " + " · ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        if state.step >= state.total_steps:  # what comes next takes a while and logs no steps
            self.say("training done: evaluating the trained model and the teacher, measuring latency, exporting")
        self.flush(state)

    def on_phase(self, state: TrainState, control: Control, phase: str, done: int, total: int) -> None:
        self.phase = services.Phase(phase, done / total if total else 0.0)
        self.latest = replace(state)  # with the ETA of this report (the finish's moves without steps)
        if phase in STOPPABLE_PHASES and self.stop_requested.is_set() and not control.should_stop:
            control.should_stop = True  # the trainer stops the phase at once
            if phase == CACHING:  # before the first step: nothing is lost but the outputs computed so far
                self.say("stopping while caching the teacher's outputs: a resume starts the cache again")
            else:  # the final checkpoint stays
                self.say(f"stopping while {phase}: the final checkpoint stays, a resume redoes the finish")

    def on_teacher_cache(self, state: TrainState, control: Control, manifest: Any) -> None:
        self.say(f"teacher outputs from the cache {cache_text(manifest)}")

    def on_save(self, state: TrainState, control: Control) -> None:
        self.flush(state)  # stored points never lag the checkpoint: a resume would skip the missing steps

    def on_train_end(self, state: TrainState, control: Control, result: Any) -> None:
        self.flush(state)

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        try:  # the points of the steps before the error are part of its story
            self.flush(state)
        except Exception:  # and must not hide the error itself (the database may be what failed)
            log.exception("points of run %s not stored after %s", self.run_id, type(exc).__name__)
