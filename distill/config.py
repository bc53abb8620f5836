"""The one typed, frozen configuration of a distillation run, and its validation.

The CLI reads it from YAML, the web form and the API build it from their input, and every error comes
back as a :class:`ConfigError` naming the field (``student.layer_map[2]``) and the reason. Checks that
need the teacher's architecture (layer ranges, head counts) live in :func:`validate_against`, so the same
messages reach every front end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Kind = Literal["teacher_finetune", "kd_feature", "kd_logits", "no_kd"]
KD_KINDS: tuple[str, ...] = ("kd_feature", "kd_logits")
TERMS: tuple[str, ...] = ("task", "output", "feature", "attention")
Task = Literal["classification", "causal_lm"]
LmMetric = Literal["perplexity", "bleu", "rouge_l", "cer"]
LM_METRICS: tuple[str, ...] = ("perplexity", "bleu", "rouge_l", "cer")

# Upper bounds of every field: far above any real run, low enough that no value overflows a counter, a database
# column (steps are 32-bit) or a worker's time (a latency figure of a billion passes never ends).
MAX_LAYERS = 256  # student blocks, and layer indices (0 is the embeddings)
MAX_LAYER_PAIRS = MAX_LAYERS + 1
MAX_HIDDEN_SIZE = 65_536
MAX_HEADS = 1_024
MAX_INTERMEDIATE_SIZE = 262_144
MAX_LENGTH = 8_192  # tokens per example, and per prompt or continuation
MAX_SAMPLES = 100_000_000
MAX_WEIGHT = 10_000.0  # loss weights and per-pair weights
MAX_TEMPERATURE = 100.0
MAX_LR = 1.0
MAX_WEIGHT_DECAY = 10.0
MAX_EPOCHS = 1_000.0
MAX_STEPS = 1_000_000  # optimizer steps, and the intervals counted in steps
MAX_BATCH_SIZE = 4_096
MAX_GRAD_ACCUM = 1_024
MAX_GRAD_NORM = 10_000.0
MAX_LORA_RANK = 1_024
MAX_LORA_ALPHA = 10_000.0
MAX_GENERATION_SAMPLES = 10_000
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_LATENCY_REPEATS = 1_000
MAX_NAME_CHARS = 200  # names: the run, columns, labels, modules
MAX_PATH_CHARS = 4_096  # sources and folders
MAX_LABELS = 10_000
MAX_TARGET_MODULES = 64

Weight = Annotated[float, Field(ge=0.0, le=MAX_WEIGHT)]
Steps = Annotated[int, Field(gt=0, le=MAX_STEPS)]
BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH_SIZE)]
Tokens = Annotated[int, Field(gt=0, le=MAX_LENGTH)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class ConfigError(ValueError):
    """Invalid configuration: a list of ``(field, message)`` pairs, printed one per line."""

    def __init__(self, errors: Iterable[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("\n".join(f"{field}: {message}" for field, message in self.errors))

    @classmethod
    def one(cls, field: str, message: str) -> ConfigError:
        return cls([(field, message)])


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TeacherConfig(_Frozen):
    source: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="package:<pip-name>, a local model directory (e.g. a run's export) or a hub id",
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="the frozen teacher's weights; bfloat16 halves its memory in distillation runs"
    )


class LayerPair(_Frozen):
    """One mapped pair. Layer 0 is the embedding output; layer i the output of block i."""

    student: Annotated[int, Field(ge=0, le=MAX_LAYERS)]
    teacher: Annotated[int, Field(ge=0, le=MAX_LAYERS)]
    feature_weight: Weight = 1.0
    attention_weight: Weight = 1.0

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        # YAML shorthand: [student, teacher] or [student, teacher, feature_weight, attention_weight]
        if isinstance(value, list | tuple):
            keys = ("student", "teacher", "feature_weight", "attention_weight")
            if not 2 <= len(value) <= 4:
                raise ValueError("a pair is [student, teacher] with optional feature and attention weights")
            return dict(zip(keys, value, strict=False))
        return value


class StudentConfig(_Frozen):
    layers: Annotated[int, Field(gt=0, le=MAX_LAYERS)]
    hidden_size: Annotated[int, Field(gt=0, le=MAX_HIDDEN_SIZE)] | None = Field(
        None, description="defaults to the teacher's"
    )
    heads: Annotated[int, Field(gt=0, le=MAX_HEADS)] | None = Field(None, description="defaults to the teacher's")
    kv_heads: Annotated[int, Field(gt=0, le=MAX_HEADS)] | None = Field(
        None,
        description="key/value heads (grouped-query attention; must divide heads); default: the teacher's "
        "query heads per kv head, kept",
    )
    intermediate_size: Annotated[int, Field(gt=0, le=MAX_INTERMEDIATE_SIZE)] | None = Field(
        None, description="defaults to 4 x hidden size"
    )
    init: Literal["teacher", "random"] = Field(
        "teacher", description="copy the mapped teacher layers (needs the teacher's width) or random"
    )
    layer_map: Literal["uniform", "last"] | Annotated[tuple[LayerPair, ...], Field(max_length=MAX_LAYER_PAIRS)] = (
        "uniform"
    )
    map_embeddings: bool = Field(True, description="add the pair (0, 0) to uniform/last maps")


class DataConfig(_Frozen):
    source: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="packaged:rotten_tomatoes, packaged:bbc_news, a .csv/.jsonl path, or hf:<dataset id>",
    )
    text_column: Name = "text"
    label_column: Name = "label"
    labels: Annotated[tuple[Name, ...], Field(max_length=MAX_LABELS)] | None = Field(
        None, description="allowed labels, in class-id order"
    )
    max_length: Tokens = 128
    max_train_samples: Annotated[int, Field(gt=0, le=MAX_SAMPLES)] | None = None
    max_eval_samples: Annotated[int, Field(gt=0, le=MAX_SAMPLES)] | None = None
    eval_split: Literal["validation", "test"] = "validation"


class LossConfig(_Frozen):
    task: Weight = 1.0
    output: Weight = 1.0
    feature: Weight = 1.0
    attention: Weight = 1.0
    temperature: Annotated[float, Field(gt=0.0, le=MAX_TEMPERATURE)] = 2.0
    feature_variant: Literal["mse", "cosine"] = "mse"
    attention_variant: Literal["kl", "mse"] = "kl"
    head_mapping: Literal["group", "mean"] = Field(
        "group", description="group-average teacher heads, or compare head-averaged maps"
    )
    schedule: Literal["constant", "features_first"] = Field(
        "constant",
        description="features_first: feature/attention terms only for the first warm fraction, then all",
    )
    features_first_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3


class OptimConfig(_Frozen):
    lr: Annotated[float, Field(gt=0.0, le=MAX_LR)] = 5e-5
    weight_decay: Annotated[float, Field(ge=0.0, le=MAX_WEIGHT_DECAY)] = 0.01
    warmup_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.06
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    epochs: Annotated[float, Field(gt=0.0, le=MAX_EPOCHS)] = 3.0
    max_steps: Steps | None = Field(None, description="overrides epochs when set")
    batch_size: BatchSize = 32
    grad_accum: Annotated[int, Field(gt=0, le=MAX_GRAD_ACCUM)] = 1
    max_grad_norm: Annotated[float, Field(gt=0.0, le=MAX_GRAD_NORM)] | None = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"


class LoraConfig(_Frozen):
    """Low-rank adapters (peft) for teacher fine-tuning; merged into the weights at export."""

    rank: Annotated[int, Field(gt=0, le=MAX_LORA_RANK)] = 8
    alpha: Annotated[float, Field(gt=0.0, le=MAX_LORA_ALPHA)] = 16.0
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    target_modules: Annotated[tuple[Name, ...], Field(max_length=MAX_TARGET_MODULES)] | None = Field(
        None, description="names of the linear layers to adapt; default: the architecture's attention projections"
    )


class GenerationConfig(_Frozen):
    """Causal-LM evaluation: perplexity on held-out text, and a continuation task (prompt = the start of a
    held-out text, reference = the text that follows) scored by BLEU, ROUGE-L and CER."""

    metrics: Annotated[tuple[LmMetric, ...], Field(max_length=len(LM_METRICS))] = LM_METRICS
    samples: Annotated[int, Field(gt=0, le=MAX_GENERATION_SAMPLES)] = Field(
        32, description="held-out texts continued for BLEU, ROUGE-L and CER"
    )
    prompt_tokens: Tokens = 48
    new_tokens: Tokens = 32


class RunConfig(_Frozen):
    kind: Kind
    task: Task = Field("classification", description="classification, or causal_lm (next-token prediction)")
    name: Name = "run"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    teacher: TeacherConfig
    student: StudentConfig | None = None
    data: DataConfig
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    lora: LoraConfig | None = Field(None, description="teacher_finetune only: train LoRA adapters, not all weights")
    generation: GenerationConfig = GenerationConfig()
    output_dir: str = Field(
        "runs/run", max_length=MAX_PATH_CHARS, description="checkpoints, logs and the export go here"
    )
    log_every: Steps = 10
    eval_every: Steps | None = Field(None, description="steps between evaluations; default: each epoch")
    checkpoint_every: Steps = 200
    eval_batch_size: BatchSize = 64
    latency_repeats: Annotated[int, Field(gt=0, le=MAX_LATENCY_REPEATS)] = Field(
        10, description="timed forward passes per latency figure"
    )

    @model_validator(mode="after")
    def _student_matches_kind(self) -> RunConfig:
        if self.kind == "teacher_finetune" and self.student is not None:
            raise ValueError("student: a teacher_finetune run trains the teacher; remove the student section")
        if self.kind != "teacher_finetune" and self.student is None:
            raise ValueError(f"student: required for kind {self.kind}")
        if self.lora is not None and self.kind != "teacher_finetune":
            raise ValueError("lora: LoRA adapters fine-tune a teacher; use kind teacher_finetune")
        if not any(self.loss_weights().values()):
            raise ValueError(f"loss: every term used by kind {self.kind} has weight 0")
        features = self.loss.feature + self.loss.attention
        if self.kind == "kd_feature" and self.loss.schedule == "features_first" and not features:
            raise ValueError("loss.schedule: features_first needs a feature or attention weight above 0")
        return self

    def loss_weights(self, step: int = 0, total_steps: int = 1) -> dict[str, float]:
        """The weight of each term at ``step``: the kind switches terms off, the schedule phases them."""
        w = {t: getattr(self.loss, t) for t in TERMS}
        if self.kind in ("teacher_finetune", "no_kd"):
            return {t: (w["task"] if t == "task" else 0.0) for t in TERMS}
        if self.kind == "kd_logits":
            w["feature"] = w["attention"] = 0.0
        elif self.loss.schedule == "features_first" and step < math.ceil(
            self.loss.features_first_fraction * total_steps
        ):
            w["task"] = w["output"] = 0.0
        return w

    @property
    def needs_attentions(self) -> bool:
        return self.kind == "kd_feature" and self.loss.attention > 0

    @property
    def needs_features(self) -> bool:
        return self.kind == "kd_feature" and (self.loss.feature > 0 or self.loss.attention > 0)


def format_location(loc: tuple[int | str, ...]) -> str:
    """``('student', 'layer_map', 2, 'teacher')`` -> ``student.layer_map[2].teacher``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("tuple[", "function-", "literal[")) or part in ("list", "dict"):
            continue  # pydantic's union-branch labels say nothing to a user
        else:
            out += f".{part}" if out else part
    return out


