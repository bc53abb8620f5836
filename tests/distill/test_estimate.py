"""distill.estimate: parameter counts agree with the engine's and peft's, the cost model hits its calibration,
and the suggested fixes really bring a run under its memory budget."""

from __future__ import annotations

import psutil
import pytest
import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

from distill.config import parse_config
from distill.estimate import (
    BYTES_PER_FLOAT,
    CPU_FLOPS,
    OPTIMIZER_COPIES,
    RUNTIME_BYTES,
    STUDENT_ACTIVATION_FLOATS,
    TEACHER_ACTIVATION_FLOATS,
    available_memory_bytes,
    config_from_architecture,
    estimate,
    format_bytes,
    format_duration,
    model_parameters,
    non_embedding_parameters,
)
from distill.lora import apply_lora, trainable_parameters
from distill.losses import LM_CHUNK_ELEMENTS
from distill.students import count_student_parameters, student_config
from distill.teachers import Architecture, count_parameters_from_config, describe
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


def test_a_cached_run_has_no_teacher_forward_and_a_building_one_adds_a_teacher_pass(tiny):
    t_config, arch = tiny
    live = estimate(config("kd_logits"), arch, 100, teacher_config=t_config)
    read = estimate(config("kd_logits"), arch, 100, teacher_config=t_config, cache="read")
    built = estimate(config("kd_logits"), arch, 100, teacher_config=t_config, cache="build")
    no_kd = estimate(config("no_kd"), arch, 100, teacher_config=t_config, cache="build")
    assert read.flops_per_step == built.flops_per_step == no_kd.flops_per_step < live.flops_per_step
    teacher_pass = 2 * non_embedding_parameters(t_config) * 128 * 100
    assert read.caching_seconds == no_kd.caching_seconds == 0.0 and built.caching_seconds > 0.0
    assert built.caching_seconds == pytest.approx(teacher_pass / CPU_FLOPS)
    assert built.total_seconds == pytest.approx(read.total_seconds + built.caching_seconds)
    assert built.calibrated({"step_s": 2.0}).caching_seconds == pytest.approx(2 * built.caching_seconds)


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
    assert accum.training_seconds == pytest.approx(accum.seconds_per_step * accum.total_steps)
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


def tiny_llama(tied: bool = True) -> LlamaConfig:
    """A Llama with grouped-query attention (4 query heads, 2 key/value heads) and a 64-token vocabulary."""
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4)
    return LlamaConfig(
        vocab_size=64, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tied, **shape
    )


def lm_config(kind: str = "kd_logits", batch: int = 8, length: int = 32, **sections) -> object:
    data = {"source": "d", "max_length": length}
    return config(kind, student={"layers": 2}, task="causal_lm", data=data, optim={"batch_size": batch}, **sections)


def test_it_counts_lora_adapters_and_the_head_as_trained(tiny, assets):
    t_config, arch = tiny  # 4 blocks of width 32, 2 labels
    cfg = config("teacher_finetune", lora={"rank": 8, "dropout": 0.1})
    est = estimate(cfg, arch, 100, teacher_config=t_config)
    # rank 8 on query and value (32 -> 32) of 4 blocks; the pooler and the head trained in full
    trained = 4 * 2 * 8 * (32 + 32) + (32 * 32 + 32) + (32 * 2 + 2)
    assert est.trained_params == trained
    model = AutoModelForSequenceClassification.from_pretrained(assets["teacher"])
    assert trainable_parameters(apply_lora(model, cfg.lora, "classification")) == trained  # what peft trains
    assert est.weights_bytes == BYTES_PER_FLOAT * (arch.params + trained)  # the frozen model stays fp32
    assert est.optimizer_bytes == BYTES_PER_FLOAT * OPTIMIZER_COPIES * trained
    # per token: the blocks' activations, and per adapted layer its dropped-out input and x · A
    adapters = 8 * (32 + 8)
    assert est.activation_bytes == BYTES_PER_FLOAT * 32 * 128 * (STUDENT_ACTIVATION_FLOATS * 32 * 4 + adapters)
    assert est.flops_per_step == (4 * non_embedding_parameters(t_config) + 6 * trained) * 32 * 128
    assert est.logits_bytes == 0
    full = estimate(config("teacher_finetune"), arch, 100, teacher_config=t_config)
    assert est.optimizer_bytes < full.optimizer_bytes / 5 and est.seconds_per_step < full.seconds_per_step


def test_it_halves_the_frozen_teacher_in_bfloat16(tiny):
    t_config, arch = tiny
    fp32 = estimate(config("kd_logits"), arch, 100, teacher_config=t_config)
    bf16 = estimate(
        config("kd_logits", teacher={"source": "t", "dtype": "bfloat16"}), arch, 100, teacher_config=t_config
    )
    assert fp32.weights_bytes - bf16.weights_bytes == 2 * arch.params
    # the teacher's kept activations: 2 floats per token, block and unit, at 2 bytes instead of 4
    assert fp32.activation_bytes - bf16.activation_bytes == 2 * 32 * 128 * TEACHER_ACTIVATION_FLOATS * 32 * 4
    assert fp32.optimizer_bytes == bf16.optimizer_bytes


