"""A rough cost of a run before it starts: parameters, compression, peak CPU memory and time.

Everything here is computed from the config and the teacher's architecture alone (models are built on
the ``meta`` device, so nothing is allocated or downloaded). The figures are estimates for training on
CPU, good to about ±30%: enough to tell a minute from an hour and a gigabyte from ten, not more. Batches
are assumed padded to ``data.max_length`` (the collator pads each batch to its longest text, so real
steps are often cheaper).

Memory (bytes, the peak resident size of the training process)::

    weights     = 4 · (trained params + frozen teacher params)
    optimizer   = 4 · 3 · trained params                   # gradients + AdamW's two moments
    activations = 4 · B · L · (C_s · d_s · S + C_t · d_t · T)
    attention   = 4 · B · L² · (h_s · S + h_t · mapped)    # only when the attention term is on
    peak        = weights + optimizer + activations + attention + RUNTIME_BYTES

Time (per optimizer step, ``grad_accum`` micro-batches of B · L tokens)::

    FLOPs   = tokens · (6 · student non-embedding params + 2 · teacher non-embedding params [KD kinds])
    seconds = FLOPs / CPU_FLOPS

The constants are calibrated on the 2-core machine of ``bench/results/engine_step.md``: a ``kd_feature``
step from the MiniLM-L6 teacher (6 × 384, 12 heads) into a 3 × 384 student at batch 32 × 128 takes
1.78 s and peaks at 1859 MB (estimated: 1.80 s, 1804 MB); the 4 × 256 student of the same bench
(1.57 s, 1576 MB) comes out at 1.35 s and 1617 MB.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig

from distill.config import KD_KINDS, RunConfig
from distill.layer_map import has_attention, resolve_layer_map
from distill.students import count_student_parameters, student_config, student_shape
from distill.teachers import Architecture
from distill.trainer import total_steps

BYTES_PER_FLOAT = 4
"""fp32 weights, gradients, optimizer moments and activations (the CPU default)."""

OPTIMIZER_COPIES = 3
"""Per trained parameter besides its weight: the gradient and AdamW's first and second moments."""

STUDENT_ACTIVATION_FLOATS = 42
"""Floats kept per token, per student block and per hidden unit for the backward pass: q, k, v, the
attention context and output, the feed-forward's 4·d input and output of the GELU, layer norms, residuals
and dropout masks, plus autograd's transient gradient buffers (calibrated on the bench; eager attention
maps are counted separately)."""

TEACHER_ACTIVATION_FLOATS = 2
"""Floats per token, per teacher block and per hidden unit under ``inference_mode``: the mapped hidden
states that the losses keep plus the working set of the block being computed."""

RUNTIME_BYTES = 480 * 2**20
"""The training process before any model: Python, torch, transformers, the tokenizer and the encoded data
(the bench's resident size after setup, minus the weights it held)."""

CPU_FLOPS = 2.229e11 / 1.8
"""Sustained training throughput in FLOP/s of the calibration machine (2 cores, fp32, PyTorch CPU):
the calibration step is 6 · 5.47 M · 4096 + 2 · 10.8 M · 4096 ≈ 2.229e11 FLOPs (student and teacher
non-embedding parameters times 32 × 128 tokens) in 1.8 s, about 1.24e11 FLOP/s."""


@dataclass(frozen=True)
class Estimate:
    """The cost of one run. ``student_params`` and ``compression`` are None for teacher fine-tuning."""

    student_params: int | None
    teacher_params: int
    compression: float | None  # teacher params / student params
    trained_params: int  # the student (with its projections), or the teacher when fine-tuning it
    weights_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    attention_bytes: int
    runtime_bytes: int
    tokens_per_step: int
    flops_per_step: float
    seconds_per_step: float
    total_steps: int

    @property
    def peak_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.optimizer_bytes
            + self.activation_bytes
            + self.attention_bytes
            + self.runtime_bytes
        )

    @property
    def total_seconds(self) -> float:
        return self.seconds_per_step * self.total_steps

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_bytes": self.peak_bytes, "total_seconds": self.total_seconds}


