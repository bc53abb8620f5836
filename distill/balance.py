"""How the loss terms of a run balance on its first real batch, before anything is trained.

:func:`first_batch_terms` builds the run's models exactly as training does, takes the first batch training
would take, and returns each term's unweighted value, its weight and its share of the weighted total;
:func:`balance_warnings` says when one term dominates the objective or a term is not a finite number (the
review step of the web wizard shows both, and ``python -m distill.balance <config.yaml>`` prints them).
"""

from __future__ import annotations

import argparse
import json
import math
from functools import partial
from typing import Any

import torch

from distill.config import KD_KINDS, RunConfig, load_config

DOMINANCE_LIMIT = 0.9  # a term above this share of the weighted total leaves the others almost no gradient


def shares(values: dict[str, float], weights: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """``{term: {"value", "weight", "share"}}`` for the terms with a weight above 0; ``share`` is the term's part
    of the weighted total, None when a value or the total is not a finite positive number."""
    parts = {t: weights[t] * v for t, v in values.items() if weights.get(t, 0.0)}
    total = sum(parts.values())
    finite = math.isfinite(total) and total > 0
    return {t: {"value": values[t], "weight": weights[t], "share": parts[t] / total if finite else None} for t in parts}


@torch.no_grad()
def first_batch_terms(cfg: RunConfig) -> dict[str, dict[str, float | None]]:
    """Each loss term of ``cfg`` on the first training batch, with the weights of the first step (see
    :func:`shares`). The student is in eval mode (no dropout), so the same config gives the same numbers."""
    # imported here: the web process reads the shares and warnings without the training stack
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from distill.distiller import teacher_forward
    from distill.trainer import EpochBatches, build_models, encode_split, load_task_data, task_collate, total_steps

    set_seed(cfg.seed)
    data = load_task_data(cfg)
    m = build_models(cfg, data.labels)
    split = encode_split(cfg, data, "train", m.tokenizer)
    sampler = EpochBatches(len(split), cfg.optim.batch_size, cfg.seed)
    loader = DataLoader(
        split, batch_sampler=sampler, collate_fn=partial(task_collate(cfg), pad_token_id=m.tokenizer.pad_token_id)
    )
    batch = next(iter(loader))
    weights = cfg.loss_weights(0, total_steps(cfg, len(split)))
    distiller = m.distiller.eval()
    teacher = None
    if cfg.kind in KD_KINDS:
        teacher = teacher_forward(m.teacher, batch, distiller.pairs, distiller.attentions)
    loss = distiller(batch, teacher, weights)
    return shares({t: float(v) for t, v in loss.terms.items()}, weights)


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
    args = parser.parse_args(argv)
    terms = first_batch_terms(load_config(args.config, args.set))
    report = {"terms": terms, "warnings": balance_warnings(terms)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
