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
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Kind = Literal["teacher_finetune", "kd_feature", "kd_logits", "no_kd"]
KD_KINDS: tuple[str, ...] = ("kd_feature", "kd_logits")
TERMS: tuple[str, ...] = ("task", "output", "feature", "attention")
# The loss terms each kind trains with, and the loss settings it reads besides their weights: the wizard shows
# these fields, :meth:`RunConfig.loss_weights` switches the other terms off.
KIND_TERMS: dict[str, tuple[str, ...]] = {
    "kd_feature": TERMS,
    "kd_logits": ("task", "output"),
    "no_kd": ("task",),
    "teacher_finetune": ("task",),
}
# the teacher-output cache's settings: every kind with a teacher reads them (top_k: causal LMs only, TASK_FIELDS)
TEACHER_CACHE_SETTINGS: tuple[str, ...] = ("teacher_cache", "teacher_cache_dtype", "top_k")
KIND_LOSS_SETTINGS: dict[str, tuple[str, ...]] = {
    "kd_feature": (
        "temperature",
        "feature_variant",
        "attention_variant",
        "head_mapping",
        "schedule",
        "features_first_fraction",
        *TEACHER_CACHE_SETTINGS,
    ),
    "kd_logits": ("temperature", *TEACHER_CACHE_SETTINGS),
    "no_kd": (),
    "teacher_finetune": (),
}
# A study compares the full method with its ablations (variant -> the term it switches off) and baselines.
FULL_METHOD = "kd_feature"
ABLATIONS: dict[str, str] = {"output+feature": "attention", "output+attention": "feature"}
BASELINES: tuple[str, ...] = ("kd_logits", "no_kd")
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
MAX_TOP_K = 65_536  # teacher log-probabilities kept per token in an LM's output cache
MAX_PROCESSES = 1_024  # processes training one run together

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
    layers: Annotated[int, Field(gt=0, le=MAX_LAYERS)] = Field(description="Transformer blocks of the student.")
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
        "teacher",
        description="copy teacher blocks spread from the first to the last (with a custom map, the mapped ones; "
        "needs the teacher's width) or random",
    )
    layer_map: Literal["uniform", "last"] | Annotated[tuple[LayerPair, ...], Field(max_length=MAX_LAYER_PAIRS)] = (
        "uniform"
    )
    map_embeddings: bool = Field(
        True, description="Pair the student's embedding output with the teacher's (layer 0; feature term only)."
    )


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
    max_length: Tokens = Field(128, description="Texts are cut to this many tokens. Shorter is faster.")
    max_train_samples: Annotated[int, Field(gt=0, le=MAX_SAMPLES)] | None = Field(
        None, description="Leave blank to train on the whole train split; a few hundred make a quick try."
    )
    max_eval_samples: Annotated[int, Field(gt=0, le=MAX_SAMPLES)] | None = Field(
        None, description="Leave blank to evaluate on the whole evaluation split."
    )
    eval_split: Literal["validation", "test"] = Field(
        "validation", description="Where the teacher and the student are scored at the end (and after each epoch)."
    )


