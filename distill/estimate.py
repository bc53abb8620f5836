"""A rough cost of a run before it starts: parameters, compression, peak CPU memory and time (training, then the
finish: evaluation, latency measurement and export, costed by ``distill.timing``; the memory fixes are in
``distill.fixes``).

Everything here is computed from the config and the teacher's architecture alone (models are built on
the ``meta`` device, so nothing is allocated or downloaded). The figures are estimates for training on
CPU, good to about ±30%: enough to tell a minute from an hour and a gigabyte from ten, not more. Batches
are assumed padded to ``data.max_length`` (the collator pads each batch to its longest text, so real
steps are often cheaper).

Memory (bytes, the peak resident size of the training process)::

    weights     = 4 · trained params + w_t · frozen teacher params    # w_t = 2 for teacher.dtype bfloat16
    optimizer   = 4 · 3 · trained params                   # gradients + AdamW's two moments
    activations = 4 · B · L · (C_s · d_s · S + A) + w_t · B · L · C_t · d_t · T
    attention   = 4 · B · L² · (h_s · S + h_t · mapped)    # only when the attention term is on
    logits      = 4 · (c · V · (3 + 4 [KD kinds]) + B · L · (d_s + d_t [KD kinds]) + V · d_s)   # causal LMs
    peak        = weights + optimizer + activations + attention + logits + RUNTIME_BYTES

A LoRA run (``lora`` set) trains the adapters (rank · (in + out) per adapted layer) and a classifier's
head and pooler; the whole teacher is a frozen weight, and each adapted layer keeps A = its dropped-out input and the
rank-r intermediate per token (the backward still runs through every block, so C_s is unchanged).

Logits of a causal LM: the engine computes the task and output terms in chunks of ``c`` =
min(B · L, ``losses.LM_CHUNK_ELEMENTS`` / V) tokens from the final hidden states (a fused LM-head loss), so
it holds, per chunk, three vocabulary-sized copies for the student (logits, log-probabilities, their
gradient) and in KD kinds four more for the teacher's side (its probabilities and the KL's temporaries),
plus the gradient of the student's final hidden states and the teacher's final hidden states for the whole
batch, and the LM head's gradient (V · d_s) that the fused loss accumulates; never the full B · L · V
logits. The copies are measured on a hand-written chunked step (``bench/logits_memory.py``,
B · L = 2048, V = 49152: 3.1 copies for the task term alone, 7.1 with the KL; an unchunked step holds
about 7 · B · L · V floats), not on the engine's own path, which may hold fewer.

Time (per optimizer step, ``grad_accum`` micro-batches of B · L tokens)::

    FLOPs   = tokens · (6 · student non-embedding params + 2 · teacher non-embedding params [KD kinds])
    seconds = FLOPs / CPU_FLOPS

A causal LM's output projection (V · d, tied or not) counts as non-embedding: every token multiplies it.
A LoRA run costs ``tokens · (4 · N + 6 · adapter params)``: forward and input gradients through the frozen
weights, no weight gradients for them.

The constants are calibrated on the 2-core machine of ``bench/results/engine_step.md``: a ``kd_feature``
step from the MiniLM-L6 teacher (6 × 384, 12 heads) into a 3 × 384 student at batch 32 × 128 takes
1.78 s and peaks at 1859 MB (estimated: 1.80 s, 1804 MB); the 4 × 256 student of the same bench
(1.57 s, 1576 MB) comes out at 1.35 s and 1617 MB.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import psutil
import torch
from transformers import AutoConfig, PretrainedConfig
from transformers.pytorch_utils import Conv1D

from distill.config import KD_KINDS, RunConfig, Task
from distill.layer_map import has_attention, resolve_layer_map
from distill.lora import adapted_layers, head_parameters, meta_model
from distill.losses import LM_CHUNK_ELEMENTS
from distill.students import count_student_parameters, student_config, student_shape
from distill.teachers import Architecture
from distill.timing import CPU_FLOPS, finish_work, non_embedding_count, step_flops_with_validation
from distill.trainer import epoch_steps, total_steps

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

BYTES_PER_DTYPE = {"float32": 4, "bfloat16": 2}
"""Bytes per weight and activation of the frozen teacher, by ``teacher.dtype``."""

LOGITS_COPIES = {"student": 3, "teacher": 4}
"""Vocabulary-sized floats per chunk token for the task term, and added by the KL term (see the module
docstring)."""

RUNTIME_BYTES = 480 * 2**20
"""The training process before any model: Python, torch, transformers, the tokenizer and the encoded data
(the bench's resident size after setup, minus the weights it held)."""


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
    logits_bytes: int
    runtime_bytes: int
    tokens_per_step: int
    flops_per_step: float
    seconds_per_step: float
    total_steps: int
    finish_seconds: dict[str, float]  # evaluating, measuring, exporting (distill.timing)
    caching_seconds: float = 0.0  # building the teacher-output cache before the first step (one teacher pass)

    @property
    def peak_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.optimizer_bytes
            + self.activation_bytes
            + self.attention_bytes
            + self.logits_bytes
            + self.runtime_bytes
        )

    @property
    def training_seconds(self) -> float:
        return self.seconds_per_step * self.total_steps

    @property
    def total_seconds(self) -> float:
        """Caching, training and the finish: what the run takes from its start to its export."""
        return self.caching_seconds + self.training_seconds + sum(self.finish_seconds.values())

    def calibrated(self, ratios: dict[str, float]) -> Estimate:
        """This estimate with its times scaled by measured / analytic ``ratios`` of a similar run (``step_s``
        and each finish phase; ``jobs.models.StepTime.ratios``); parts without a ratio stay analytic."""
        finish = {phase: s * ratios.get(phase, 1.0) for phase, s in self.finish_seconds.items()}
        step = ratios.get("step_s", 1.0)  # the host's speed: it holds for the cache's teacher pass too
        return replace(
            self,
            seconds_per_step=self.seconds_per_step * step,
            finish_seconds=finish,
            caching_seconds=self.caching_seconds * step,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "peak_bytes": self.peak_bytes,
            "training_seconds": self.training_seconds,
            "total_seconds": self.total_seconds,
        }


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


