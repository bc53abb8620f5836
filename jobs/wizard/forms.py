"""Forms of the new-run wizard, one per step.

The forms parse input only; their fields are built from the engine's models (:mod:`jobs.wizard.fields`).
Every rule about a run's configuration is the engine's: each step builds the part of a ``RunConfig`` it
edits, with neutral values for the rest, validates it with ``distill.config.parse_config`` and
``distill.students.validate_against``, and shows each ``(path, message)`` error at the field that edits that
path (``jobs.wizard.checks.OWNS``: "student.heads" under Heads, "optim.lr" under Learning rate).
"""

from __future__ import annotations

import json
import typing
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import QuerySet

from distill.config import (
    FULL_METHOD,
    KIND_LOSS_SETTINGS,
    KIND_TERMS,
    LM_METRICS,
    ConfigError,
    DataConfig,
    GenerationConfig,
    LoraConfig,
    LossConfig,
    OptimConfig,
    RunConfig,
    StudentConfig,
    applies,
)
from distill.lora import default_target_modules
from distill.teachers import Architecture
from jobs import safejson
from jobs.models import DatasetSpec, Teacher
from jobs.wizard.checks import FINETUNE, add_config_errors, engine_errors, owner, skeleton, without_blanks
from jobs.wizard.fields import choices_of, config_field, config_fields
from jobs.wizard.labels import CHOICES, KINDS, LABELS, TASKS

CAUSAL_LM = Teacher.Task.CAUSAL_LM
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
BAD_PAIRS = "The layer map could not be read ({error}); choose a preset or draw the pairs again."
# the layer map's presets: the Literal branch of StudentConfig.layer_map
LAYER_PRESETS: tuple[str, ...] = choices_of(typing.get_args(StudentConfig.model_fields["layer_map"].annotation)[0])


def radios(label: str, choices: dict[str, str], initial: str) -> forms.ChoiceField:
    return forms.ChoiceField(label=label, choices=list(choices.items()), initial=initial, widget=forms.RadioSelect)


# --- 1. teacher -------------------------------------------------------------------------------------------


class TeacherModelChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Teacher) -> str:
        return f"{obj.name} ({obj.team.name})"


class TeacherStepForm(forms.Form):
    task = forms.ChoiceField(
        label="Task",
        choices=[(value, title) for value, (title, _) in TASKS.items()],
        required=False,
        widget=forms.RadioSelect,
        help_text="Blank: the teacher's own task.",
    )
    kind = radios("What to run", {value: title for value, (title, _) in KINDS.items()}, initial=FULL_METHOD)
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
            have, want = TASKS[teacher.task][0].lower(), TASKS[task][0].lower()
            self.add_error("teacher", WRONG_TASK.format(name=teacher.name, have=have, want=want))
        elif task != CAUSAL_LM and kind and kind != FINETUNE and not teacher.labels:
            self.add_error("teacher", NEEDS_FINETUNE.format(name=teacher.name))
        return data


# --- 2. student ------------------------------------------------------------------------------------------