class LossConfig(_Frozen):
    task: Weight = Field(1.0, description="Cross-entropy with the true labels.")
    output: Weight = Field(1.0, description="T² · KL between the teacher's and the student's outputs.")
    feature: Weight = Field(1.0, description="MSE between mapped hidden states (through a learned projection).")
    attention: Weight = Field(1.0, description="KL (or MSE) between the attention maps of mapped blocks.")
    temperature: Annotated[float, Field(gt=0.0, le=MAX_TEMPERATURE)] = Field(
        2.0, description="Softens both output distributions; 1 = none, 2–4 is usual."
    )
    feature_variant: Literal["normalized_mse", "standardized_mse", "mse", "cosine"] = Field(
        "normalized_mse",
        description="How mapped hidden states are compared: normalized_mse divides the MSE by the teacher's "
        "variance at each layer, so the term is about 1 whatever the model's scale (a plain mse on SmolLM2 is "
        "~10⁴ and drowns the other terms); cosine compares directions only.",
    )
    attention_variant: Literal["kl", "mse"] = Field("kl", description="How mapped attention maps are compared.")
    head_mapping: Literal["group", "mean"] = Field(
        "group", description="Used when student and teacher have different head counts."
    )
    schedule: Literal["constant", "features_first", "features_fade"] = Field(
        "constant",
        description="features_first trains on the feature terms alone for the first part of training, then on all; "
        "features_fade lowers the feature and attention weights linearly to 0 over training.",
    )
    features_first_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.3, description="Fraction of the steps with feature terms only (features_first schedule)."
    )
    teacher_cache: Literal["build", "use", "off"] = Field(
        "build",
        description="The frozen teacher's outputs on the training split, computed once and read by every epoch and "
        "every run that needs the same ones. build: read the cache when it exists, else build it before training "
        "when the run reads its examples more than once (shorter runs run the teacher live); use: read an existing "
        "cache only, and fail when there is none; off: run the teacher at every step.",
    )
    teacher_cache_dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16",
        description="How cached teacher outputs are stored: float16 halves the disk of float32 (a loss term moves "
        "by about 1e-5), bfloat16 keeps float32's range for very large hidden states (about 10 times less precise), "
        "float32 is exact.",
    )
    top_k: Annotated[int, Field(gt=0, le=MAX_TOP_K)] = Field(
        64,
        description="Causal LMs with a teacher cache: the teacher's k most likely next tokens kept per position, the "
        "rest of its probability as one bucket; the output term becomes the KL over those k + 1 buckets.",
    )


# Where a task's loss defaults differ from the fields' own (measured on a SmolLM2 student copied from teacher blocks,
# bench/lm.py): the attention term and full-weight feature matching leave its held-out perplexity far behind
# kd_logits' at the same budget (bench/results/lm_screen.md); a light feature term without attention comes close.
TASK_LOSS_DEFAULTS: dict[str, dict[str, float]] = {"causal_lm": {"attention": 0.0, "feature": 0.1}}


def loss_defaults(task: str) -> dict[str, Any]:
    """The loss section a run of ``task`` gets for the fields it does not set: :data:`TASK_LOSS_DEFAULTS` over the
    fields' defaults."""
    return LossConfig().model_dump() | TASK_LOSS_DEFAULTS.get(task, {})


class OptimConfig(_Frozen):
    lr: Annotated[float, Field(gt=0.0, le=MAX_LR)] = Field(
        5e-5, description="Peak learning rate of AdamW, e.g. 5e-5 for copied blocks, 1e-4 for random ones."
    )
    weight_decay: Annotated[float, Field(ge=0.0, le=MAX_WEIGHT_DECAY)] = Field(
        0.01, description="AdamW's decoupled weight decay (not applied to biases and norms)."
    )
    warmup_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.06, description="Fraction of the steps over which the learning rate ramps up from 0."
    )
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="How the learning rate falls after the warm-up."
    )
    epochs: Annotated[float, Field(gt=0.0, le=MAX_EPOCHS)] = Field(3.0, description="Passes over the training data.")
    max_steps: Steps | None = Field(
        None, description="Optimizer steps; overrides the epochs when set (handy for a short try)."
    )
    batch_size: BatchSize = Field(
        32, description="Texts per forward pass (of each process, with several); memory grows with it."
    )
    grad_accum: Annotated[int, Field(gt=0, le=MAX_GRAD_ACCUM)] = Field(
        1, description="Batches per optimizer step: an effective batch of batch size × this."
    )
    max_grad_norm: Annotated[float, Field(gt=0.0, le=MAX_GRAD_NORM)] | None = 1.0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"