def test_it_estimates_a_causal_lm_with_its_chunked_logits():
    t_config = tiny_llama()
    arch = describe(t_config)
    est = estimate(lm_config(), arch, 1000, teacher_config=t_config)
    torch.manual_seed(0)
    assert est.teacher_params == sum(p.numel() for p in LlamaForCausalLM(t_config).parameters())
    s_config = student_config(t_config, lm_config().student, arch, attentions=False)
    assert s_config.num_key_value_heads == 2
    assert est.student_params == sum(p.numel() for p in LlamaForCausalLM(s_config).parameters())
    # 8 x 32 = 256 tokens, one chunk: 3 vocabulary-sized copies (64 tokens) for the student, 4 for the
    # teacher's side, plus the student's hidden-state gradients, the teacher's final hidden states and the
    # student's LM-head gradient (64 x 32)
    assert est.logits_bytes == BYTES_PER_FLOAT * (256 * 64 * (3 + 4) + 256 * (32 + 32) + 64 * 32)
    no_kd = estimate(lm_config("no_kd"), arch, 1000, teacher_config=t_config)
    assert no_kd.logits_bytes == BYTES_PER_FLOAT * (256 * 64 * 3 + 256 * 32 + 64 * 32)
    # 4096 x 64 tokens: the chunk stops at the engine's LM_CHUNK_ELEMENTS / V rows, the hidden-state terms do not
    big = estimate(lm_config(batch=4096, length=64), arch, 1000, teacher_config=t_config)
    tokens, chunk = 4096 * 64, LM_CHUNK_ELEMENTS // 64
    assert chunk < tokens
    assert big.logits_bytes == BYTES_PER_FLOAT * (chunk * 64 * (3 + 4) + tokens * (32 + 32) + 64 * 32)
    assert big.peak_bytes == sum(
        getattr(big, f"{k}_bytes") for k in ("weights", "optimizer", "activation", "attention", "logits", "runtime")
    )


def test_it_counts_a_tied_lm_head_in_every_tokens_work():
    tied, untied = tiny_llama(tied=True), tiny_llama(tied=False)
    assert non_embedding_parameters(tied, "causal_lm") == non_embedding_parameters(untied, "causal_lm")
    assert model_parameters(untied, "causal_lm") - model_parameters(tied, "causal_lm") == 64 * 32
    est = estimate(lm_config("teacher_finetune"), describe(tied), 100, teacher_config=tied)
    assert est.flops_per_step == 6 * non_embedding_parameters(tied, "causal_lm") * 8 * 32


def test_it_estimates_lora_on_a_causal_lm_without_a_head():
    t_config = tiny_llama()
    cfg = config("teacher_finetune", task="causal_lm", lora={"rank": 4}, data={"source": "d", "max_length": 32})
    est = estimate(cfg, describe(t_config), 100, teacher_config=t_config)
    # q_proj 32 -> 32 and v_proj 32 -> 16 (2 key/value heads of 8) in 4 blocks; the LM head stays frozen
    assert est.trained_params == 4 * (4 * (32 + 32) + 4 * (32 + 16))


def test_it_reports_the_memory_available_here():
    available = available_memory_bytes()
    assert (
        0
        < available
        <= (
            torch.cuda.get_device_properties(0).total_memory
            if torch.cuda.is_available()
            else psutil.virtual_memory().total
        )
    )


def test_it_adds_the_finish_to_the_time(tiny):
    """Evaluation grows with the held-out set, latency measurement with its repeats; both are in the total."""
    _, arch = tiny
    small = estimate(config(), arch, 1000, eval_size=100)
    large = estimate(config(), arch, 1000, eval_size=1000)
    repeats = estimate(config(latency_repeats=100), arch, 1000, eval_size=100)
    assert large.finish_seconds["evaluating"] == pytest.approx(10 * small.finish_seconds["evaluating"])
    assert large.finish_seconds["measuring"] == small.finish_seconds["measuring"]
    assert repeats.finish_seconds["measuring"] > 5 * small.finish_seconds["measuring"]
    assert small.finish_seconds["exporting"] > 0
    assert small.total_seconds == pytest.approx(small.training_seconds + sum(small.finish_seconds.values()))


def test_a_step_carries_its_share_of_the_validations(tiny):
    """A validation every ``eval_every`` steps (and at the last) costs a forward pass per validation example."""
    _, arch = tiny
    plain = estimate(config(optim={"max_steps": 10}), arch, 1000)
    assert estimate(config(optim={"max_steps": 10}), arch, 1000, val_size=0) == plain
    twice = estimate(config(optim={"max_steps": 10}, eval_every=5), arch, 1000, val_size=100)
    every = estimate(config(optim={"max_steps": 10}, eval_every=1), arch, 1000, val_size=100)
    larger = estimate(config(optim={"max_steps": 10}, eval_every=5), arch, 1000, val_size=200)
    added = twice.seconds_per_step - plain.seconds_per_step
    assert added > 0 and twice.flops_per_step == plain.flops_per_step  # the step itself is unchanged
    assert every.seconds_per_step - plain.seconds_per_step == pytest.approx(5 * added)  # 10 validations, not 2
    assert larger.seconds_per_step - plain.seconds_per_step == pytest.approx(2 * added)