def non_embedding_parameters(config: PretrainedConfig, task: Task = "classification") -> int:
    """Parameters outside the embedding tables: the ones every token multiplies. A causal LM's output
    projection counts even when it is tied to the input embeddings."""
    return non_embedding_count(meta_model(config, task), task == "causal_lm")


def model_parameters(config: PretrainedConfig, task: Task) -> int:
    """Unique parameters of the model a run of ``task`` builds from ``config`` (an LM with its head)."""
    return sum(p.numel() for p in meta_model(config, task).parameters())


def _projection_params(cfg: RunConfig, pairs: int, student_hidden: int, teacher_hidden: int) -> int:
    """The learned d_s -> d_t projections of the feature terms (trained with the student)."""
    if not cfg.needs_features or student_hidden == teacher_hidden:
        return 0
    return pairs * (student_hidden * teacher_hidden + teacher_hidden)


def _lora_cost(cfg: RunConfig, t_config: PretrainedConfig) -> tuple[int, int]:
    """(trained parameters, activation floats per token) of the adapters and the head a LoRA run adds."""
    model = meta_model(t_config, cfg.task)
    layers = adapted_layers(cfg.lora, model)
    params = sum(cfg.lora.rank * sum(m.weight.shape) for m in layers) + head_parameters(model, cfg.task)
    inputs = sum(m.weight.shape[0] if isinstance(m, Conv1D) else m.in_features for m in layers)
    floats = inputs * (cfg.lora.dropout > 0) + cfg.lora.rank * len(layers)  # dropout's copy of x; x · A
    return params, floats


