"""The trainer callback of the Celery task: stores metric points and progress as training runs.

Points are buffered and written in one bulk insert every ``flush_every`` steps (and at every evaluation
and at the end), so the database sees a few writes per second at most, whatever the step rate.
"""

from __future__ import annotations

import time
from typing import Any

from distill.callbacks import Callback, Control, TrainState
from jobs import services


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
        services.run_progress(
            self.run_id, points, step=state.step, total_steps=state.total_steps, eta_s=self._eta(state)
        )
        self.last_flush = time.monotonic()

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