class LoraConfig(_Frozen):
    """Low-rank adapters (peft) for teacher fine-tuning; merged into the weights at export."""

    rank: Annotated[int, Field(gt=0, le=MAX_LORA_RANK)] = Field(
        8, description="Rank r of each adapter: its parameters grow with it (4–16 is usual)."
    )
    alpha: Annotated[float, Field(gt=0.0, le=MAX_LORA_ALPHA)] = Field(
        16.0, description="Scale of the adapters' update (alpha / r); often 2 × rank."
    )
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.05, description="Dropout on the adapters' input during training."
    )
    target_modules: Annotated[tuple[Name, ...], Field(max_length=MAX_TARGET_MODULES)] | None = Field(
        None, description="names of the linear layers to adapt; default: the architecture's attention projections"
    )


class GenerationConfig(_Frozen):
    """Causal-LM evaluation: perplexity on held-out text, and a continuation task (prompt = the start of a
    held-out text, reference = the text that follows) scored by BLEU, ROUGE-L and CER."""

    metrics: Annotated[tuple[LmMetric, ...], Field(max_length=len(LM_METRICS))] = Field(
        LM_METRICS,
        description="BLEU, ROUGE-L and CER continue held-out texts: the prompt is a text's start, the reference "
        "what follows it.",
    )
    samples: Annotated[int, Field(gt=0, le=MAX_GENERATION_SAMPLES)] = Field(
        32, description="Held-out texts continued for BLEU, ROUGE-L and CER."
    )
    prompt_tokens: Tokens = Field(48, description="Tokens of each held-out text given as the prompt.")
    new_tokens: Tokens = Field(32, description="Tokens generated after each prompt (greedy).")


class ResourcesConfig(_Frozen):
    """What one run is launched on."""

    processes: Annotated[int, Field(gt=0, le=MAX_PROCESSES)] = Field(
        1,
        description="Processes that train the run together, each on its share of every batch (data parallel, one "
        "per GPU or per few CPU cores), started with torchrun --nproc_per_node <processes>. optim.batch_size is per "
        "process: a step reads batch size × grad accum × processes texts. A checkpoint resumes with the same number.",
    )


class RunConfig(_Frozen):
    kind: Kind
    task: Task = Field("classification", description="classification, or causal_lm (next-token prediction)")
    name: Name = "run"
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = Field(
        0, description="Same seed, same data order and initialisation: runs can be repeated exactly."
    )
    teacher: TeacherConfig
    student: StudentConfig | None = None
    data: DataConfig
    loss: LossConfig = Field(
        LossConfig(),
        description="The loss terms' weights and settings; a field left out takes its task's default ("
        + "; ".join(f"{t}: " + ", ".join(f"{k} {v:g}" for k, v in d.items()) for t, d in TASK_LOSS_DEFAULTS.items())
        + ").",
    )
    optim: OptimConfig = OptimConfig()
    lora: LoraConfig | None = Field(
        None,
        description="Train small low-rank adapters on the chosen layers instead of every weight (peft); they are "
        "merged into the weights at export, so the result registers as a normal teacher (teacher_finetune only).",
    )
    generation: GenerationConfig = GenerationConfig()
    resources: ResourcesConfig = ResourcesConfig()
    output_dir: str = Field(
        "runs/run", max_length=MAX_PATH_CHARS, description="checkpoints, logs and the export go here"
    )
    cache_dir: str | None = Field(
        None,
        max_length=MAX_PATH_CHARS,
        description="where teacher-output caches live; default: teacher-cache beside the output folder, so the runs "
        "of one runs folder share them",
    )
    log_every: Steps = 10
    eval_every: Steps | None = Field(None, description="steps between evaluations; default: each epoch")
    checkpoint_every: Steps = 200
    eval_batch_size: BatchSize = 64
    latency_repeats: Annotated[int, Field(gt=0, le=MAX_LATENCY_REPEATS)] = Field(
        10, description="timed forward passes per latency figure"
    )

    @model_validator(mode="before")
    @classmethod
    def _task_loss_defaults(cls, data: Any) -> Any:
        """Fill the loss fields a config leaves out with its task's defaults (:data:`TASK_LOSS_DEFAULTS`)."""
        if not isinstance(data, dict):
            return data
        defaults = TASK_LOSS_DEFAULTS.get(data.get("task", "classification"), {})
        loss = data.get("loss", {})
        if defaults and isinstance(loss, dict):
            return {**data, "loss": {**defaults, **loss}}
        return data

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
        w = {t: getattr(self.loss, t) if t in KIND_TERMS[self.kind] else 0.0 for t in TERMS}
        schedule = self.loss.schedule if "schedule" in KIND_LOSS_SETTINGS[self.kind] else "constant"
        if schedule == "features_first" and step < math.ceil(self.loss.features_first_fraction * total_steps):
            w["task"] = w["output"] = 0.0
        if schedule == "features_fade":
            left = max(0.0, 1.0 - step / max(total_steps, 1))
            w["feature"] *= left
            w["attention"] *= left
        return w

    @property
    def needs_attentions(self) -> bool:
        return self.kind == "kd_feature" and self.loss.attention > 0

    @property
    def needs_features(self) -> bool:
        return self.kind == "kd_feature" and (self.loss.feature > 0 or self.loss.attention > 0)

    @property
    def teacher_cache_dir(self) -> Path:
        """The folder of this run's teacher-output caches (:attr:`cache_dir`, or beside the output folder)."""
        return Path(self.cache_dir) if self.cache_dir else Path(self.output_dir).parent / "teacher-cache"


