"""The finish's analytic cost (``distill.timing``): what each phase's work grows with; the calibration ratios; the ETA
while the teacher-output cache is built."""

from __future__ import annotations

import pytest

from distill.callbacks import CACHING
from distill.config import parse_config
from distill.timing import DECODE_BYTES_PER_S, Eta, finish_work, ratios


def lm(**generation) -> object:
    raw = {"kind": "kd_feature", "task": "causal_lm", "teacher": {"source": "t"}, "student": {"layers": 2}}
    return parse_config(raw | {"data": {"source": "d", "max_length": 64}, "generation": generation})


def test_generation_costs_a_weights_read_per_step_besides_its_flops():
    scored = finish_work(lm(metrics=["perplexity"]), 100, [10_000_000, 30_000_000], 12_000_000)
    both = finish_work(lm(metrics=["perplexity", "bleu"], samples=64, new_tokens=32), 100, [10_000_000, 30_000_000], 1)
    assert scored.decoding_bytes == 0
    steps = 32 * 1  # 64 samples in one batch of eval_batch_size 64
    assert both.decoding_bytes == 4.0 * 40_000_000 * steps
    assert both.seconds(1e11)["evaluating"] == pytest.approx(
        both.evaluating_flops / 1e11 + both.decoding_bytes / DECODE_BYTES_PER_S
    )
    assert both.evaluating_flops > scored.evaluating_flops  # prompts and continuations are forward passes too


def test_ratios_are_measured_over_analytic_where_both_are_known():
    assert ratios({"step_s": 3.0, "evaluating": 4.0, "measuring": 1.0}, {"step_s": 1.5, "evaluating": 0.0}) == {
        "step_s": 2.0
    }


def test_while_caching_the_eta_is_the_build_then_the_steps_and_the_finish():
    work = finish_work(lm(metrics=["perplexity"]), 100, [10_000_000, 30_000_000], 12_000_000)
    eta = Eta(step_flops=2e9, finish=work, flops_per_s=1e9, caching_flops=5e9)
    eta.update(CACHING, 0, 10)
    finish = sum(work.seconds(1e9).values())
    assert eta.seconds_left(4) == pytest.approx(5.0 + 4 * 2.0 + finish, abs=0.1)  # analytic before a batch
    eta.phase_started -= 3.0  # a batch took 3 s: nine more of them
    eta.update(CACHING, 1, 10)
    assert eta.seconds_left(4) == pytest.approx(27.0 + 8.0 + finish, abs=0.1)
    assert Eta(2e9, work, 1e9).seconds_left(4) is None  # without a build, no ETA before the first step
