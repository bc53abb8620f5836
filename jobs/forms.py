"""Forms of the new-run wizard, one per step.

The forms parse input only. Every rule about a run's configuration is the engine's: each step builds the
part of a ``RunConfig`` it edits, with neutral values for the rest, validates it with
``distill.config.parse_config`` and ``distill.students.validate_against``, and shows each
``(field, message)`` error at the field it names ("student.heads" under Heads, "optim.lr" under Learning
rate), via :func:`add_config_errors`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import QuerySet

from distill.config import LM_METRICS, ConfigError, GenerationConfig, LoraConfig, LossConfig, OptimConfig, parse_config
from distill.lora import default_target_modules
from distill.students import validate_against
from distill.teachers import Architecture
from jobs import safejson
from jobs.models import DatasetSpec, Run, Teacher
from jobs.selectors import ABLATIONS

FINETUNE = Run.Kind.TEACHER_FINETUNE

KINDS: list[tuple[str, str, str]] = [
    (
        "kd_feature",
        "Distil a student",
        "Feature-alignment KD, the full method: the student learns the teacher's hidden states, attention "
        "maps and outputs.",
    ),
    (
        "teacher_finetune",
        "Fine-tune a teacher",
        "Train the teacher itself on labelled data; when it succeeds it becomes a new teacher you can distil.",
    ),
    (
        "kd_logits",
        "Baseline: logits-only KD",
        "Hinton-style distillation: the student matches only the teacher's output distribution.",
    ),
    (
        "no_kd",
        "Baseline: no distillation",
        "The same student trained on the labels alone, to measure what distillation adds.",
    ),
]

CAUSAL_LM = Teacher.Task.CAUSAL_LM
TASKS: list[tuple[str, str, str]] = [
    (
        Teacher.Task.CLASSIFICATION,
        "Text classification",
        "Labelled texts (sentiment, topic...): an encoder such as MiniLM with a classification head.",
    ),
    (
        CAUSAL_LM,
        "Causal language modelling",
        "Next-token prediction on plain text: a decoder such as SmolLM2 or Llama, scored by perplexity and by "
        "the BLEU, ROUGE-L and CER of its continuations.",
    ),
]
TASK_TITLES = {value: title for value, title, _ in TASKS}
WRONG_TASK = (
    "{name} is a {have} model; it is offered for {have} runs only. Choose the task “{have}”, or a {want} teacher."
)
NEEDS_FINETUNE = (
    "{name} is a backbone without a task head: fine-tune it first (choose “Fine-tune a teacher”), then distil "
    "the teacher that run registers."
)
LABELS_DIFFER = (
    "{teacher} is fine-tuned for {have}, but this data set has {want}: pick a data set with the teacher's "
    "labels, or fine-tune a teacher on this one first."
)
UNION_NOISE = "Input should be 'uniform' or 'last'"
BAD_PAIRS = "The layer map could not be read ({error}); choose a preset or draw the pairs again."

# The loss weights, and the settings of how the teacher's signals are compared with the student's.
LOSS_WEIGHTS = ("task", "output", "feature", "attention")
DISTILLATION_FIELDS = (
    "temperature",
    "feature_variant",
    "attention_variant",
    "head_mapping",
    "schedule",
    "features_first_fraction",
)
# Loss fields each kind uses (the others are kept at their values but not shown).
LOSS_FIELDS: dict[str, tuple[str, ...]] = {
    "kd_feature": (*LOSS_WEIGHTS, *DISTILLATION_FIELDS),
    "kd_logits": ("task", "output", "temperature"),
    "no_kd": ("task",),
    "teacher_finetune": ("task",),
}
OPTIM_FIELDS = ("lr", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_ratio", "scheduler", "weight_decay")
STUDENT_FIELDS = ("layers", "hidden_size", "heads", "kv_heads", "intermediate_size", "init")
DATA_FIELDS = ("max_length", "max_train_samples", "max_eval_samples", "eval_split")
GENERATION_FIELDS = ("metrics", "samples", "prompt_tokens", "new_tokens")
LORA_FIELDS = ("rank", "alpha", "dropout", "target_modules")


# --- engine validation, shared by the steps ---------------------------------------------------------


def engine_errors(raw: dict[str, Any], arch: Architecture) -> list[tuple[str, str]]:
    """The engine's errors for a (partial) run config: parsing, then the checks against the teacher."""
    try:
        validate_against(parse_config(raw), arch)
    except ConfigError as exc:
        return exc.errors
    return []


