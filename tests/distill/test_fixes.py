"""The memory fixes of an over-budget run (``distill.fixes``): which apply, mildest first, each re-estimated."""

from __future__ import annotations

from distill.estimate import RUNTIME_BYTES, estimate
from distill.fixes import MIN_LENGTH, apply_changes, suggest_fixes
from tests.distill.test_estimate import config


def test_it_suggests_nothing_when_the_run_fits(tiny):
    t_config, arch = tiny
    cfg = config()
    est = estimate(cfg, arch, 100, teacher_config=t_config)
    assert suggest_fixes(cfg, arch, 100, est.peak_bytes, teacher_config=t_config) == []


def test_it_suggests_each_applicable_fix_cheapest_first(tiny):
    t_config, arch = tiny
    cfg = config()  # kd_feature with the attention term, fp32 teacher, batch 32 x 128
    base = estimate(cfg, arch, 100, teacher_config=t_config)
    fixes = suggest_fixes(cfg, arch, 100, base.peak_bytes - 1, teacher_config=t_config)
    assert [f.changes for f in fixes] == [
        {"optim.batch_size": 16, "optim.grad_accum": 2},  # the mildest setting of each kind that fits
        {"teacher.dtype": "bfloat16"},
        {"loss.attention": 0.0},
        {"data.max_length": 64},
    ]
    assert fixes[0].title == "Batch 16 with 2 accumulation steps (same effective batch of 32)"
    for fix in fixes:  # each really re-estimated, and under the budget
        assert fix.estimate == estimate(apply_changes(cfg, fix.changes), arch, 100, teacher_config=t_config)
        assert fix.estimate.peak_bytes < base.peak_bytes
    assert fixes[0].estimate.tokens_per_step == base.tokens_per_step


def test_it_offers_only_the_fixes_a_run_can_use(tiny):
    t_config, arch = tiny

    def kinds(cfg) -> list[set[str]]:
        budget = estimate(cfg, arch, 100, teacher_config=t_config).peak_bytes - 1
        return [set(f.changes) for f in suggest_fixes(cfg, arch, 100, budget, teacher_config=t_config)]

    batch, length = {"optim.batch_size", "optim.grad_accum"}, {"data.max_length"}
    assert kinds(config("teacher_finetune")) == [batch, length]  # no frozen teacher, no attention term
    assert kinds(config("kd_logits")) == [batch, {"teacher.dtype"}, length]
    assert kinds(config(teacher={"source": "t", "dtype": "bfloat16"}, loss={"attention": 0})) == [batch, length]
    single = config(optim={"batch_size": 1}, data={"source": "d", "max_length": 16})
    assert kinds(single) == [{"teacher.dtype"}, {"loss.attention"}]
    # without the attention term, a features_first schedule would have nothing to start with
    first = config(loss={"feature": 0, "schedule": "features_first"})
    assert {"loss.attention"} not in kinds(first)


def test_it_picks_the_mildest_setting_that_fits(tiny):
    _, arch = tiny
    cfg = config()
    by_batch = {b: estimate(apply_changes(cfg, {"optim.batch_size": b}), arch, 100).peak_bytes for b in (16, 8)}
    fixes = suggest_fixes(cfg, arch, 100, (by_batch[16] + by_batch[8]) // 2)
    assert fixes[0].changes == {"optim.batch_size": 8, "optim.grad_accum": 4}


def test_it_goes_as_far_as_it_can_when_nothing_fits(tiny):
    t_config, arch = tiny
    cfg = config()
    fixes = suggest_fixes(cfg, arch, 100, RUNTIME_BYTES, teacher_config=t_config)  # below any run
    strongest = [f.changes for f in fixes[:-1]]
    assert strongest == [
        {"optim.batch_size": 1, "optim.grad_accum": 32},
        {"teacher.dtype": "bfloat16"},
        {"loss.attention": 0.0},
        {"data.max_length": MIN_LENGTH},
    ]
    together = fixes[-1]
    assert together.title.startswith("All of these: Batch 1 with 32")
    assert together.changes == {k: v for c in strongest for k, v in c.items()}
    assert together.estimate.peak_bytes < min(f.estimate.peak_bytes for f in fixes[:-1])
