"""Config changes that bring a run's estimated peak memory under a budget (the review's memory fixes).

Each kind of fix (smaller batch with accumulation, teacher in bf16, attention term off, shorter length) is
tried from its mildest setting to its strongest, and every candidate is estimated again with
``distill.estimate.estimate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

from distill.config import ConfigError, RunConfig, apply_override, parse_config
from distill.estimate import Estimate, estimate
from distill.teachers import Architecture

MIN_LENGTH = 16
"""The shortest ``data.max_length`` a fix proposes."""


@dataclass(frozen=True)
class Fix:
    """A change to a run's config that lowers its peak memory, and the estimate of the changed run."""

    title: str
    changes: dict[str, Any]  # dotted config paths -> new value, e.g. {"optim.batch_size": 4, "optim.grad_accum": 2}
    estimate: Estimate

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "changes": self.changes, "estimate": self.estimate.as_dict()}


def apply_changes(cfg: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """``cfg`` with each dotted path set to its new value, validated again."""
    data = cfg.model_dump(mode="json")
    for path, value in changes.items():
        apply_override(data, f"{path}={json.dumps(value)}")
    return parse_config(data)


def _candidates(cfg: RunConfig) -> list[list[tuple[str, dict[str, Any]]]]:
    """The settings (title, changes) of each kind of fix that applies to ``cfg``, from the mildest to the
    strongest; kinds cheapest impact first: accumulation keeps the run's results, a bf16 teacher barely
    moves them, dropping the attention term changes the method, a shorter length cuts the data."""
    b, a = cfg.optim.batch_size, cfg.optim.grad_accum
    out = []
    if b > 1:
        settings = [
            (
                f"Batch {b // d} with {a * d} accumulation steps (same effective batch of {a * b})",
                {"optim.batch_size": b // d, "optim.grad_accum": a * d},
            )
            for d in range(2, b + 1)
            if b % d == 0
        ]
        out.append(settings)
    if cfg.student is not None and cfg.teacher.dtype == "float32":
        out.append([("Teacher in bfloat16 (halves its weights)", {"teacher.dtype": "bfloat16"})])
    if cfg.needs_attentions:
        out.append([("Attention term off (no attention maps kept)", {"loss.attention": 0.0})])
    length, lengths = cfg.data.max_length, []
    while (length := length // 2) >= MIN_LENGTH:
        lengths.append((f"Max length {length} (from {cfg.data.max_length}; longer texts are cut)", length))
    if lengths:
        out.append([(title, {"data.max_length": n}) for title, n in lengths])
    return out


def suggest_fixes(
    cfg: RunConfig,
    teacher: Architecture,
    train_size: int,
    budget_bytes: int,
    *,
    teacher_config: PretrainedConfig | None = None,
) -> list[Fix]:
    """Config changes that bring the estimated peak memory of ``cfg`` under ``budget_bytes``; none when it
    already fits.

    One fix per kind that applies (smaller batch with gradient accumulation, teacher in bf16, attention
    term off, shorter max length), each with its mildest setting that fits, or its strongest when none
    does; the fixes that fit come first, cheapest impact first. When no single fix fits, a last fix
    combines the strongest of each. Every fix is re-estimated with :func:`estimate`.
    """

    def measure(changes: dict[str, Any]) -> Estimate | None:
        try:
            changed = apply_changes(cfg, changes)
        except ConfigError:  # e.g. attention off leaves a features_first schedule without features
            return None
        return estimate(changed, teacher, train_size, teacher_config=teacher_config)

    base = estimate(cfg, teacher, train_size, teacher_config=teacher_config)
    if base.peak_bytes <= budget_bytes:
        return []
    fixes: list[Fix] = []
    for settings in _candidates(cfg):
        best = None
        for title, changes in settings:
            est = measure(changes)
            if est is not None and est.peak_bytes < base.peak_bytes:
                best = Fix(title, changes, est)
                if est.peak_bytes <= budget_bytes:
                    break
        if best is not None:
            fixes.append(best)
    fits = [f for f in fixes if f.estimate.peak_bytes <= budget_bytes]
    if not fits and len(fixes) > 1:  # each is at its strongest: try them together
        together = {k: v for f in fixes for k, v in f.changes.items()}
        if (est := measure(together)) is not None:
            fixes.append(Fix("All of these: " + "; ".join(f.title for f in fixes), together, est))
    return fits + [f for f in fixes if f not in fits]
