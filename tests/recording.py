"""Test helpers that watch the trainer through its callbacks, as the Celery task and the CLI do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.callbacks import Callback, StopAtStep
from distill.config import parse_config
from distill.trainer import TrainResult, train


class Recorder(Callback):
    """Records every event, the logs of each step and each validation's metrics."""

    def __init__(self):
        self.events: list[str] = []
        self.logs: list[dict[str, float]] = []
        self.evaluations: list[dict[str, Any]] = []

    def on_train_begin(self, state, control):
        self.events.append("train_begin")

    def on_step_end(self, state, control, logs):
        self.events.append(f"step_end:{state.step}")
        self.logs.append(logs)

    def on_evaluate(self, state, control, metrics):
        self.events.append(f"evaluate:{state.step}")
        self.evaluations.append(metrics)

    def on_save(self, state, control):
        self.events.append(f"save:{state.step}")

    def on_train_end(self, state, control, result):
        self.events.append("train_end")

    def on_exception(self, state, exc):
        self.events.append(f"exception:{type(exc).__name__}")


def assert_resume_is_bit_exact(config: dict[str, Any], tmp_path: Path, stop_at: int = 3) -> TrainResult:
    """Train ``config`` straight through, and again stopped after step ``stop_at`` then resumed from its
    checkpoint: the resumed run continues at the next step and logs exactly the straight run's values (same
    batches, dropout, optimizer and scheduler state). Returns the stopped run's result."""
    straight = Recorder()
    train(parse_config({**config, "output_dir": str(tmp_path / "straight")}), [straight])
    split = {**config, "output_dir": str(tmp_path / "split")}
    first, second = Recorder(), Recorder()
    stopped = train(parse_config(split), [first, StopAtStep(stop_at)])
    assert stopped.stopped and stopped.state.step == stop_at
    assert not train(parse_config(split), [second], resume=True).stopped
    assert next(e for e in second.events if e.startswith("step_end")) == f"step_end:{stop_at + 1}"
    assert first.logs + second.logs == straight.logs
    return stopped