def _pydantic_errors(exc: ValidationError) -> ConfigError:
    seen: dict[str, str] = {}
    for err in exc.errors():
        field = format_location(tuple(err["loc"])) or "config"
        message = err["msg"].removeprefix("Value error, ")
        if ": " in message and field == "config":  # model-level errors name their own field
            field, message = message.split(": ", 1)
        seen.setdefault(field, message)  # a union reports each branch: keep the first
    # A union also reports the branches the input was not meant for ("should be 'uniform'" for a list of
    # pairs): drop an error when a more specific one exists beneath the same field.
    specific = [f for f in seen if any(f != g and g.startswith((f + "[", f + ".")) for g in seen)]
    return ConfigError((f, m) for f, m in seen.items() if f not in specific)


def parse_config(data: dict[str, Any]) -> RunConfig:
    """Validate a plain dict (from YAML, a form or JSON) into a :class:`RunConfig`."""
    if not isinstance(data, dict):
        raise ConfigError.one("config", "expected a mapping of fields")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_errors(exc) from None


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (the value read as YAML) to a nested config dict, in place."""
    key, sep, value = assignment.partition("=")
    if not sep:
        raise ConfigError.one("--set", f"expected key=value, got {assignment!r}")
    *parents, last = key.split(".")
    node = data
    for depth, part in enumerate(parents, 1):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError.one("--set", f"{'.'.join(parents[:depth])} is not a section, so {key} cannot be set")
    node[last] = yaml.safe_load(value)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a YAML config file, apply ``key=value`` overrides, and validate the result."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError.one("config", f"file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError.one("config", f"{path} is not valid YAML: {exc}") from None
    if isinstance(data, dict):
        for assignment in overrides:
            apply_override(data, assignment)
    return parse_config(data)


def config_schema() -> dict[str, Any]:
    """JSON schema of a run config, for the API and the form."""
    return RunConfig.model_json_schema()