class StudentStepForm(forms.Form):
    def __init__(self, *args: Any, kind: str, teacher: Teacher, arch: Architecture, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kind, self.teacher, self.arch = kind, teacher, arch
        self.fields.update(
            config_fields(StudentConfig, tuple(LABELS["student"]), LABELS["student"], CHOICES["student"])
        )
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
        f["init"].help_text = ""

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.errors:
            errors = engine_errors(skeleton(self.kind, self.teacher, student=self.student_dict()), self.arch)
            add_config_errors(self, errors, "student")
        return data

    def student_dict(self) -> dict[str, Any]:
        """The ``student`` section's shape and init (the layer map is the next step's)."""
        return without_blanks({k: self.cleaned_data.get(k) for k in LABELS["student"]})


# --- 3. layer map ----------------------------------------------------------------------------------------


class LayerMapStepForm(forms.Form):
    preset = radios("Map", CHOICES["student"]["layer_map"], initial=LAYER_PRESETS[0])
    pairs = forms.CharField(required=False, widget=forms.HiddenInput)
    map_embeddings = config_field(StudentConfig, "map_embeddings", label="Map the embeddings")

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
        """The config's ``student.layer_map``: a preset's name, or the drawn pairs."""
        preset = self.cleaned_data.get("preset")
        return self.cleaned_data.get("pairs", []) if preset == "custom" else preset

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        student = {**self.student, "layer_map": self.layer_map_value(), "map_embeddings": data["map_embeddings"]}
        errors = engine_errors(skeleton(self.kind, self.teacher, student=student), self.arch)
        for path, message in errors:
            if (
                path == "student.layer_map"
                and data.get("preset") == "custom"
                and message.startswith("Input should be '")
            ):
                continue  # pydantic also reports that a list is not one of the preset names
            if owner(path, ["layer-map"]):
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

    def __init__(self, *args: Any, kind: str, teacher: Teacher, arch: Architecture, datasets: QuerySet, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kind, self.teacher, self.arch = kind, teacher, arch
        self.fields["dataset"].queryset = datasets
        self.fields.update(config_fields(DataConfig, tuple(LABELS["data"]), LABELS["data"], CHOICES["data"]))
        limit = f"at most the teacher's {arch.max_positions} positions" if arch.max_positions else "in tokens"
        self.fields["max_length"].help_text = f"Texts are cut to this many tokens, {limit}. Shorter is faster."
        if self.is_lm:  # causal language modelling only: what the final evaluation computes
            generation = LABELS["generation"]
            self.fields.update(config_fields(GenerationConfig, tuple(generation), generation, CHOICES["generation"]))
            self.fields["metrics"].required = False  # an empty choice gets the message below

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
        add_config_errors(self, engine_errors(skeleton(FINETUNE, self.teacher, **sections), self.arch), "data")
        return data

    def data_dict(self) -> dict[str, Any]:
        """The user's part of the ``data`` section (the source comes from the registered set)."""
        return without_blanks({k: self.cleaned_data.get(k) for k in LABELS["data"]})

    def generation_dict(self) -> dict[str, Any] | None:
        """The ``generation`` section of a causal-LM run (metrics in the engine's order); None otherwise."""
        if not self.is_lm:
            return None
        chosen = set(self.cleaned_data.get("metrics") or ())
        return {k: self.cleaned_data.get(k) for k in LABELS["generation"]} | {
            "metrics": [m for m in LM_METRICS if m in chosen]
        }


# --- 5. losses and optimizer -----------------------------------------------------------------------------


def loss_fields(kind: str, task: str) -> tuple[str, ...]:
    """The loss fields a kind of run uses on its task (the others keep their values but are not shown)."""
    return tuple(name for name in (*KIND_TERMS[kind], *KIND_LOSS_SETTINGS[kind]) if applies(f"loss.{name}", kind, task))


class TrainingStepForm(forms.Form):
    loss_model: type[LossConfig] = LossConfig

    def __init__(self, *args: Any, kind: str, teacher: Teacher, arch: Architecture, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kind, self.teacher, self.arch = kind, teacher, arch
        f = self.fields
        f.update(config_fields(self.loss_model, loss_fields(kind, teacher.task), LABELS["loss"], CHOICES["loss"]))
        f.update(config_fields(OptimConfig, tuple(LABELS["optim"]), LABELS["optim"], CHOICES["optim"]))
        f["seed"] = config_field(RunConfig, "seed", label=LABELS["run"]["seed"])
        lm = teacher.task == CAUSAL_LM
        if lm:
            f["task"].label = "Task (next token)"
            f["task"].help_text = "Cross-entropy of each next token of the text."
        if len(KIND_TERMS[kind]) == 1:
            target = "each next token" if lm else "the true labels"
            f["task"].help_text = f"Cross-entropy with {target}: the only term this kind of run uses."
        if kind == FINETUNE:  # teacher fine-tuning only: low-rank adapters instead of all weights
            f["lora"] = forms.BooleanField(
                label=LABELS["run"]["lora"], required=False, help_text=RunConfig.model_fields["lora"].description
            )
            numbers = tuple(k for k in LABELS["lora"] if k != "target_modules")
            f.update(config_fields(LoraConfig, numbers, LABELS["lora"], prefix="lora_", required=False))
            defaults = lora_default_targets(arch.model_type)
            f["lora_target_modules"] = forms.CharField(
                label=LABELS["lora"]["target_modules"],
                required=False,
                max_length=500,
                widget=forms.TextInput(attrs={"size": 40}),
                help_text="Names of the linear layers to adapt, comma-separated; blank: "
                + (f"{', '.join(defaults)} (the default for {arch.model_type})" if defaults else "no default is known"),
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.errors:
            raw = skeleton(self.kind, self.teacher, **self.sections())
            add_config_errors(self, engine_errors(raw, self.arch), "training")
        return data

    def sections(self) -> dict[str, Any]:
        """The config sections this step edits: ``loss``, ``optim``, ``seed`` and ``lora``."""
        return {"loss": self.loss_dict(), "optim": self.optim_dict(), "seed": self.cleaned_data["seed"]} | {
            "lora": self.lora_dict()
        }

    def lora_dict(self) -> dict[str, Any] | None:
        """The ``lora`` section when LoRA is chosen (blank target modules: the architecture's default)."""
        if not self.cleaned_data.get("lora"):
            return None
        modules = [m.strip() for m in (self.cleaned_data.get("lora_target_modules") or "").split(",") if m.strip()]
        values = {k: self.cleaned_data.get(f"lora_{k}") for k in LABELS["lora"]}
        return values | {"target_modules": modules or None}

    def loss_dict(self) -> dict[str, Any]:
        """The shown loss fields over the hidden ones' initial values (defaults or earlier choices)."""
        base = {k: self.initial.get("loss", {}).get(k, v) for k, v in self.loss_model().model_dump().items()}
        return base | {k: self.cleaned_data[k] for k in loss_fields(self.kind, self.teacher.task)}

    def optim_dict(self) -> dict[str, Any]:
        base = {k: self.initial.get("optim", {}).get(k, v) for k, v in OptimConfig().model_dump().items()}
        return base | {k: self.cleaned_data.get(k) for k in LABELS["optim"]}


def lora_default_targets(model_type: str) -> tuple[str, ...]:
    """peft's default target modules of ``model_type``, or () when it knows none (the user names them)."""
    try:
        return default_target_modules(model_type)
    except ConfigError:
        return ()


# --- 6. queue ------------------------------------------------------------------------------


class QueueStepForm(forms.Form):
    queue = forms.ChoiceField(required=False, widget=forms.RadioSelect, label="Queue")

    def __init__(self, *args: Any, queues: list[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        default = settings.CELERY_TASK_DEFAULT_QUEUE
        choices = [("", f"Any worker: the default queue “{default}”")]
        choices += [(q, f"{q} (a worker is listening)") for q in queues if q != default]
        self.fields["queue"].choices = choices
