"""The trainer's progress protocol: callbacks read ``TrainState`` and steer only through ``Control``.

A trimmed version of transformers' ``trainer_callback.py``. The Celery task, the CLI's progress bar and
the tests all observe training through these hooks; cancelling sets ``control.should_stop``, and the
trainer then checkpoints and returns cleanly. After training, the finish (evaluation, latency measurement,
export) has no step to stop at: there ``on_phase`` reports its progress, and a stop request raises
``StopRequested`` inside it, which the trainer turns into a stopped result (the final checkpoint stays, so a
resume redoes only the finish).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainState:
    """Where training is; saved with every checkpoint as JSON.

    Args:
        step: optimizer steps done.
        total_steps: optimizer steps planned.
        epoch: the epoch in progress (0-based).
        batches_in_epoch: micro-batches of ``epoch`` already consumed (to resume mid-epoch).
        elapsed_s: training seconds so far, across resumes.
        metrics: the latest evaluation, name -> value.
        eta_s: seconds left to the end of the run, the finish included (``distill.timing.Eta``); None until
            the first step or finish phase has been timed.
    """

    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    elapsed_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> TrainState:
        return cls(**json.loads(path.read_text()))


# What the trainer is doing, as ``on_phase`` reports it.
TRAINING, VALIDATING, EVALUATING = "training", "validating", "evaluating"
MEASURING, EXPORTING = "measuring", "exporting"
CACHING = "caching"  # building the teacher-output cache, before the first step
PHASES = (CACHING, TRAINING, VALIDATING, EVALUATING, MEASURING, EXPORTING)
FINISH_PHASES = (EVALUATING, MEASURING, EXPORTING)  # after the last step: a stop ends them at once
STOPPABLE_PHASES = (CACHING, *FINISH_PHASES)  # a stop ends them at once (training stops at a step's end)


class StopRequested(Exception):
    """A callback asked to stop during the finish; the trainer returns a stopped result."""

    def __init__(self, phase: str):
        super().__init__(f"stop requested while {phase}")
        self.phase = phase


@dataclass
class Control:
    """Flags a callback may set; the trainer reads them after each hook."""

    should_stop: bool = False


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    def on_train_begin(self, state: TrainState, control: Control) -> None:
        """Training is set up (and resumed, if it was); ``state.total_steps`` is known."""

    def on_step_end(self, state: TrainState, control: Control, logs: dict[str, float]) -> None:
        """An optimizer step finished; ``logs`` holds each unweighted loss term, the total and the lr."""

    def on_evaluate(self, state: TrainState, control: Control, metrics: dict[str, Any]) -> None:
        """An evaluation finished."""

    def on_phase(self, state: TrainState, control: Control, phase: str, done: int, total: int) -> None:
        """``phase`` (one of ``PHASES``) has done ``done`` of its ``total`` units (batches, timed passes,
        files); called as it starts (``done`` 0) and after each unit. A stop requested here ends a finish
        phase at once (``StopRequested``); during training the trainer stops at the step's end as usual."""

    def on_teacher_cache(self, state: TrainState, control: Control, manifest: Any) -> None:
        """The run reads its teacher's outputs from the cache ``manifest`` describes
        (:class:`distill.teacher_cache.Manifest`), found or just built, instead of running the teacher."""

    def on_save(self, state: TrainState, control: Control) -> None:
        """A checkpoint of ``state.step`` is about to be written. A resumed run restarts after that step, so
        anything a callback keeps of the steps so far (stored points) must be made durable here."""

    def on_train_end(self, state: TrainState, control: Control, result: Any) -> None:
        """Training ended, by finishing or by a stop request; ``result`` is the TrainResult."""

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        """Training raised; the exception propagates after the callbacks ran."""


class CallbackHandler:
    """Calls one hook on every callback, in order."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks
        self.control = Control()

    def call(self, event: str, state: TrainState, *args: Any) -> Control:
        for cb in self.callbacks:
            getattr(cb, event)(state, self.control, *args)
        return self.control

    def exception(self, state: TrainState, exc: BaseException) -> None:
        for cb in self.callbacks:
            cb.on_exception(state, exc)


class StopAtStep(Callback):
    """Requests a stop once ``step`` is reached (tests and benchmarks use it to interrupt a run)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, state: TrainState, control: Control, logs: dict[str, float]) -> None:
        if state.step >= self.step:
            control.should_stop = True
