"""How long the finish of a run takes (evaluation, latency measurement, export), and the run's ETA.

Training time is ``estimate.py``'s (FLOPs per step over the host's FLOP/s); the finish is costed here the same
way, from the work each phase does:

    evaluating = Σ_models 2 · N · (eval examples · L + samples · (prompt + new) [causal LM, generation])
                 + Σ_models 4 · N · new · ⌈samples / eval batch⌉ / DECODE_BYTES_PER_S    # generation steps
    measuring  = Σ_models Σ_B (warm-up + repeats) · 2 · N · B · L      # B in metrics.LATENCY_BATCH_SIZES
    exporting  = trained params · 4 bytes / EXPORT_BYTES_PER_S + EXPORT_FIXED_S

(N: the model's non-embedding parameters, L: ``data.max_length``), in seconds at ``flops_per_s``; a step also
carries its share of the validations during training (2 · N · validation examples · L each). Measured
runs calibrate both: a worker's record of a run (``jobs.models.StepTime``) keeps the ratio of each measured
phase to its analytic cost, and a new estimate multiplies by the nearest record's ratios. During a run,
:class:`Eta` turns the same model into a live ETA: the training steps left at the measured step rate, the
current phase at its own measured rate, and the later phases at their analytic cost scaled by how fast this
host turned out to be. Models are duck-typed: a ``meta`` model (the review) counts as a real one (a run).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from distill.callbacks import CACHING, EVALUATING, EXPORTING, FINISH_PHASES, MEASURING, TRAINING
from distill.config import RunConfig
from distill.metrics import LATENCY_BATCH_SIZES, latency_warmup

CPU_FLOPS = 2.229e11 / 1.8
"""Sustained training throughput in FLOP/s of the calibration machine (2 cores, fp32, PyTorch CPU):
the calibration step is 6 · 5.47 M · 4096 + 2 · 10.8 M · 4096 ≈ 2.229e11 FLOPs (student and teacher
non-embedding parameters times 32 × 128 tokens) in 1.8 s, about 1.24e11 FLOP/s."""

EXPORT_BYTES_PER_S = 150e6
"""Safetensors written per second, with the tokenizer and the model card (a local disk)."""

DECODE_BYTES_PER_S = 5e9
"""Weights read per second by a generation step (one token for a whole batch: bound by memory, not FLOPs)."""

EXPORT_FIXED_S = 1.0
"""The export's cost besides the weights: tokenizer files, model card, config."""


@dataclass(frozen=True)
class FinishWork:
    """What the finish computes: FLOPs of the evaluation and the latency passes, bytes exported."""

    evaluating_flops: float
    measuring_flops: float
    exporting_bytes: float
    decoding_bytes: float = 0.0  # weights read by the continuation task's generation steps (causal LMs)

    def seconds(self, flops_per_s: float) -> dict[str, float]:
        """Each finish phase's analytic seconds on a host of ``flops_per_s``."""
        return {
            EVALUATING: self.evaluating_flops / flops_per_s + self.decoding_bytes / DECODE_BYTES_PER_S,
            MEASURING: self.measuring_flops / flops_per_s,
            EXPORTING: self.exporting_bytes / EXPORT_BYTES_PER_S + EXPORT_FIXED_S,
        }


def finish_work(cfg: RunConfig, eval_examples: int, model_flop_params: list[int], trained_params: int) -> FinishWork:
    """The finish of ``cfg`` on ``eval_examples`` held-out examples (texts, or token windows for a causal LM),
    for models with ``model_flop_params`` non-embedding parameters each (the trained model, and the teacher
    of a student run), exporting ``trained_params`` fp32 weights."""
    length, n = cfg.data.max_length, sum(model_flop_params)
    tokens, decoding = eval_examples * length, 0.0
    if cfg.task == "causal_lm":
        gen = cfg.generation
        tokens = tokens if "perplexity" in gen.metrics else 0
        if set(gen.metrics) - {"perplexity"}:
            tokens += gen.samples * (gen.prompt_tokens + gen.new_tokens)
            steps = gen.new_tokens * math.ceil(gen.samples / cfg.eval_batch_size)
            decoding = 4.0 * n * steps  # every step reads each model's weights once
    passes = (latency_warmup(cfg.latency_repeats) + cfg.latency_repeats) * sum(LATENCY_BATCH_SIZES) * length
    return FinishWork(2.0 * n * tokens, 2.0 * n * passes, 4.0 * trained_params, decoding)


def non_embedding_count(model: Any, causal_lm: bool) -> int:
    """Parameters of ``model`` (a real or a ``meta`` transformers model) outside its embedding tables: the ones
    every token multiplies. A causal LM's output projection counts even when tied to the input embeddings."""
    embedding = model.get_input_embeddings().weight
    n = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name and p is not embedding)
    output = model.get_output_embeddings() if causal_lm else None
    if output is not None and output.weight is embedding:
        n += embedding.numel()
    return n