# Settings only some kinds or tasks read (a path and everything under it). A config shown or compared leaves the
# others out: every run stores every section, with defaults where the wizard asked nothing.
PAIR_TERMS: tuple[str, ...] = ("feature", "attention")
PAIRED_KINDS: tuple[str, ...] = tuple(k for k, terms in KIND_TERMS.items() if set(PAIR_TERMS) & set(terms))
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "student": tuple(k for k in KIND_TERMS if k != "teacher_finetune"),
    "student.layer_map": PAIRED_KINDS,  # the pairs the feature and attention terms align
    "student.map_embeddings": PAIRED_KINDS,
    "lora": ("teacher_finetune",),
    "teacher.dtype": tuple(k for k in KIND_TERMS if k != "teacher_finetune"),  # a fine-tuned teacher trains in float32
}
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "data.label_column": ("classification",),
    "data.labels": ("classification",),
    "generation": ("causal_lm",),
    "loss.top_k": ("causal_lm",),  # a classifier's cache keeps its few logits whole
}
# RunConfig fields that name folders of the host that runs it: a front end sets them for its worker, and shows,
# exports and compares none of them
HOST_PATHS: tuple[str, ...] = ("output_dir", "cache_dir")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def applies(path: str, kind: str, task: str) -> bool:
    """Whether the setting at ``path`` (``loss.feature``, ``generation.samples``) means anything to a run of this
    kind and task: loss terms and settings by :data:`KIND_TERMS` and :data:`KIND_LOSS_SETTINGS`, the rest by
    :data:`KIND_FIELDS` and :data:`TASK_FIELDS`. An unknown kind or task keeps every setting."""
    section, _, rest = path.partition(".")
    if section == "loss" and rest and kind in KIND_TERMS:
        name = rest.split(".")[0]
        if name not in KIND_TERMS[kind] and name not in KIND_LOSS_SETTINGS[kind]:
            return False
    for rules, value, known in ((KIND_FIELDS, kind, KIND_TERMS), (TASK_FIELDS, task, get_args(Task))):
        for prefix, allowed in rules.items():
            if _under(path, prefix) and value in known and value not in allowed:
                return False
    return True


def applicable_config(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config (plain dict) without the settings its kind and task do not read (:func:`applies`)."""
    kind, task = data.get("kind"), data.get("task", "classification")

    def prune(node: Any, prefix: str) -> Any:
        if not isinstance(node, dict):
            return node
        kept = {}
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if applies(path, kind, task):
                kept[key] = prune(value, path)
        return kept

    return prune(data, "")


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