def config_from_architecture(arch: Architecture) -> PretrainedConfig:
    """A transformers config with the teacher's shape, for when its own config.json is not at hand.

    Exact for BERT-like encoders (what ``describe`` reads is what they are built from); other model
    types may differ in details such as token-type embeddings.
    """
    labels = arch.labels or ("LABEL_0", "LABEL_1")
    extra: dict[str, Any] = {}
    if arch.max_positions:
        extra["max_position_embeddings"] = arch.max_positions
    if arch.kv_heads != arch.heads:
        extra["num_key_value_heads"] = arch.kv_heads
    return AutoConfig.for_model(
        arch.model_type,
        num_hidden_layers=arch.layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.heads,
        intermediate_size=arch.intermediate_size,
        vocab_size=arch.vocab_size,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **extra,
    )


def non_embedding_parameters(config: PretrainedConfig) -> int:
    """Parameters of a sequence classifier outside its embedding tables: the ones every token multiplies."""
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() for name, p in model.named_parameters() if "embed" not in name and p is not embedding)


def _projection_params(cfg: RunConfig, pairs: int, student_hidden: int, teacher_hidden: int) -> int:
    """The learned d_s -> d_t projections of the feature terms (trained with the student)."""
    if not cfg.needs_features or student_hidden == teacher_hidden:
        return 0
    return pairs * (student_hidden * teacher_hidden + teacher_hidden)


def estimate(
    cfg: RunConfig, teacher: Architecture, train_size: int, *, teacher_config: PretrainedConfig | None = None
) -> Estimate:
    """The cost of training ``cfg`` on ``train_size`` examples on CPU (see the module docstring).

    ``teacher_config`` is the teacher's own transformers config when available (exact counts); otherwise
    one is rebuilt from ``teacher``. The config is assumed valid (``students.validate_against``): an
    unusable layer map raises its ``ConfigError``.
    """
    t_config = teacher_config if teacher_config is not None else config_from_architecture(teacher)
    teacher_nonemb = non_embedding_parameters(t_config)
    batch, length = cfg.optim.batch_size, cfg.data.max_length
    tokens = batch * length
    activation_floats = 0
    attention_floats = 0
    if cfg.student is None:  # teacher_finetune trains the teacher itself
        student_params = compression = None
        trained = teacher.params
        frozen = 0
        flops = 6 * teacher_nonemb * tokens
        activation_floats = STUDENT_ACTIVATION_FLOATS * teacher.hidden_size * teacher.layers
    else:
        s_config = student_config(t_config, cfg.student, teacher, attentions=cfg.needs_attentions)
        student_params = count_student_parameters(s_config)
        compression = teacher.params / student_params
        hidden, heads, _ = student_shape(cfg.student, teacher)
        pairs = resolve_layer_map(cfg.student, teacher.layers) if cfg.needs_features else ()
        trained = student_params + _projection_params(cfg, len(pairs), hidden, teacher.hidden_size)
        frozen = teacher.params  # the teacher is loaded for every student kind (init, evaluation)
        flops = 6 * non_embedding_parameters(s_config) * tokens
        activation_floats = STUDENT_ACTIVATION_FLOATS * hidden * cfg.student.layers
        if cfg.kind in KD_KINDS:
            flops += 2 * teacher_nonemb * tokens
            activation_floats += TEACHER_ACTIVATION_FLOATS * teacher.hidden_size * teacher.layers
        if cfg.needs_attentions:
            mapped = sum(1 for p in pairs if has_attention(p))
            attention_floats = length * (heads * cfg.student.layers + teacher.heads * mapped)
    flops *= cfg.optim.grad_accum
    return Estimate(
        student_params=student_params,
        teacher_params=teacher.params,
        compression=compression,
        trained_params=trained,
        weights_bytes=BYTES_PER_FLOAT * (trained + frozen),
        optimizer_bytes=BYTES_PER_FLOAT * OPTIMIZER_COPIES * trained,
        activation_bytes=BYTES_PER_FLOAT * tokens * activation_floats,
        attention_bytes=BYTES_PER_FLOAT * tokens * attention_floats,
        runtime_bytes=RUNTIME_BYTES,
        tokens_per_step=tokens * cfg.optim.grad_accum,
        flops_per_step=float(flops),
        seconds_per_step=flops / CPU_FLOPS,
        total_steps=total_steps(cfg, train_size),
    )


def format_bytes(n: float) -> str:
    """``1.9 GB``, ``420 MB``: binary units, as memory is usually shown."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") or n >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 20 min``, ``2 d 4 h``."""
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