def skeleton(kind: str, teacher: Teacher, **sections: Any) -> dict[str, Any]:
    """A run config with neutral values around the sections a step edits, for :func:`engine_errors`."""
    raw: dict[str, Any] = {
        "kind": kind,
        "task": teacher.task,
        "teacher": {"source": teacher.source},
        "data": {"source": "-"},
    }
    if kind != FINETUNE:
        raw["student"] = {"layers": 1, "init": "random"}
    raw.update({k: v for k, v in sections.items() if v is not None})
    return raw


def add_config_errors(
    form: forms.Form,
    errors: Iterable[tuple[str, str]],
    sections: tuple[str, ...],
    aliases: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Show engine errors of ``sections`` at their fields: ``student.heads`` -> ``heads``.

    An error naming a section itself (``loss: every term ... has weight 0``) goes to the top of the form;
    ``aliases`` maps other paths to fields. Returns the errors that concern none of these.
    """
    rest = []
    for path, message in errors:
        section, _, leaf = path.partition(".")
        field = (aliases or {}).get(path)
        if field is None and section in sections:
            field = leaf.split("[")[0] if leaf else "__all__"
        if field == "__all__" or (field is not None and field in form.fields):
            form.add_error(None if field == "__all__" else field, message)
        else:
            rest.append((path, message))
    return rest


def _none_if_blank(value: Any) -> Any:
    return None if value in ("", None) else value


def number(label: str, help_text: str, *, required: bool = True, integer: bool = False) -> forms.Field:
    """A number input without browser-side limits: the engine's message is the one users see."""
    widget_attrs = {"step": "1" if integer else "any", "inputmode": "numeric" if integer else "decimal"}
    field_class = forms.IntegerField if integer else forms.FloatField
    return field_class(
        label=label, help_text=help_text, required=required, widget=forms.NumberInput(attrs=widget_attrs)
    )


def radios(label: str, choices: list[tuple[str, str]], help_text: str = "", initial: str = "") -> forms.ChoiceField:
    return forms.ChoiceField(
        label=label, choices=choices, help_text=help_text, initial=initial, widget=forms.RadioSelect
    )


# --- 1. teacher -------------------------------------------------------------------------------------------


class TeacherModelChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Teacher) -> str:
        return f"{obj.name} ({obj.team.name})"


