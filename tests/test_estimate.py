"""distill.estimate: parameter counts agree with the engine's, and the cost model hits its calibration."""

from __future__ import annotations

import pytest

from distill.config import parse_config
from distill.estimate import (
    BYTES_PER_FLOAT,
    RUNTIME_BYTES,
    config_from_architecture,
    estimate,
    format_bytes,
    format_duration,
    non_embedding_parameters,
)
from distill.students import count_student_parameters, student_config
from distill.teachers import Architecture, count_parameters_from_config, describe, load_config
from distill.trainer import total_steps


def minilm() -> Architecture:
    """MiniLM-L6 with a 2-label head, as `distill inspect` describes the packaged teacher."""
    shape = dict(model_type="bert", layers=6, hidden_size=384, heads=12, kv_heads=12, intermediate_size=1536)
    arch = Architecture(**shape, vocab_size=30522, params=0, labels=("neg", "pos"), max_positions=512)
    params = count_parameters_from_config(config_from_architecture(arch))
    return Architecture(**{**arch.as_dict(), "params": params})


def config(kind: str = "kd_feature", student: dict | None = None, **sections) -> object:
    raw = {"kind": kind, "teacher": {"source": "t"}, "data": {"source": "d", "max_length": 128}, **sections}
    if kind != "teacher_finetune":
        raw["student"] = student or {"layers": 3}
    return parse_config(raw)


@pytest.fixture
def tiny(assets):
    t_config = load_config(str(assets["teacher"]))
    return t_config, describe(t_config)


def test_it_reproduces_the_calibration_step():
    # bench/results/engine_step.md: 3 x 384 student of MiniLM-L6, batch 32 x 128, 1.78 s and 1859 MB
    est = estimate(config(student={"layers": 3, "init": "teacher"}), minilm(), train_size=10_201)
    assert est.seconds_per_step == pytest.approx(1.8, abs=0.02)
    assert est.peak_bytes / 2**20 == pytest.approx(1859, rel=0.1)
    assert est.tokens_per_step == 32 * 128


def test_it_stays_near_the_second_bench_case():
    student = {"layers": 4, "hidden_size": 256, "heads": 4, "intermediate_size": 1024, "init": "random"}
    est = estimate(config(student=student), minilm(), train_size=10_201)
    assert est.seconds_per_step == pytest.approx(1.57, rel=0.2)
    assert est.peak_bytes / 2**20 == pytest.approx(1576, rel=0.1)


def test_it_counts_the_student_like_the_engine(tiny):
    t_config, arch = tiny
    cfg = config(student={"layers": 2, "hidden_size": 16, "heads": 2, "init": "random"})
    est = estimate(cfg, arch, train_size=100, teacher_config=t_config)
    expected = count_student_parameters(student_config(t_config, cfg.student, arch, attentions=True))
    assert est.student_params == expected
    assert est.teacher_params == arch.params
    assert est.compression == pytest.approx(arch.params / expected)
    # the learned 16 -> 32 projections of the 3 uniform pairs (with embeddings) are trained too
    assert est.trained_params == expected + 3 * (16 * 32 + 32)


def test_it_rebuilds_an_exact_config_from_the_architecture(tiny):
    t_config, arch = tiny
    rebuilt = config_from_architecture(arch)
    assert count_parameters_from_config(rebuilt) == arch.params
    assert non_embedding_parameters(rebuilt) == non_embedding_parameters(t_config)
    cfg = config(student={"layers": 3})
    assert estimate(cfg, arch, 100).student_params == estimate(cfg, arch, 100, teacher_config=t_config).student_params


def test_it_uses_the_trainers_step_count(tiny):
    _, arch = tiny
    cfg = config(optim={"epochs": 2, "batch_size": 16, "grad_accum": 2})
    # ceil(1000 / 16) micro-batches x 2 epochs / 2 accumulated
    assert estimate(cfg, arch, train_size=1000).total_steps == total_steps(cfg, 1000) == 63
    capped = config(optim={"max_steps": 7})
    assert estimate(capped, arch, train_size=1000).total_steps == 7


def test_it_counts_attention_maps_only_when_the_term_is_on(tiny):
    _, arch = tiny  # 4 blocks, 4 heads
    est = estimate(config(student={"layers": 2, "heads": 2, "hidden_size": 32}), arch, 100)
    # student: 2 blocks x 2 heads; teacher: the 2 mapped blocks (uniform) x 4 heads
    assert est.attention_bytes == BYTES_PER_FLOAT * 32 * 128 * 128 * (2 * 2 + 2 * 4)
    assert estimate(config(loss={"attention": 0.0}), arch, 100).attention_bytes == 0
    assert estimate(config("kd_logits"), arch, 100).attention_bytes == 0


def test_it_charges_the_teacher_forward_to_kd_kinds_only(tiny):
    t_config, arch = tiny
    no_kd = estimate(config("no_kd"), arch, 100, teacher_config=t_config)
    kd = estimate(config("kd_logits"), arch, 100, teacher_config=t_config)
    assert kd.flops_per_step - no_kd.flops_per_step == 2 * non_embedding_parameters(t_config) * 32 * 128
    assert kd.seconds_per_step > no_kd.seconds_per_step
    assert kd.weights_bytes == no_kd.weights_bytes  # the teacher is loaded either way


def test_it_estimates_teacher_finetuning_without_a_student(tiny):
    t_config, arch = tiny
    est = estimate(config("teacher_finetune"), arch, 100, teacher_config=t_config)
    assert est.student_params is None and est.compression is None
    assert est.trained_params == arch.params
    assert est.weights_bytes == BYTES_PER_FLOAT * arch.params
    assert est.optimizer_bytes == 3 * BYTES_PER_FLOAT * arch.params
    assert est.flops_per_step == 6 * non_embedding_parameters(t_config) * 32 * 128
    assert est.peak_bytes > RUNTIME_BYTES


def test_it_scales_time_with_accumulation_and_length(tiny):
    _, arch = tiny
    base = estimate(config(), arch, 1000)
    accum = estimate(config(optim={"grad_accum": 2}), arch, 1000)
    assert accum.flops_per_step == pytest.approx(2 * base.flops_per_step)
    assert accum.total_steps == base.total_steps // 2 + base.total_steps % 2
    assert accum.total_seconds == pytest.approx(accum.seconds_per_step * accum.total_steps)
    short = estimate(config(data={"source": "d", "max_length": 64}), arch, 1000)
    assert short.seconds_per_step == pytest.approx(base.seconds_per_step / 2)
    assert short.activation_bytes == base.activation_bytes // 2


@pytest.mark.parametrize(
    ("n", "text"), [(512, "512 B"), (3 * 2**20, "3.0 MB"), (420 * 2**20, "420 MB"), (1.9 * 2**30, "1.9 GB")]
)
def test_it_formats_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(4.2, "5 s"), (600, "10 min"), (3 * 3600 + 20 * 60, "3 h 20 min"), (7200, "2 h"), (50 * 3600, "2 d 2 h")],
)
def test_it_formats_durations(seconds, text):
    assert format_duration(seconds) == text
