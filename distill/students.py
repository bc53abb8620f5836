"""Build a student from the teacher's config: fewer and/or narrower blocks, same tokenizer.

Initialisation ``teacher`` copies the embeddings, the head and, for each student block, the teacher block
it is mapped to (DistilBERT-style; unmapped blocks take the uniform choice). It needs the teacher's width;
``random`` works for any shape.
"""

from __future__ import annotations

import re

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel

from distill.config import ConfigError, LayerPair, RunConfig, StudentConfig
from distill.features import block_prefixes
from distill.layer_map import resolve_layer_map, spread_blocks
from distill.teachers import Architecture, count_parameters_from_config, is_causal_lm

# Config keys that hold attention-probability dropout in the architectures transformers ships.
_ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def student_shape(student: StudentConfig, teacher: Architecture) -> tuple[int, int, int]:
    """(hidden, heads, intermediate) with the teacher's values where the config leaves them out."""
    hidden = student.hidden_size or teacher.hidden_size
    heads = student.heads or teacher.heads
    intermediate = student.intermediate_size or (
        teacher.intermediate_size if hidden == teacher.hidden_size else 4 * hidden
    )
    return hidden, heads, intermediate


def student_kv_heads(student: StudentConfig, teacher: Architecture) -> int:
    """Key/value heads: the configured count, else the teacher's grouping (query heads per kv head) kept
    when it divides the student's heads, else one kv head per query head."""
    if student.kv_heads:
        return student.kv_heads
    _, heads, _ = student_shape(student, teacher)
    group = teacher.heads // teacher.kv_heads
    return heads // group if heads % group == 0 else heads


def _student_errors(student: StudentConfig, teacher: Architecture) -> list[tuple[str, str]]:
    errors = []
    hidden, heads, _ = student_shape(student, teacher)
    if hidden % heads:
        errors.append(("student.heads", f"hidden size {hidden} is not divisible by {heads} heads"))
    if student.kv_heads is not None:
        if teacher.kv_heads == teacher.heads and student.kv_heads != heads:
            message = f"the teacher ({teacher.model_type}) has no grouped-query attention: leave kv_heads out"
            errors.append(("student.kv_heads", message))
        elif heads % student.kv_heads:
            errors.append(("student.kv_heads", f"{student.kv_heads} kv heads do not divide {heads} query heads"))
    if student.init == "teacher" and hidden != teacher.hidden_size:
        message = f"cannot copy teacher layers into width {hidden} (the teacher's is {teacher.hidden_size}); "
        errors.append(("student.init", message + "use init: random"))
    if student.init == "teacher" and student.layers > teacher.layers:
        errors.append(("student.layers", f"{student.layers} blocks but the teacher has {teacher.layers}"))
    return errors


def validate_against(cfg: RunConfig, teacher: Architecture) -> tuple[LayerPair, ...]:
    """Checks that need the teacher's architecture; returns the resolved layer map (empty for fine-tuning)."""
    errors: list[tuple[str, str]] = []
    if teacher.max_positions and cfg.data.max_length > teacher.max_positions:
        message = f"{cfg.data.max_length} is more than the teacher's {teacher.max_positions} positions"
        errors.append(("data.max_length", message))
    gen = cfg.generation
    if cfg.task == "causal_lm" and teacher.max_positions and gen.prompt_tokens + gen.new_tokens > teacher.max_positions:
        message = f"prompt_tokens + new_tokens = {gen.prompt_tokens + gen.new_tokens} is more than the teacher's "
        errors.append(("generation.new_tokens", message + f"{teacher.max_positions} positions"))
    pairs: tuple[LayerPair, ...] = ()
    if cfg.student is not None:
        errors += _student_errors(cfg.student, teacher)
        try:
            pairs = resolve_layer_map(cfg.student, teacher.layers)
        except ConfigError as exc:
            errors += exc.errors
    if errors:
        raise ConfigError(errors)
    return pairs


def student_config(
    teacher_config: PretrainedConfig, student: StudentConfig, teacher: Architecture, *, attentions: bool
) -> PretrainedConfig:
    """The student's transformers config: the teacher's with the student's shape."""
    hidden, heads, intermediate = student_shape(student, teacher)
    config = teacher_config.__class__.from_dict(teacher_config.to_dict())
    config.num_hidden_layers = student.layers
    config.hidden_size = hidden
    config.num_attention_heads = heads
    config.intermediate_size = intermediate
    if hasattr(config, "n_inner"):  # GPT-2's name for it
        config.n_inner = intermediate
    if hasattr(config, "head_dim"):
        config.head_dim = hidden // heads
    if getattr(config, "num_key_value_heads", None):
        config.num_key_value_heads = student_kv_heads(student, teacher)
    if attentions:
        # Dropout on attention probabilities zeroes entries the KL term takes the log of.
        for key in _ATTENTION_DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, 0.0)
    if not is_causal_lm(config):
        config.architectures = [a.replace("Model", "ForSequenceClassification") for a in config.architectures or []]
    return config


def count_student_parameters(config: PretrainedConfig) -> int:
    """Parameters of the student (with its head), known before any weight is allocated."""
    return count_parameters_from_config(config)


def _init_sources(student: StudentConfig, pairs: tuple[LayerPair, ...], teacher_layers: int) -> dict[int, int]:
    """Student block -> teacher block to copy: with a custom map the mapped one, else spread evenly."""
    sources = dict(spread_blocks(student.layers, teacher_layers))
    if isinstance(student.layer_map, tuple):
        sources.update({p.student: p.teacher for p in pairs if p.student > 0 and p.teacher > 0})
    return sources


def build_student(
    config: PretrainedConfig,
    student: StudentConfig,
    pairs: tuple[LayerPair, ...],
    teacher: PreTrainedModel,
    *,
    attentions: bool,
) -> PreTrainedModel:
    """Instantiate the student (a causal LM when the teacher is one) and, for ``init: teacher``, copy the
    teacher's weights into it: embeddings, mapped blocks, final norm and head (tied or not)."""
    auto = AutoModelForCausalLM if is_causal_lm(config) else AutoModelForSequenceClassification
    # float32 whatever the teacher's dtype: the student is trained
    model = auto.from_config(config, attn_implementation="eager" if attentions else "sdpa", dtype=torch.float32)
    if student.init == "teacher":
        _copy_from_teacher(model, teacher, _init_sources(student, pairs, teacher.config.num_hidden_layers))
    return model


@torch.no_grad()
def _copy_from_teacher(student: PreTrainedModel, teacher: PreTrainedModel, sources: dict[int, int]) -> None:
    s_prefixes, t_prefixes = block_prefixes(student), block_prefixes(teacher)
    rename = {s_prefixes[s - 1]: t_prefixes[t - 1] for s, t in sources.items()}
    pattern = re.compile("|".join(re.escape(p) for p in rename))
    t_state = teacher.state_dict()
    for name, tensor in student.state_dict().items():
        t_name = pattern.sub(lambda m: rename[m.group(0)], name, count=1)
        if t_name in t_state and t_state[t_name].shape == tensor.shape:
            tensor.copy_(t_state[t_name])