class TeacherStepForm(forms.Form):
    task = forms.ChoiceField(
        label="Task",
        choices=[(value, label) for value, label, _ in TASKS],
        required=False,
        widget=forms.RadioSelect,
        help_text="Blank: the teacher's own task.",
    )
    kind = radios("What to run", [(value, label) for value, label, _ in KINDS], initial="kd_feature")
    teacher = TeacherModelChoice(
        queryset=Teacher.objects.none(),
        widget=forms.RadioSelect,
        empty_label=None,
        help_text="Only teachers of teams where you may launch runs are listed.",
    )

    def __init__(self, *args: Any, teachers: QuerySet[Teacher], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["teacher"].queryset = teachers

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        teacher, kind = data.get("teacher"), data.get("kind")
        if teacher is None:
            return data
        task = data["task"] = data.get("task") or teacher.task
        if teacher.task != task:
            have, want = TASK_TITLES[teacher.task].lower(), TASK_TITLES[task].lower()
            self.add_error("teacher", WRONG_TASK.format(name=teacher.name, have=have, want=want))
        elif task != CAUSAL_LM and kind and kind != FINETUNE and not teacher.labels:
            self.add_error("teacher", NEEDS_FINETUNE.format(name=teacher.name))
        return data


# --- 2. student ------------------------------------------------------------------------------------------


class StudentStepForm(forms.Form):
    layers = number("Blocks", "", integer=True)
    hidden_size = number("Hidden size", "", required=False, integer=True)
    heads = number("Attention heads", "", required=False, integer=True)
    kv_heads = number("Key/value heads", "", required=False, integer=True)
    intermediate_size = number("Feed-forward size", "", required=False, integer=True)
    init = radios(
        "Initialisation",
        [
            ("teacher", "Copy the teacher's blocks (DistilBERT-style): a head start, needs the teacher's width"),
            ("random", "Random: any shape, learns everything from the teacher and the data"),
        ],
        initial="teacher",
    )

    def __init__(self, *args: Any, kind: str, teacher: Teacher, arch: Architecture, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kind, self.teacher, self.arch = kind, teacher, arch
        f = self.fields
        f["layers"].help_text = f"Transformer blocks of the student; the teacher has {arch.layers}."
        f[
            "hidden_size"
        ].help_text = (
            f"Width of every block; blank keeps the teacher's {arch.hidden_size}. Another width needs random init."
        )
        f["heads"].help_text = f"Must divide the hidden size; blank keeps the teacher's {arch.heads}."
        if teacher.task == CAUSAL_LM and arch.kv_heads != arch.heads:
            f["kv_heads"].help_text = (
                f"Grouped-query attention: key/value heads shared by the query heads, must divide them; blank keeps "
                f"the teacher's ratio ({arch.heads} query heads share {arch.kv_heads})."
            )
        else:  # only a teacher with grouped-query attention has kv heads to choose
            del f["kv_heads"]
        f["intermediate_size"].help_text = (
            f"Inner width of each feed-forward layer; blank: the teacher's {arch.intermediate_size} at its width, "
            "else 4 × hidden size."
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        errors = engine_errors(skeleton(self.kind, self.teacher, student=self.student_dict()), self.arch)
        add_config_errors(self, [e for e in errors if e[0].split(".")[-1] in STUDENT_FIELDS], ("student",))
        return data

    def student_dict(self) -> dict[str, Any]:
        """The ``student`` section (shape and init; the layer map is the next step's)."""
        return {k: _none_if_blank(self.cleaned_data.get(k)) for k in STUDENT_FIELDS}


# --- 3. layer map ----------------------------------------------------------------------------------------


class LayerMapStepForm(forms.Form):
    preset = radios(
        "Map",
        [
            ("uniform", "Uniform: student block i learns from teacher block round(i·T/S)"),
            ("last", "Last: only the last blocks are paired"),
            ("custom", "Custom: draw your own pairs"),
        ],
        initial="uniform",
    )
    pairs = forms.CharField(required=False, widget=forms.HiddenInput)
    map_embeddings = forms.BooleanField(
        label="Map the embeddings",
        required=False,
        initial=True,
        help_text="Pair the student's embedding output with the teacher's (layer 0; feature term only).",
    )

    def __init__(self, *args: Any, kind: str, teacher: Teacher, arch: Architecture, student: dict, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kind, self.teacher, self.arch, self.student = kind, teacher, arch, student
        self.bad_rows: set[int] = set()

    def clean_pairs(self) -> list[list[float]]:
        raw = self.cleaned_data.get("pairs") or "[]"
        if self.cleaned_data.get("preset") != "custom":
            return []  # a preset needs no pairs (a browser without JavaScript sends only the radio)
        try:
            pairs = safejson.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(BAD_PAIRS.format(error=exc.msg)) from None
        if not isinstance(pairs, list):
            raise forms.ValidationError(BAD_PAIRS.format(error="not a list"))
        return pairs

    def layer_map_value(self) -> str | list[Any]:
        preset = self.cleaned_data.get("preset")
        return self.cleaned_data.get("pairs", []) if preset == "custom" else preset

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        student = {
            **{k: v for k, v in self.student.items() if v is not None},
            "layer_map": self.layer_map_value(),
            "map_embeddings": data.get("map_embeddings", False),
        }
        errors = engine_errors(skeleton(self.kind, self.teacher, student=student), self.arch)
        for path, message in errors:
            if path == "student.layer_map" and UNION_NOISE in message and data.get("preset") == "custom":
                continue  # pydantic also reports that a list is not one of the preset names
            if path.startswith("student.layer_map") or path == "student.map_embeddings":
                self.add_error("pairs", f"{path}: {message}")
                index = path.removeprefix("student.layer_map[").split("]")[0]
                if index.isdigit():
                    self.bad_rows.add(int(index))
        return data


# --- 4. data ---------------------------------------------------------------------------------------------


class DatasetModelChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: DatasetSpec) -> str:
        return obj.name


class DataStepForm(forms.Form):
    dataset = DatasetModelChoice(queryset=DatasetSpec.objects.none(), widget=forms.RadioSelect, empty_label=None)
    max_length = number("Max length", "", integer=True)
    max_train_samples = number(
        "Max train samples",
        "Leave blank to train on the whole train split; a few hundred make a quick try.",
        required=False,
        integer=True,
    )
    max_eval_samples = number(
        "Max eval samples", "Leave blank to evaluate on the whole evaluation split.", required=False, integer=True
    )
    eval_split = radios(
        "Evaluate on",
        [("validation", "Validation split"), ("test", "Test split")],
        "Where the teacher and the student are scored at the end (and after each epoch).",
        initial="validation",
    )
    # causal language modelling only: what the final evaluation computes (GenerationConfig)
    metrics = forms.MultipleChoiceField(
        label="Metrics",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[
            ("perplexity", "Perplexity: exp of the mean next-token loss on held-out text (lower is better)"),
            ("bleu", "BLEU of the generated continuations against the real ones (0–100, higher is better)"),
            ("rouge_l", "ROUGE-L F-measure of the continuations (0–1, higher is better)"),
            ("cer", "CER: character error rate of the continuations (lower is better)"),
        ],
        help_text="BLEU, ROUGE-L and CER continue held-out texts: the prompt is a text's start, the reference "
        "what follows it.",
    )
    samples = number("Generation samples", "Held-out texts continued for BLEU, ROUGE-L and CER.", integer=True)
    prompt_tokens = number("Prompt tokens", "Tokens of each held-out text given as the prompt.", integer=True)
    new_tokens = number("New tokens", "Tokens generated after each prompt (greedy).", integer=True)

    def __init__(self, *args: Any, kind: str, teacher: Teacher, arch: Architecture, datasets: QuerySet, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kind, self.teacher, self.arch = kind, teacher, arch
        self.fields["dataset"].queryset = datasets
        limit = f"at most the teacher's {arch.max_positions} positions" if arch.max_positions else "in tokens"
        self.fields["max_length"].help_text = f"Texts are cut to this many tokens, {limit}. Shorter is faster."
        if not self.is_lm:
            for name in GENERATION_FIELDS:
                del self.fields[name]

    @property
    def is_lm(self) -> bool:
        return self.teacher.task == CAUSAL_LM

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        dataset = data.get("dataset")
        labelled = not self.is_lm and self.kind != FINETUNE
        if dataset is not None and labelled and self.teacher.labels != list(dataset.labels):
            have, want = self.teacher.labels, list(dataset.labels)
            self.add_error("dataset", LABELS_DIFFER.format(teacher=self.teacher.name, have=have, want=want))
        if self.is_lm and not data.get("metrics") and "metrics" not in self.errors:
            self.add_error("metrics", "Choose at least one metric to compute.")
        if self.errors:
            return data
        sections = {"data": {"source": dataset.source, **self.data_dict()}, "generation": self.generation_dict()}
        errors = engine_errors(skeleton(FINETUNE, self.teacher, **sections), self.arch)
        add_config_errors(
            self, errors, ("data", "generation"), aliases={"data.source": "dataset", "data.labels": "dataset"}
        )
        return data

    def data_dict(self) -> dict[str, Any]:
        """The user's part of the ``data`` section (the source comes from the registered set)."""
        return {k: _none_if_blank(self.cleaned_data.get(k)) for k in DATA_FIELDS}

    def generation_dict(self) -> dict[str, Any] | None:
        """The ``generation`` section of a causal-LM run (metrics in the engine's order); None otherwise."""
        if not self.is_lm:
            return None
        chosen = set(self.cleaned_data.get("metrics") or ())
        return {
            "metrics": [m for m in LM_METRICS if m in chosen],
            **{k: self.cleaned_data.get(k) for k in GENERATION_FIELDS[1:]},
        }


def generation_initial(stored: dict[str, Any] | None) -> dict[str, Any]:
    """Initial values of the data step's LM fields: earlier choices over the engine's defaults."""
    return {**GenerationConfig().model_dump(mode="json"), **(stored or {})}


# --- 5. losses and optimizer -----------------------------------------------------------------------------


class TrainingStepForm(forms.Form):
    task = number("Task (labels)", "Cross-entropy with the true labels.")
    output = number("Output (teacher's predictions)", "T² · KL between the teacher's and the student's outputs.")
    feature = number("Hidden states", "MSE between mapped hidden states (through a learned projection).")
    attention = number("Attention maps", "KL (or MSE) between the attention maps of mapped blocks.")
    temperature = number("Temperature", "Softens both output distributions; 1 = none, 2–4 is usual.")
    feature_variant = radios(
        "Hidden-state loss", [("mse", "MSE"), ("cosine", "Cosine distance")], "How mapped hidden states are compared."
    )
    attention_variant = radios(
        "Attention loss",
        [("kl", "KL (MiniLM-style)"), ("mse", "MSE (TinyBERT-style)")],
        "How mapped attention maps are compared.",
    )
    head_mapping = radios(
        "Head mapping",
        [("group", "Average the teacher's heads in groups"), ("mean", "Compare head-averaged maps")],
        "Used when student and teacher have different head counts.",
    )
    schedule = radios(
        "Schedule",
        [("constant", "All terms from the start"), ("features_first", "Hidden states and attention first")],
        "features_first trains on the feature terms alone for the first part of training, then on all.",
    )
    features_first_fraction = number(
        "Features-first part", "Fraction of the steps with feature terms only (features_first schedule)."
    )
    lr = number("Learning rate", "Peak learning rate of AdamW, e.g. 5e-5 for copied blocks, 1e-4 for random ones.")
    epochs = number("Epochs", "Passes over the training data.")
    max_steps = number(
        "Max steps",
        "Optimizer steps; overrides the epochs when set (handy for a short try).",
        required=False,
        integer=True,
    )
    batch_size = number("Batch size", "Texts per forward pass; memory grows with it.", integer=True)
    grad_accum = number(
        "Gradient accumulation", "Batches per optimizer step: an effective batch of batch size × this.", integer=True
    )
    warmup_ratio = number("Warm-up", "Fraction of the steps over which the learning rate ramps up from 0.")
    scheduler = radios(
        "Learning-rate schedule",
        [("linear", "Linear decay"), ("cosine", "Cosine decay"), ("constant", "Constant")],
        "How the learning rate falls after the warm-up.",
    )
    weight_decay = number("Weight decay", "AdamW's decoupled weight decay (not applied to biases and norms).")
    seed = number("Seed", "Same seed, same data order and initialisation: runs can be repeated exactly.", integer=True)
    # teacher fine-tuning only: low-rank adapters instead of all weights (LoraConfig)
    lora = forms.BooleanField(
        label="Fine-tune with LoRA",
        required=False,
        help_text="Train small low-rank adapters on the chosen layers instead of every weight (peft); they are "
        "merged into the weights at export, so the result registers as a normal teacher.",
    )
    lora_rank = number(
        "Rank", "Rank r of each adapter: its parameters grow with it (4–16 is usual).", required=False, integer=True
    )
    lora_alpha = number("Alpha", "Scale of the adapters' update (alpha / r); often 2 × rank.", required=False)
    lora_dropout = number("Dropout", "Dropout on the adapters' input during training.", required=False)
    lora_target_modules = forms.CharField(
        label="Target modules", required=False, max_length=500, help_text="", widget=forms.TextInput(attrs={"size": 40})
    )

    def __init__(self, *args: Any, kind: str, teacher: Teacher, arch: Architecture, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kind, self.teacher, self.arch = kind, teacher, arch
        shown = set(LOSS_FIELDS[kind])
        for name in LOSS_FIELDS["kd_feature"]:
            if name not in shown:
                del self.fields[name]
        lm = teacher.task == CAUSAL_LM
        if lm:
            self.fields["task"].label = "Task (next token)"
            self.fields["task"].help_text = "Cross-entropy of each next token of the text."
        if kind in ("no_kd", "teacher_finetune"):
            target = "each next token" if lm else "the true labels"
            self.fields["task"].help_text = f"Cross-entropy with {target}: the only term this kind of run uses."
        if kind != FINETUNE:
            for name in ("lora", *LORA_FORM_FIELDS):
                del self.fields[name]
        else:
            defaults = lora_default_targets(arch.model_type)
            self.fields["lora_target_modules"].help_text = (
                "Names of the linear layers to adapt, comma-separated; blank: "
                + (f"{', '.join(defaults)} (the default for {arch.model_type})" if defaults else "no default is known")
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        loss, optim = self.loss_dict(), self.optim_dict()
        raw = skeleton(self.kind, self.teacher, loss=loss, optim=optim, seed=data["seed"], lora=self.lora_dict())
        aliases = {"seed": "seed", "lora": "lora", **{f"lora.{k}": f"lora_{k}" for k in LORA_FIELDS}}
        add_config_errors(self, engine_errors(raw, self.arch), ("loss", "optim", "seed"), aliases=aliases)
        return data

    def lora_dict(self) -> dict[str, Any] | None:
        """The ``lora`` section when LoRA is chosen (blank target modules: the architecture's default)."""
        if not self.cleaned_data.get("lora"):
            return None
        modules = [m.strip() for m in (self.cleaned_data.get("lora_target_modules") or "").split(",") if m.strip()]
        return {
            "rank": self.cleaned_data.get("lora_rank"),
            "alpha": self.cleaned_data.get("lora_alpha"),
            "dropout": self.cleaned_data.get("lora_dropout"),
            "target_modules": modules or None,
        }

    def loss_dict(self) -> dict[str, Any]:
        """The shown loss fields over the hidden ones' initial values (defaults or earlier choices)."""
        base = {k: self.initial.get(k, v) for k, v in LossConfig().model_dump().items()}
        return {**base, **{k: self.cleaned_data[k] for k in LOSS_FIELDS[self.kind]}}

    def optim_dict(self) -> dict[str, Any]:
        base = {k: self.initial.get(k, v) for k, v in OptimConfig().model_dump().items()}
        return {**base, **{k: _none_if_blank(self.cleaned_data.get(k)) for k in OPTIM_FIELDS}}


LORA_FORM_FIELDS = tuple(f"lora_{k}" for k in LORA_FIELDS)


def lora_default_targets(model_type: str) -> tuple[str, ...]:
    """peft's default target modules of ``model_type``, or () when it knows none (the user names them)."""
    try:
        return default_target_modules(model_type)
    except ConfigError:
        return ()


def training_initial(loss: dict, optim: dict, seed: int | None, lora: dict | None = None) -> dict[str, Any]:
    """Initial values of the training step: earlier choices over the engine's defaults."""
    lora_values = {**LoraConfig().model_dump(), **(lora or {})}
    modules = lora_values.pop("target_modules") or ()
    return {
        **LossConfig().model_dump(),
        **loss,
        **OptimConfig().model_dump(),
        **optim,
        "seed": seed or 0,
        "lora": lora is not None,
        **{f"lora_{k}": v for k, v in lora_values.items()},
        "lora_target_modules": ", ".join(modules),
    }


# --- 6. queue and 7. review ------------------------------------------------------------------------------


class QueueStepForm(forms.Form):
    queue = forms.ChoiceField(required=False, widget=forms.RadioSelect, label="Queue")

    def __init__(self, *args: Any, queues: list[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        default = settings.CELERY_TASK_DEFAULT_QUEUE
        choices = [("", f"Any worker: the default queue “{default}”")]
        choices += [(q, f"{q} (a worker is listening)") for q in queues if q != default]
        self.fields["queue"].choices = choices


class ReviewStepForm(forms.Form):
    """The run's name and, for distillation runs, whether to launch it as a study with its baselines."""

    name = forms.CharField(
        max_length=100, help_text="How the run appears in lists and comparisons; you can reuse a name."
    )
    baselines = forms.BooleanField(
        required=False,
        initial=True,
        label="Compare with baselines",
        help_text="Launch a study: this student trained with feature KD (the full method), logits-only KD and no "
        "KD, with the same shape, data, budget and seed; each run also measures the teacher on the same split "
        "and host. The name above becomes the study's.",
    )
    ablations = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[
            (variant, f"{variant} (feature KD without the {zeroed} term)") for variant, zeroed in ABLATIONS.items()
        ],
        label="Ablations",
    )
    seeds = forms.CharField(
        required=False,
        max_length=100,
        label="Seeds",
        help_text="One or more, comma-separated (0 or 0,1,2): every run of the study is trained once per seed, and "
        "the scorecard shows each variant's mean ± spread.",
    )

    def clean_seeds(self) -> list[int]:
        """``"0, 1,2"`` -> ``[0, 1, 2]`` (each once); blank -> ``[]``, the seed of the training step."""
        parts = [part.strip() for part in self.cleaned_data["seeds"].split(",") if part.strip()]
        try:
            return list(dict.fromkeys(int(part) for part in parts))
        except ValueError:
            raise forms.ValidationError("Seeds are whole numbers separated by commas, e.g. 0,1,2.") from None
