"""How a run starts, before anything is trained: its loss terms on the first real batch, and the seconds its
first optimizer steps take.

:func:`first_steps` builds the run's models exactly as training does, takes the batches training would take,
and returns each term's unweighted value, its weight and its share of the weighted total on the first batch,
then times a few real training steps (a throwaway copy of the optimizer state: nothing is saved);
:func:`balance_warnings` says when one term dominates the objective or a term is not a finite number. The web
wizard's review shows both (the measured step time calibrates its estimate when no earlier run on the queue
does), and ``python -m distill.balance <config.yaml>`` prints them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from functools import partial
from itertools import cycle
from typing import Any

import torch

from distill.config import KD_KINDS, RunConfig, load_config

DOMINANCE_LIMIT = 0.9  # a term above this share of the weighted total leaves the others almost no gradient
TIMED_STEPS = 8  # at most this many optimizer steps are timed, after one untimed warm-up step (allocations)
TIMED_MIN_STEPS = 2  # at least this many, however long they take
TIMED_BUDGET_S = 10.0  # no new step is started once the timed ones took this long


def shares(values: dict[str, float], weights: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """``{term: {"value", "weight", "share"}}`` for the terms with a weight above 0; ``share`` is the term's part
    of the weighted total, None when a value or the total is not a finite positive number."""
    parts = {t: weights[t] * v for t, v in values.items() if weights.get(t, 0.0)}
    total = sum(parts.values())
    finite = math.isfinite(total) and total > 0
    return {t: {"value": values[t], "weight": weights[t], "share": parts[t] / total if finite else None} for t in parts}


@dataclass(frozen=True)
class FirstSteps:
    """The terms on the first batch (see :func:`shares`); the measured seconds per optimizer step (None when none
    was timed) beside the analytic model's seconds for the same step (``distill.timing.CPU_FLOPS``): their
    ratio calibrates an estimate as a finished run's record does."""

    terms: dict[str, dict[str, float | None]]
    step_s: float | None
    analytic_step_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_steps(cfg: RunConfig, timed_steps: int = TIMED_STEPS) -> FirstSteps:
    """The loss terms of ``cfg`` on the first training batch, with the weights of the first step, then the time
    of up to ``timed_steps`` training steps after a warm-up one (none with 0): steps go on while they took less
    than ``TIMED_BUDGET_S`` in all, and the median step counts (batches differ in length, a step may stall). The
    terms are computed in eval mode (no dropout), so the same config gives the same numbers."""
    # imported here: the web process reads the shares and warnings without the training stack
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    from distill.distiller import teacher_forward
    from distill.timing import CPU_FLOPS
    from distill.trainer import (
        EpochBatches,
        build_models,
        encode_split,
        load_task_data,
        make_optimizer,
        run_step_flops,
        task_collate,
        total_steps,
        training_step,
    )

    set_seed(cfg.seed)
    data = load_task_data(cfg)
    m = build_models(cfg, data.labels)
    split = encode_split(cfg, data, "train", m.tokenizer)
    sampler = EpochBatches(len(split), cfg.optim.batch_size, cfg.seed)
    loader = DataLoader(
        split, batch_sampler=sampler, collate_fn=partial(task_collate(cfg), pad_token_id=m.tokenizer.pad_token_id)
    )
    batches = cycle(loader)
    batch = next(batches)
    weights = cfg.loss_weights(0, total_steps(cfg, len(split)))
    teacher = m.teacher if cfg.kind in KD_KINDS else None
    with torch.no_grad():
        t_out = teacher_forward(teacher, batch, m.distiller.pairs, m.distiller.attentions) if teacher else None
        loss = m.distiller.eval()(batch, t_out, weights)
    terms = shares({t: float(v) for t, v in loss.terms.items()}, weights)
    flops = run_step_flops(cfg, m)[0]
    if not timed_steps:
        return FirstSteps(terms, None, flops / CPU_FLOPS)

    accelerator = Accelerator(
        mixed_precision=cfg.optim.mixed_precision, gradient_accumulation_steps=cfg.optim.grad_accum
    )
    optimizer = make_optimizer(cfg, m.distiller)
    distiller, optimizer, scheduler = accelerator.prepare(
        m.distiller.train(), optimizer, get_scheduler("constant", optimizer)
    )
    micro = cfg.optim.grad_accum

    def step() -> None:
        for _ in range(micro):
            training_step(
                accelerator, distiller, teacher, next(batches), weights, optimizer, scheduler, cfg.optim.max_grad_norm
            )

    step()  # warm-up
    times: list[float] = []
    while len(times) < timed_steps and (len(times) < TIMED_MIN_STEPS or sum(times) < TIMED_BUDGET_S):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return FirstSteps(terms, statistics.median(times), flops / CPU_FLOPS)


def first_batch_terms(cfg: RunConfig) -> dict[str, dict[str, float | None]]:
    """Each loss term of ``cfg`` on the first training batch (:func:`first_steps` with no step timed)."""
    return first_steps(cfg, timed_steps=0).terms


def balance_warnings(terms: dict[str, dict[str, float | None]], limit: float = DOMINANCE_LIMIT) -> list[str]:
    """Plain sentences about what makes the objective unbalanced: a term that is NaN or infinite, or one
    whose weighted share is above ``limit`` while other terms are weighted too."""
    out = [
        f"the {t} term is {v['value']} on the first batch" for t, v in terms.items() if not math.isfinite(v["value"])
    ]
    if len(terms) > 1:
        out += [
            f"the {t} term is {v['share']:.1%} of the weighted total: the other terms barely train"
            for t, v in terms.items()
            if v["share"] is not None and v["share"] > limit
        ]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a run config (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    parser.add_argument(
        "--timed-steps",
        type=int,
        default=TIMED_STEPS,
        choices=range(21),
        metavar="0-20",
        help="training steps to time (0: none)",
    )
    args = parser.parse_args(argv)
    first = first_steps(load_config(args.config, args.set), args.timed_steps)
    report = first.as_dict() | {"warnings": balance_warnings(first.terms)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