def estimate(
    cfg: RunConfig,
    teacher: Architecture,
    train_size: int,
    *,
    teacher_config: PretrainedConfig | None = None,
    eval_size: int = 0,
    val_size: int = 0,
    cache: Literal["read", "build"] | None = None,
) -> Estimate:
    """The cost of training ``cfg`` on ``train_size`` examples on CPU (see the module docstring), with its
    validations on ``val_size`` examples, and of its finish on ``eval_size`` held-out examples
    (``distill.timing``). A run that reads its teacher's outputs from a ``cache`` has no teacher forward in its
    steps; one that ``build``s the cache first adds one teacher pass over the training split.

    ``teacher_config`` is the teacher's own transformers config when available (exact counts); otherwise
    one is rebuilt from ``teacher`` (for a causal LM that loses ``tie_word_embeddings``, so pass it). The
    config is assumed valid (``students.validate_against``): an unusable layer map or LoRA target raises
    its ``ConfigError``.
    """
    t_config = teacher_config if teacher_config is not None else config_from_architecture(teacher)
    lm = cfg.task == "causal_lm"
    kd = cfg.kind in KD_KINDS
    teacher_params = model_parameters(t_config, cfg.task) if lm else teacher.params
    teacher_nonemb = non_embedding_parameters(t_config, cfg.task)
    teacher_bytes = BYTES_PER_DTYPE[cfg.teacher.dtype]
    batch, length = cfg.optim.batch_size, cfg.data.max_length
    tokens = batch * length
    teacher_activation_bytes = attention_floats = 0
    if cfg.student is None:  # teacher_finetune trains the teacher itself, in fp32
        student_params = compression = None
        hidden = teacher.hidden_size
        activation_floats = STUDENT_ACTIVATION_FLOATS * hidden * teacher.layers
        flop_params = [teacher_nonemb]
        if cfg.lora is None:
            trained, frozen_bytes = teacher_params, 0
            flops = 6 * teacher_nonemb * tokens
        else:
            trained, adapter_floats = _lora_cost(cfg, t_config)
            frozen_bytes = BYTES_PER_FLOAT * teacher_params
            flops = (4 * teacher_nonemb + 6 * trained) * tokens
            activation_floats += adapter_floats
    else:
        s_config = student_config(t_config, cfg.student, teacher, attentions=cfg.needs_attentions)
        student_params = model_parameters(s_config, cfg.task) if lm else count_student_parameters(s_config)
        compression = teacher_params / student_params
        hidden, heads, _ = student_shape(cfg.student, teacher)
        pairs = resolve_layer_map(cfg.student, teacher.layers) if cfg.needs_features else ()
        trained = student_params + _projection_params(cfg, len(pairs), hidden, teacher.hidden_size)
        frozen_bytes = teacher_bytes * teacher_params  # the teacher is loaded for every student kind (init, evaluation)
        student_nonemb = non_embedding_parameters(s_config, cfg.task)
        flops = 6 * student_nonemb * tokens
        flop_params = [student_nonemb, teacher_nonemb]
        activation_floats = STUDENT_ACTIVATION_FLOATS * hidden * cfg.student.layers
        if kd and cache is None:
            flops += 2 * teacher_nonemb * tokens
        if kd:
            teacher_floats = TEACHER_ACTIVATION_FLOATS * teacher.hidden_size * teacher.layers
            teacher_activation_bytes = teacher_bytes * tokens * teacher_floats
        if cfg.needs_attentions:
            mapped = sum(1 for p in pairs if has_attention(p))
            attention_floats = length * (heads * cfg.student.layers + teacher.heads * mapped)
    logits_floats = 0
    if lm:  # the chunked output terms: see the module docstring
        vocab = t_config.vocab_size
        chunk = min(tokens, max(1, LM_CHUNK_ELEMENTS // vocab))  # the engine's own chunk (losses.py)
        copies = LOGITS_COPIES["student"] + (LOGITS_COPIES["teacher"] if kd else 0)
        logits_floats = chunk * vocab * copies
        logits_floats += tokens * (hidden + (teacher.hidden_size if kd else 0))
        logits_floats += vocab * hidden  # the LM head's gradient, accumulated chunk by chunk in the forward
    flops *= cfg.optim.grad_accum
    steps = total_steps(cfg, train_size)
    steps_per_epoch = epoch_steps(cfg, train_size)
    trained_nonemb = flop_params[0]
    step_s = step_flops_with_validation(cfg, flops, steps, steps_per_epoch, val_size, trained_nonemb) / CPU_FLOPS
    return Estimate(
        student_params=student_params,
        teacher_params=teacher_params,
        compression=compression,
        trained_params=trained,
        weights_bytes=BYTES_PER_FLOAT * trained + frozen_bytes,
        optimizer_bytes=BYTES_PER_FLOAT * OPTIMIZER_COPIES * trained,
        activation_bytes=BYTES_PER_FLOAT * tokens * activation_floats + teacher_activation_bytes,
        attention_bytes=BYTES_PER_FLOAT * tokens * attention_floats,
        logits_bytes=BYTES_PER_FLOAT * logits_floats,
        runtime_bytes=RUNTIME_BYTES,
        tokens_per_step=tokens * cfg.optim.grad_accum,
        flops_per_step=float(flops),
        seconds_per_step=step_s,
        total_steps=steps,
        finish_seconds=finish_work(cfg, eval_size, flop_params, student_params or teacher_params).seconds(CPU_FLOPS),
        caching_seconds=2 * teacher_nonemb * length * train_size / CPU_FLOPS if kd and cache == "build" else 0.0,
    )


def available_memory_bytes() -> int:
    """The memory a run can use here: the CUDA device's when one is present, else the RAM available now."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return psutil.virtual_memory().available


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