def step_flops(tokens_per_step: int, trained_params: int, teacher_params: int = 0) -> float:
    """FLOPs of one optimizer step: forward and backward of the trained model (6 · N per token), the frozen
    teacher's forward (2 · N) in KD kinds (pass 0 otherwise)."""
    return float(tokens_per_step * (6 * trained_params + 2 * teacher_params))


def step_flops_with_validation(
    cfg: RunConfig, flops: float, total_steps: int, steps_per_epoch: int, val_examples: int, trained_params: int
) -> float:
    """``flops`` of one step plus its share of the validations during training (the trained model's forward on
    ``val_examples`` every ``eval_every`` steps, by default each epoch, and at the last step): a short run
    spends much of its time there."""
    every = cfg.eval_every or steps_per_epoch or max(total_steps, 1)
    validations = total_steps // every + (total_steps % every != 0)
    per_validation = 2.0 * trained_params * val_examples * cfg.data.max_length
    return flops + validations * per_validation / max(total_steps, 1)


def ratios(measured: dict[str, float], analytic: dict[str, float]) -> dict[str, float]:
    """Measured / analytic seconds of each part both hold (``step_s`` and the finish phases): how a similar
    run's estimate is calibrated (``estimate.Estimate.calibrated``)."""
    return {k: v / analytic[k] for k, v in measured.items() if analytic.get(k)}


class Eta:
    """The seconds left in a run, from what it measured so far (see the module docstring).

    ``step_flops`` are the analytic FLOPs of one optimizer step, ``finish`` the finish's work and
    ``caching_flops`` those of building the teacher-output cache first (0: no build); the trainer calls
    :meth:`step` at each step end and :meth:`update` at each phase report, then reads :meth:`seconds_left`, and
    :meth:`end` once the export is written."""

    def __init__(self, step_flops: float, finish: FinishWork, flops_per_s: float, caching_flops: float = 0.0):
        self.step_flops, self.finish, self.flops_per_s = step_flops, finish, flops_per_s
        self.caching_flops = caching_flops
        self.phase, self.done, self.total = TRAINING, 0, 0
        self.phase_started = time.perf_counter()
        self.step_s: float | None = None  # measured seconds per optimizer step
        self.finish_scale = 1.0  # measured / analytic seconds of the finish phases done so far
        self.finished: dict[str, float] = {}  # finish phase -> measured seconds

    def step(self, steps_done: int, elapsed_s: float) -> None:
        """Training has done ``steps_done`` steps in ``elapsed_s`` seconds (across resumes)."""
        if steps_done:
            self.step_s = elapsed_s / steps_done

    def update(self, phase: str, done: int, total: int) -> None:
        """``phase`` has done ``done`` of ``total`` units (as ``Callback.on_phase`` reports it)."""
        now = time.perf_counter()
        if phase != self.phase:
            if self.phase in FINISH_PHASES:
                self.finished[self.phase] = now - self.phase_started
                analytic = sum(self._analytic()[p] for p in self.finished)
                self.finish_scale = sum(self.finished.values()) / analytic if analytic > 0 else 1.0
            self.phase_started = now
        self.phase, self.done, self.total = phase, done, total

    def end(self) -> dict[str, dict[str, float]]:
        """The run is done: its ``measured`` seconds per step (``step_s``) and per finish phase, beside their
        ``analytic`` figures at ``flops_per_s`` (what an estimate computes): a record to calibrate estimates."""
        self.update("", 0, 0)
        analytic = {"step_s": self.step_flops / self.flops_per_s, **self.finish.seconds(self.flops_per_s)}
        return {"measured": ({"step_s": self.step_s} if self.step_s else {}) | self.finished, "analytic": analytic}

    def _analytic(self) -> dict[str, float]:
        """The finish phases' seconds at the host's speed: measured by training when it has stepped."""
        speed = self.step_flops / self.step_s if self.step_s else self.flops_per_s
        return self.finish.seconds(speed)

    def seconds_left(self, steps_left: int) -> float | None:
        """Seconds to the end of the run with ``steps_left`` optimizer steps to go; None before any measure."""
        analytic = self._analytic()
        if self.phase == CACHING:  # before the first step: the build at its measured rate, then steps and finish
            caching = self._current_phase_left(self.caching_flops / self.flops_per_s)
            step_s = self.step_s or self.step_flops / self.flops_per_s  # measured when resumed, else analytic
            return caching + steps_left * step_s + sum(analytic.values())
        if self.phase in FINISH_PHASES:
            current = self._current_phase_left(analytic[self.phase] * self.finish_scale)
            later = FINISH_PHASES[FINISH_PHASES.index(self.phase) + 1 :]
            return current + sum(analytic[p] * self.finish_scale for p in later)
        if self.step_s is None:
            return None
        return steps_left * self.step_s + sum(analytic.values()) * self.finish_scale

    def _current_phase_left(self, planned_s: float) -> float:
        """The rest of the current phase (caching or one of the finish): at its measured rate once a unit is done,
        else as planned."""
        spent = time.perf_counter() - self.phase_started
        if self.done and self.total:
            return spent / self.done * (self.total - self.done)
        return max(planned_s - spent, 0.0)
