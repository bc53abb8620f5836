"""LoRA teacher fine-tuning with peft: which layers to adapt, wrapping a model, merging at export.

A LoRA run trains low-rank adapters on the chosen linear layers plus, for a classifier, its new head (and
BERT's pooler) in full, as peft's ``modules_to_save``; a language model's head stays frozen. At export the
adapters are merged into the weights (``merge_and_unload``), so the result is a plain transformers model
that registers as a normal Teacher.
"""

from __future__ import annotations

import logging

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, TaskType, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PretrainedConfig
from transformers.pytorch_utils import Conv1D

from distill.config import ConfigError, LoraConfig, Task

FIELD = "lora.target_modules"
PEFT_TASKS: dict[str, TaskType] = {"classification": TaskType.SEQ_CLS, "causal_lm": TaskType.CAUSAL_LM}
HEAD_NAMES = ("classifier", "score", "lm_head")
"""Output heads: trained in full (classifiers) or left alone (LMs), never given adapters."""

POOLER = "pooler"
"""BERT's pooler feeds the classification head only, so a classifier's LoRA run trains it with the head.
Frozen, it starves the new head: in sentence-embedding checkpoints (MiniLM-L6) its output barely varies
across inputs (std 0.036), and a LoRA run of ``bench/lora.py`` then never left the majority class."""

log = logging.getLogger("distill")


def default_target_modules(model_type: str) -> tuple[str, ...]:
    """The linear layers peft adapts by default for ``model_type`` (the attention's query and value
    projections for BERT and Llama: ``("query", "value")``, ``("q_proj", "v_proj")``)."""
    try:
        return tuple(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
    except KeyError:
        raise ConfigError.one(FIELD, f"no default for model type {model_type!r}: name the layers to adapt") from None


def linear_layer_names(model: nn.Module) -> tuple[str, ...]:
    """The names (last path component) of the layers LoRA can adapt, in model order, heads excluded:
    ``("query", "key", "value", "dense")`` for BERT."""
    names: dict[str, None] = {}
    for path, module in model.named_modules():
        name = path.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear | Conv1D) and name not in HEAD_NAMES:
            names.setdefault(name)
    return tuple(names)


def target_modules(lora: LoraConfig, model: nn.Module) -> tuple[str, ...]:
    """The configured target layers, or the architecture's default, checked against ``model``."""
    model_type = model.config.model_type
    targets = lora.target_modules or default_target_modules(model_type)
    available = linear_layer_names(model)
    missing = [t for t in targets if t not in available]
    if missing:
        names = ", ".join(repr(t) for t in missing)
        raise ConfigError.one(FIELD, f"no layer named {names} in {model_type} (linear layers: {', '.join(available)})")
    return tuple(targets)


def meta_model(config: PretrainedConfig, task: Task) -> nn.Module:
    """The model a run of ``task`` trains, with ``config``'s shape, on the meta device (nothing allocated)."""
    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    with torch.device("meta"):
        return auto.from_config(config)


def validate_lora(lora: LoraConfig, config: PretrainedConfig, task: Task) -> tuple[str, ...]:
    """Check the LoRA targets against a model built from ``config`` before launch; returns the target
    layers the run will adapt."""
    return target_modules(lora, meta_model(config, task))


def adapted_layers(lora: LoraConfig, model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that get adapters: never the heads or the pooler, which train in full."""
    targets, full = set(target_modules(lora, model)), {*HEAD_NAMES, POOLER}
    return [
        m
        for path, m in model.named_modules()
        if isinstance(m, nn.Linear | Conv1D) and path.rsplit(".", 1)[-1] in targets and not full & set(path.split("."))
    ]


def head_parameters(model: nn.Module, task: Task) -> int:
    """Parameters a LoRA run trains in full: a classifier's head and pooler (peft's ``modules_to_save``),
    none for a language model."""
    if task == "causal_lm":
        return 0
    names = (*HEAD_NAMES, POOLER)
    return sum(
        p.numel() for path, m in model.named_modules() if path.rsplit(".", 1)[-1] in names for p in m.parameters()
    )


def trainable_parameters(module: nn.Module) -> int:
    """Parameters the optimizer updates (tied weights once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters() if p.requires_grad}.values())


def apply_lora(model: nn.Module, lora: LoraConfig, task: Task) -> PeftModel:
    """Freeze ``model`` and add LoRA adapters to its target layers; a classifier's head (and pooler, see
    :data:`POOLER`) trains in full."""
    total = sum(p.numel() for p in model.parameters())
    peft_config = PeftLoraConfig(
        task_type=PEFT_TASKS[task],
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(target_modules(lora, model)),
        # peft adds the classifier heads ("classifier", "score") for SEQ_CLS itself
        modules_to_save=[POOLER] if task == "classification" and getattr(model.base_model, POOLER, None) else None,
    )
    wrapped = get_peft_model(model, peft_config)
    trainable = trainable_parameters(wrapped)
    log.info(
        "LoRA rank %d: %s of %s parameters trainable (%.2f%%)",
        lora.rank,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    return wrapped


def merge_adapter(model: nn.Module) -> nn.Module:
    """The plain transformers model with the adapters merged into its weights (a LoRA model), or the
    model unchanged. Merging replaces the wrapped layers in place: the peft wrapper is unusable after."""
    return model.merge_and_unload() if isinstance(model, PeftModel) else model
