"""The trainer callback of the Celery task: stores metric points and progress as training runs.

Points are buffered and written in one bulk insert every ``flush_every_s`` seconds (and at every evaluation
and at the end), so the database sees a few writes per second at most, whatever the step rate. Each batch,
once stored, is published to the run's watchers (``jobs.events``) with the run's status; publishing is best
effort: without Redis training goes on, the database keeps every point, and pages backfill on reconnect.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from distill.callbacks import Callback, Control, TrainState
from jobs import events, services

log = logging.getLogger(__name__)


class RecordProgress(Callback):
    def __init__(self, run_id: int, flush_every_s: float = 1.0):
        self.run_id = run_id
        self.flush_every_s = flush_every_s
        self.buffer: list[tuple[str, int, float]] = []
        self.last_flush = time.monotonic()

    def _eta(self, state: TrainState) -> float | None:
        return state.elapsed_s / state.step * (state.total_steps - state.step) if state.step else None

    def flush(self, state: TrainState) -> None:
        points, self.buffer = self.buffer, []
        eta_s = self._eta(state)
        services.run_progress(self.run_id, points, step=state.step, total_steps=state.total_steps, eta_s=eta_s)
        self.last_flush = time.monotonic()
        self.publish(points, state, eta_s)

    def publish(self, points: list[tuple[str, int, float]], state: TrainState, eta_s: float | None) -> None:
        """The batch just stored and the progress, to the run's watchers; failures are logged, never raised."""
        status: events.StatusEvent = {
            "type": "status",
            "status": "running",
            "progress": min(max(state.progress, 0.0), 1.0),
            "eta_s": eta_s,
            "step": state.step,
            "total_steps": state.total_steps,
        }
        try:
            if points:
                metrics: events.MetricsEvent = {
                    "type": "metrics",
                    "points": [
                        {"name": n, "step": s, "value": float(v) if math.isfinite(v) else None} for n, s, v in points
                    ],
                }
                events.run_event_send(self.run_id, metrics)
            events.run_event_send(self.run_id, status)
        except Exception:  # a bad payload must not stop training either: its points are stored
            log.exception("live events of run %s not published", self.run_id)

    def on_train_begin(self, state: TrainState, control: Control) -> None:
        self.flush(state)

    def on_step_end(self, state: TrainState, control: Control, logs: dict[str, float]) -> None:
        self.buffer.extend((name, state.step, value) for name, value in logs.items())
        if time.monotonic() - self.last_flush >= self.flush_every_s:
            self.flush(state)

    def on_evaluate(self, state: TrainState, control: Control, metrics: dict[str, Any]) -> None:
        self.buffer.extend(
            (f"val/{name}", state.step, value) for name, value in metrics.items() if isinstance(value, float)
        )
        self.flush(state)

    def on_train_end(self, state: TrainState, control: Control, result: Any) -> None:
        self.flush(state)
