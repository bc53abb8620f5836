"""The new-run wizard: teacher → student → layer map → data → losses & optimizer → queue → review.

Each step is its own page (``/runs/new/<step>/``) with a plain form, so it works without JavaScript; htmx
adds the live parameter count and ``layermap.js`` the layer-map drawing. The choices so far live in the
session (``request.session["wizard"]``), so Back, Next and the step links never lose them. The forms
validate with the engine (``jobs.forms``); Launch calls ``services.run_create``, and any error it still
finds is taken back to the step and field it concerns.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import yaml
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from distill.config import ConfigError, LayerPair, LossConfig, OptimConfig, StudentConfig
from distill.estimate import (
    available_memory_bytes,
    estimate,
    format_bytes,
    format_duration,
    suggest_fixes,
)
from distill.layer_map import has_attention, resolve_layer_map
from distill.students import count_student_parameters, student_config, student_shape
from distill.teachers import Architecture
from jobs import safejson, selectors, services
from jobs.forms import (
    CAUSAL_LM,
    DATA_FIELDS,
    DISTILLATION_FIELDS,
    FINETUNE,
    GENERATION_FIELDS,
    KINDS,
    LORA_FIELDS,
    LORA_FORM_FIELDS,
    LOSS_FIELDS,
    LOSS_WEIGHTS,
    OPTIM_FIELDS,
    TASK_TITLES,
    TASKS,
    DataStepForm,
    LayerMapStepForm,
    QueueStepForm,
    ReviewStepForm,
    StudentStepForm,
    TeacherStepForm,
    TrainingStepForm,
    generation_initial,
    lora_default_targets,
    training_initial,
)
from jobs.models import DatasetSpec, Teacher
from jobs.permissions import require_write, teams_for_user

SESSION_KEY = "wizard"
KIND_TITLES = {value: title for value, title, _ in KINDS}


@dataclass(frozen=True)
class Step:
    slug: str
    title: str
    lede: str


STEPS = (
    Step("teacher", "Teacher", "The task, what kind of run, and which registered teacher it starts from."),
    Step("student", "Student", "The shape of the small model the teacher is distilled into."),
    Step("layer-map", "Layer map", "Which student layer learns from which teacher layer."),
    Step("data", "Data", "The texts to train and evaluate on, and what to measure."),
    Step("training", "Losses & optimizer", "How the loss terms are weighted and how the optimizer runs."),
    Step("queue", "Queue", "Which workers may pick the run up."),
    Step("review", "Review", "Check the whole configuration, its size and its cost, then launch."),
)
BY_SLUG = {s.slug: s for s in STEPS}


def steps_for(kind: str) -> list[Step]:
    """The steps a kind of run needs: fine-tuning has no student; only kd_feature maps layers."""
    skip = {"student", "layer-map"} if kind == FINETUNE else set() if kind == "kd_feature" else {"layer-map"}
    return [s for s in STEPS if s.slug not in skip]


# --- the teacher's config and architecture ----------------------------------------------------------------


def student_parameters(teacher: Teacher, student: dict[str, Any]) -> int:
    """The exact parameter count of a student shape (built on the meta device: milliseconds)."""
    arch = selectors.teacher_architecture(teacher)
    cfg = StudentConfig(**{k: v for k, v in student.items() if v is not None})
    return count_student_parameters(student_config(selectors.teacher_hf_config(teacher), cfg, arch, attentions=False))


def short_count(n: int | None) -> str:
    """``22.7 M``, ``410.5 k``."""
    if n is None:
        return "—"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M"
    return f"{n / 1e3:.1f} k" if n >= 1_000 else str(n)


def describe_architecture(arch: Architecture) -> str:
    return (
        f"{arch.layers} layers × {arch.hidden_size} hidden, {arch.heads} heads, {short_count(arch.params)} parameters"
    )


# --- the session state ------------------------------------------------------------------------------------


def writable_teachers(user) -> QuerySet[Teacher]:
    """Teachers the user may launch runs from: those of teams where they are owner or member."""
    return selectors.teacher_list(user).filter(team__in=teams_for_user(user, write=True))


class Wizard:
    """The choices so far and what follows from them (the teacher, the steps of this kind of run)."""

    def __init__(self, request: HttpRequest):
        self.request = request
        self.state: dict[str, Any] = dict(request.session.get(SESSION_KEY) or {})

    @property
    def kind(self) -> str:
        return self.state.get("kind", "kd_feature")

    @property
    def task(self) -> str:
        return self.state.get("task") or (self.teacher.task if self.teacher else Teacher.Task.CLASSIFICATION)

    @property
    def is_lm(self) -> bool:
        return self.task == CAUSAL_LM

    @functools.cached_property
    def teacher(self) -> Teacher | None:
        pk = self.state.get("teacher")
        return writable_teachers(self.request.user).filter(pk=pk).first() if pk else None

    @functools.cached_property
    def arch(self) -> Architecture:
        assert self.teacher is not None
        return selectors.teacher_architecture(self.teacher)

    @functools.cached_property
    def dataset(self) -> DatasetSpec | None:
        pk = self.state.get("data", {}).get("dataset")
        return self.datasets().filter(pk=pk).first() if pk and self.teacher else None

    def datasets(self) -> QuerySet[DatasetSpec]:
        """Data sets of the teacher's team: a run cannot mix teams."""
        return selectors.dataset_list(self.request.user).filter(team=self.teacher.team)

    @property
    def steps(self) -> list[Step]:
        return steps_for(self.kind)

    @property
    def slugs(self) -> list[str]:
        return [s.slug for s in self.steps]

    @property
    def done(self) -> list[str]:
        return self.state.setdefault("done", [])

    def first_open(self) -> str:
        return next((s for s in self.slugs if s not in self.done), "review")

    def can_visit(self, slug: str) -> bool:
        return slug in self.slugs and self.slugs.index(slug) <= self.slugs.index(self.first_open())

    def neighbour(self, slug: str, offset: int) -> str | None:
        i = self.slugs.index(slug) + offset
        return self.slugs[i] if 0 <= i < len(self.slugs) else None

    def save(self) -> None:
        self.request.session[SESSION_KEY] = self.state

    def advance(self, slug: str) -> HttpResponse:
        """Record a finished step and go to the next one."""
        if slug not in self.done:
            self.done.append(slug)
        self.state.get("errors", {}).pop(slug, None)
        self.save()
        return redirect("wizard_step", step=self.neighbour(slug, 1) or "review")

    def pending(self, slug: str) -> list[list[str | None]]:
        """Errors the launch (or the review) found for this step, until the step is submitted again."""
        return self.state.get("errors", {}).get(slug, [])

    def student(self) -> dict[str, Any]:
        return self.state.get("student") or {"layers": max(1, self.arch.layers // 2), "init": "teacher"}

    def layer_map(self) -> dict[str, Any]:
        return self.state.get("layer_map") or {"preset": "uniform", "pairs": [], "map_embeddings": True}

    def sections(self) -> dict[str, Any]:
        """The ``sections`` of ``services.run_create``: every choice except teacher, data set and name."""
        training = self.state.get("training", {})
        data = self.state.get("data", {})
        out: dict[str, Any] = {
            "task": self.task,
            "loss": training.get("loss", {}),
            "optim": training.get("optim", {}),
            "data": {k: data[k] for k in DATA_FIELDS if data.get(k) is not None},
            "seed": training.get("seed", 0),
        }
        if self.is_lm and self.state.get("generation"):
            out["generation"] = self.state["generation"]
        if self.kind == FINETUNE and training.get("lora"):
            out["lora"] = training["lora"]
        if self.state.get("teacher_dtype"):
            out["teacher"] = {"dtype": self.state["teacher_dtype"]}
        if self.kind != FINETUNE:
            student = {k: v for k, v in self.student().items() if v is not None}
            if self.kind == "kd_feature":
                lm = self.layer_map()
                student["layer_map"] = lm["pairs"] if lm["preset"] == "custom" else lm["preset"]
                student["map_embeddings"] = lm["map_embeddings"]
            out["student"] = student
        return out

    def study_options(self) -> dict[str, Any]:
        """The review step's study choices: as last submitted, else baselines on and the training seed."""
        default = {"baselines": True, "ablations": [], "seeds": str(self.state.get("training", {}).get("seed", 0))}
        return {**default, **self.state.get("study", {})}

    def default_name(self) -> str:
        teacher = self.teacher.name if self.teacher else "run"
        if self.kind == FINETUNE:
            name = f"{teacher}-{self.dataset.name if self.dataset else 'data'}-finetune"
        else:
            hidden, _, _ = student_shape(StudentConfig(layers=1, **_shape(self.student())), self.arch)
            name = f"{teacher}-{self.student()['layers']}x{hidden}-{self.kind}"
        return name[:100]


def _shape(student: dict[str, Any]) -> dict[str, Any]:
    return {k: student.get(k) for k in ("hidden_size", "heads", "intermediate_size")}


def _as_data(values: dict[str, Any]) -> dict[str, Any]:
    """Stored choices as submitted form data (to re-show a step with the errors the launch found)."""
    data = {}
    for key, value in values.items():
        if isinstance(value, bool):
            if value:
                data[key] = "on"
        elif isinstance(value, (list, dict)):
            continue
        else:
            data[key] = "" if value is None else str(value)
    return data


def _form(wiz: Wizard, slug: str, form_class: type, initial: dict[str, Any], **kwargs: Any):
    """The step's form: bound to the stored choices when there are errors to show, else unbound."""
    pending = wiz.pending(slug)
    if not pending:
        return form_class(initial=initial, **kwargs)
    form = form_class(data=_as_data(initial), initial=initial, **kwargs)
    form.is_valid()
    for field, message in pending:
        target = field if field in form.fields else None
        if message not in form.errors.get(target or "__all__", []):
            form.add_error(target, message)
    return form


def _render(request: HttpRequest, wiz: Wizard, slug: str, template: str, context: dict[str, Any]) -> HttpResponse:
    current = wiz.slugs.index(slug)
    indicator = [
        {
            "number": i + 1,
            "step": s,
            "url": reverse("wizard_step", kwargs={"step": s.slug}),
            "state": "current" if i == current else "done" if s.slug in wiz.done else "todo",
            "reachable": wiz.can_visit(s.slug) and i != current,
            "has_errors": bool(wiz.pending(s.slug)),
        }
        for i, s in enumerate(wiz.steps)
    ]
    previous = wiz.neighbour(slug, -1)
    base = {
        "wizard_step": BY_SLUG[slug],
        "indicator": indicator,
        "step_number": current + 1,
        "step_count": len(wiz.steps),
        "back_url": reverse("wizard_step", kwargs={"step": previous}) if previous else None,
        "teacher": wiz.teacher,
        "kind": wiz.kind,
        "kind_title": KIND_TITLES.get(wiz.kind, wiz.kind),
        "task": wiz.task,
        "task_title": TASK_TITLES.get(wiz.task, wiz.task),
    }
    return render(request, template, {**base, **context})


# --- the steps --------------------------------------------------------------------------------------------


def _teacher_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    teachers = writable_teachers(request.user)
    preselected = teachers.filter(pk=request.GET.get("teacher")).first() if request.GET.get("teacher") else None
    initial = {
        "task": wiz.state.get("task") or request.GET.get("task") or getattr(preselected, "task", None),
        "kind": wiz.state.get("kind") or request.GET.get("kind") or "kd_feature",
        "teacher": wiz.state.get("teacher") or request.GET.get("teacher"),
    }
    initial["task"] = initial["task"] or Teacher.Task.CLASSIFICATION
    if request.method == "POST":
        form = TeacherStepForm(request.POST, teachers=teachers)
        if form.is_valid():
            teacher, kind, task = (form.cleaned_data[k] for k in ("teacher", "kind", "task"))
            if (teacher.pk, kind, task) != tuple(wiz.state.get(k) for k in ("teacher", "kind", "task")):
                _restart(wiz, teacher, kind, task)
            return wiz.advance("teacher")
    else:
        form = _form(wiz, "teacher", TeacherStepForm, initial, teachers=teachers)
    chosen_task = str(form["task"].value() or Teacher.Task.CLASSIFICATION)
    chosen_kind = str(form["kind"].value() or "kd_feature")
    chosen_teacher = str(form["teacher"].value() or "")
    tasks = [{"value": v, "title": t, "help": h, "checked": v == chosen_task} for v, t, h in TASKS]
    kinds = [
        {"value": v, "title": t, "help": h, "checked": v == chosen_kind} for v, t, h in KINDS
    ]  # radios with a one-line explanation each
    cards = []
    for t in teachers:
        arch = selectors.teacher_architecture(t)
        cards.append({"obj": t, "arch": describe_architecture(arch), "checked": str(t.pk) == chosen_teacher})
    context = {
        "form": form,
        "tasks": tasks,
        "kinds": kinds,
        "teacher_cards": cards,
        "can_write": teams_for_user(request.user, write=True).exists(),
    }
    return _render(request, wiz, "teacher", "jobs/wizard/teacher.html", context)


def _restart(wiz: Wizard, teacher: Teacher, kind: str, task: str) -> None:
    """A new teacher, kind or task: later steps are walked again (their values are kept where they still fit)."""
    if teacher.pk != wiz.state.get("teacher"):
        wiz.state.pop("layer_map", None)  # pairs of another depth
        wiz.state.pop("student", None)  # a shape relative to another teacher
        wiz.state.pop("teacher_dtype", None)
        old = wiz.teacher
        if old is None or old.team_id != teacher.team_id:
            wiz.state.get("data", {}).pop("dataset", None)
    if task != wiz.state.get("task"):
        wiz.state.pop("generation", None)
        wiz.state.get("training", {}).pop("lora", None)  # default target modules of another architecture
    wiz.state.update(teacher=teacher.pk, kind=kind, task=task, done=[], errors={})
    for cached in ("teacher", "arch", "dataset"):
        wiz.__dict__.pop(cached, None)


def student_live_context(teacher: Teacher, arch: Architecture, form: StudentStepForm) -> dict[str, Any]:
    """The live box under the student's shape: its parameter count and compression, or why not."""
    context: dict[str, Any] = {"teacher_params": arch.params, "teacher_params_text": f"{arch.params:,}"}
    if form.is_bound and form.is_valid():
        params = student_parameters(teacher, form.student_dict())
        hidden, heads, intermediate = student_shape(
            StudentConfig(layers=form.cleaned_data["layers"], **_shape(form.student_dict())), arch
        )
        context.update(
            student_params=params,
            student_params_text=f"{params:,}",
            compression=arch.params / params,
            percent=min(100.0, 100 * params / arch.params),
            shape=f"{form.cleaned_data['layers']} × {hidden}, {heads} heads, feed-forward {intermediate}",
        )
    return context


def _student_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    kwargs = {"kind": wiz.kind, "teacher": wiz.teacher, "arch": wiz.arch}
    initial = wiz.student()
    if request.method == "POST":
        form = StudentStepForm(request.POST, **kwargs)
        if form.is_valid():
            wiz.state["student"] = form.student_dict()
            return wiz.advance("student")
    else:
        form = _form(wiz, "student", StudentStepForm, initial, **kwargs)
    # the live box shows the stored (or submitted) shape straight away, also without JavaScript
    live_form = form if form.is_bound else StudentStepForm(_as_data(initial), **kwargs)
    context = {"form": form, "live": student_live_context(wiz.teacher, wiz.arch, live_form), "arch": wiz.arch}
    return _render(request, wiz, "student", "jobs/wizard/student.html", context)


# Geometry of the layer-map drawing; frontend/static/kdweb/layermap.js draws with the same numbers.
MAP_WIDTH, MAP_BOX_W, MAP_BOX_H, MAP_ROW, MAP_TOP, MAP_BOTTOM = 440, 130, 26, 34, 34, 10


def layer_map_drawing(student_layers: int, teacher_layers: int, pairs: list, bad_rows: set[int]) -> dict[str, Any]:
    """Boxes for student layers 0..S and teacher layers 0..T (embeddings at the bottom) and a line per pair."""
    span = max(student_layers, teacher_layers) * MAP_ROW

    def y(layer: int, depth: int) -> float:
        return MAP_TOP + (depth - layer) * span / depth

    def boxes(depth: int, x: int, side: str) -> list[dict[str, Any]]:
        return [
            {"layer": i, "x": x, "y": y(i, depth), "side": side, "label": "embeddings" if i == 0 else f"block {i}"}
            for i in range(depth + 1)
        ]

    tx = MAP_WIDTH - MAP_BOX_W - 2
    lines = []
    for i, pair in enumerate(pairs):
        s, t = int(pair[0]), int(pair[1])
        if 0 <= s <= student_layers and 0 <= t <= teacher_layers:
            lines.append(
                {
                    "x1": 2 + MAP_BOX_W,
                    "y1": y(s, student_layers) + MAP_BOX_H / 2,
                    "x2": tx,
                    "y2": y(t, teacher_layers) + MAP_BOX_H / 2,
                    "feature_only": s == 0 or t == 0,
                    "bad": i in bad_rows,
                }
            )
    return {
        "width": MAP_WIDTH,
        "height": MAP_TOP + span + MAP_BOX_H + MAP_BOTTOM,
        "box_w": MAP_BOX_W,
        "box_h": MAP_BOX_H,
        "student": boxes(student_layers, 2, "student"),
        "teacher": boxes(teacher_layers, tx, "teacher"),
        "lines": lines,
        "text_x": MAP_BOX_W / 2,
        "student_x": 2 + MAP_BOX_W / 2,
        "teacher_x": tx + MAP_BOX_W / 2,
    }


def _pair_rows(pairs: list) -> list[dict[str, Any]]:
    rows = []
    for raw in pairs:
        try:
            pair = LayerPair.model_validate(raw)
        except ValueError:
            continue
        rows.append({"pair": pair, "attention": has_attention(pair)})
    return rows


def _preset_pairs(student_layers: int, teacher_layers: int) -> dict[str, list[list[int]]]:
    """The pairs of each preset without the embeddings pair (the page adds it when asked)."""
    out = {}
    for preset in ("uniform", "last"):
        cfg = StudentConfig(layers=student_layers, layer_map=preset, map_embeddings=False)
        out[preset] = [[p.student, p.teacher] for p in resolve_layer_map(cfg, teacher_layers)]
    return out


def _layer_map_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    student = wiz.student()
    s_layers, t_layers = int(student["layers"]), wiz.arch.layers
    kwargs = {"kind": wiz.kind, "teacher": wiz.teacher, "arch": wiz.arch, "student": student}
    stored = wiz.layer_map()
    presets = _preset_pairs(s_layers, t_layers)
    if request.method == "POST":
        form = LayerMapStepForm(request.POST, **kwargs)
        if form.is_valid():
            preset, embeddings = form.cleaned_data["preset"], form.cleaned_data["map_embeddings"]
            pairs = form.cleaned_data["pairs"] if preset == "custom" else presets[preset]
            if preset != "custom" and embeddings:
                pairs = [[0, 0], *pairs]
            wiz.state["layer_map"] = {"preset": preset, "pairs": pairs, "map_embeddings": embeddings}
            return wiz.advance("layer-map")
        pairs = form.cleaned_data.get("pairs") or _json_pairs(request.POST.get("pairs"))
    else:
        initial = {**stored, "pairs": _dump_pairs(stored["pairs"])}
        if stored["preset"] != "custom":  # the preset follows the student's current depth
            pairs = ([[0, 0]] if stored["map_embeddings"] else []) + presets[stored["preset"]]
            initial["pairs"] = _dump_pairs(pairs)
        form = _form(wiz, "layer-map", LayerMapStepForm, initial, **kwargs)
        if form.is_bound:
            form.bad_rows |= _bad_rows(wiz.pending("layer-map"))
        pairs = _json_pairs(initial["pairs"])
    pairs = [p for p in pairs if isinstance(p, list) and len(p) >= 2]
    context = {
        "form": form,
        "student_layers": s_layers,
        "teacher_layers": t_layers,
        "presets": presets,
        "drawing": layer_map_drawing(s_layers, t_layers, pairs, form.bad_rows),
        "rows": _pair_rows(pairs),
        "bad_rows": sorted(form.bad_rows),
    }
    return _render(request, wiz, "layer-map", "jobs/wizard/layer_map.html", context)


def _dump_pairs(pairs: list) -> str:
    return json.dumps(pairs)


def _json_pairs(raw: str | None) -> list:
    try:
        value = safejson.loads(raw or "[]")
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def _bad_rows(errors: list) -> set[int]:
    rows = set()
    for _, message in errors:
        index = str(message).removeprefix("student.layer_map[").split("]")[0]
        if index.isdigit():
            rows.add(int(index))
    return rows


def _dataset_cards(wiz: Wizard, chosen: str) -> list[dict[str, Any]]:
    cards = []
    for d in wiz.datasets():
        matches = wiz.is_lm or wiz.kind == FINETUNE or list(d.labels) == wiz.teacher.labels
        sizes = [(split, f"{d.sizes[split]:,}") for split in ("train", "validation", "test") if split in d.sizes]
        cards.append({"obj": d, "checked": str(d.pk) == chosen, "matches": matches, "sizes": sizes})
    return cards


def _data_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    kwargs = {"kind": wiz.kind, "teacher": wiz.teacher, "arch": wiz.arch, "datasets": wiz.datasets()}
    positions = wiz.arch.max_positions or 128
    initial = {"max_length": min(128, positions), "eval_split": "validation", **wiz.state.get("data", {})}
    if wiz.is_lm:
        initial.update(generation_initial(wiz.state.get("generation")))
    if request.method == "POST":
        form = DataStepForm(request.POST, **kwargs)
        if form.is_valid():
            wiz.state["data"] = {"dataset": form.cleaned_data["dataset"].pk, **form.data_dict()}
            wiz.state["generation"] = form.generation_dict()
            return wiz.advance("data")
    else:
        form = _form(wiz, "data", DataStepForm, initial, **kwargs)
    context = {
        "form": form,
        "cards": _dataset_cards(wiz, str(form["dataset"].value() or "")),
        "is_lm": wiz.is_lm,
        "generation_fields": [form[f] for f in GENERATION_FIELDS[1:] if f in form.fields],
    }
    return _render(request, wiz, "data", "jobs/wizard/data.html", context)


def _training_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    stored = wiz.state.get("training", {})
    initial = training_initial(stored.get("loss", {}), stored.get("optim", {}), stored.get("seed"), stored.get("lora"))
    kwargs = {"kind": wiz.kind, "teacher": wiz.teacher, "arch": wiz.arch}
    if request.method == "POST":
        form = TrainingStepForm(request.POST, initial=initial, **kwargs)
        if form.is_valid():
            wiz.state["training"] = {
                "loss": form.loss_dict(),
                "optim": form.optim_dict(),
                "seed": form.cleaned_data["seed"],
                "lora": form.lora_dict(),
            }
            return wiz.advance("training")
    else:
        form = _form(wiz, "training", TrainingStepForm, initial, **kwargs)
    groups = [
        ("Loss weights", "How much each term counts in the total loss; 0 switches a term off.", LOSS_WEIGHTS),
        ("Distillation", "How the teacher's signals are compared with the student's.", DISTILLATION_FIELDS),
        ("Optimizer", "AdamW with warm-up and a learning-rate schedule.", OPTIM_FIELDS),
        ("LoRA", "Parameter-efficient fine-tuning of the teacher.", ("lora", *LORA_FORM_FIELDS)),
        ("Reproducibility", "", ("seed",)),
    ]
    fieldsets = [
        {"title": title, "lede": lede, "fields": [form[f] for f in names if f in form.fields]}
        for title, lede, names in groups
    ]
    context = {"form": form, "fieldsets": [f for f in fieldsets if f["fields"]]}
    return _render(request, wiz, "training", "jobs/wizard/training.html", context)


def _queue_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    queues = selectors.live_queues()
    if request.method == "POST":
        form = QueueStepForm(request.POST, queues=queues)
        if form.is_valid():
            wiz.state["queue"] = form.cleaned_data["queue"]
            return wiz.advance("queue")
    else:
        stored = wiz.state.get("queue", "")
        form = _form(wiz, "queue", QueueStepForm, {"queue": stored if stored in queues else ""}, queues=queues)
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    context = {"form": form, "queues": queues, "default_queue": default, "default_live": default in queues}
    return _render(request, wiz, "queue", "jobs/wizard/queue.html", context)


# --- review and launch ---------------------------------------------------------------------------------------


def error_step(key: str, kind: str) -> tuple[str, str | None]:
    """The step and field a ``run_create`` error key concerns: ``optim.lr`` -> (training, lr)."""
    section, _, leaf = key.partition(".")
    field = leaf.split("[")[0] or None
    if section in ("teacher", "kind", "task"):
        return "teacher", "teacher"
    if section == "student":
        if field in ("layer_map", "map_embeddings"):
            return ("layer-map", "pairs") if kind == "kd_feature" else ("student", None)
        return "student", field
    if section in ("data", "dataset"):
        return "data", field if field in DATA_FIELDS else "dataset"
    if section == "generation":
        return "data", field if field in GENERATION_FIELDS else None
    if section == "lora":
        return "training", f"lora_{field}" if field in LORA_FIELDS else "lora"
    if section in ("loss", "optim", "seed"):
        return "training", field or ("seed" if section == "seed" else None)
    if section == "queue":
        return "queue", "queue"
    return "review", section if section in ("name", "seeds", "ablations") else None


def _collect_errors(wiz: Wizard, exc: ValidationError) -> dict[str, list[list[str | None]]]:
    """Service errors by step, as (field, message); layer-map messages keep their path, as in the CLI."""
    by_step: dict[str, list[list[str | None]]] = {}
    errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    for key, messages_ in errors.items():
        slug, field = error_step(key, wiz.kind)
        for message in messages_:
            text = f"{key}: {message}" if key.startswith("student.layer_map") else message
            by_step.setdefault(slug, []).append([field, text])
    return by_step


def _summary(wiz: Wizard) -> list[dict[str, Any]]:
    """One line per step for the review, with a link back to it."""
    lines = {
        "teacher": f"{KIND_TITLES[wiz.kind]} from {wiz.teacher.name} ({wiz.teacher.team.name}); "
        f"task: {TASK_TITLES[wiz.task].lower()}"
    }
    if wiz.kind != FINETUNE:
        s = wiz.student()
        hidden, heads, intermediate = student_shape(StudentConfig(layers=s["layers"], **_shape(s)), wiz.arch)
        kv = f" sharing {s['kv_heads']} key/value heads" if s.get("kv_heads") else ""
        lines["student"] = (
            f"{s['layers']} blocks × {hidden} hidden, {heads} heads{kv}, feed-forward {intermediate}; "
            f"init {s['init']}"
        )
    if wiz.kind == "kd_feature":
        lm = wiz.layer_map()
        pairs = ", ".join(f"{p[0]}→{p[1]}" for p in lm["pairs"])
        lines["layer-map"] = f"{lm['preset']}: {pairs} (student → teacher)"
    data = wiz.state.get("data", {})
    parts = [wiz.dataset.name if wiz.dataset else "—", f"max length {data.get('max_length')}"]
    parts += [f"at most {data[k]:,} {k.split('_')[1]} samples" for k in DATA_FIELDS[1:3] if data.get(k)]
    parts.append(f"evaluate on {data.get('eval_split', 'validation')}")
    generation = wiz.state.get("generation")
    if wiz.is_lm and generation:
        parts.append(
            f"metrics {', '.join(selectors.METRIC_LABELS[m] for m in generation['metrics'])} "
            f"({generation['samples']} samples, {generation['prompt_tokens']} prompt + {generation['new_tokens']} "
            "new tokens)"
        )
    lines["data"] = ", ".join(parts)
    training = wiz.state.get("training", {})
    loss = {**LossConfig().model_dump(), **training.get("loss", {})}
    optim = {**OptimConfig().model_dump(), **training.get("optim", {})}
    weights = " · ".join(f"{t} {loss[t]:g}" for t in LOSS_WEIGHTS if t in LOSS_FIELDS[wiz.kind])
    length = f"{optim['max_steps']} steps" if optim.get("max_steps") else f"{optim['epochs']:g} epochs"
    lines["training"] = f"{weights}; lr {optim['lr']:g}, {length}, batch {optim['batch_size']}"
    if wiz.kind == FINETUNE and (lora := training.get("lora")):
        modules = ", ".join(lora["target_modules"] or lora_default_targets(wiz.arch.model_type))
        lines["training"] += f"; LoRA rank {lora['rank']}, alpha {lora['alpha']:g} on {modules}"
    queue = wiz.state.get("queue") or f"any worker (default queue “{settings.CELERY_TASK_DEFAULT_QUEUE}”)"
    lines["queue"] = queue
    return [
        {"step": s, "text": lines.get(s.slug, ""), "url": reverse("wizard_step", kwargs={"step": s.slug})}
        for s in wiz.steps
        if s.slug != "review"
    ]


def memory_budget() -> int:
    """The memory a run may use on a worker: ``KDWEB_WORKER_MEMORY_BYTES``, else what this host has free."""
    return settings.KDWEB_WORKER_MEMORY_BYTES or available_memory_bytes()


def _estimate_context(wiz: Wizard, cfg) -> dict[str, Any]:
    sizes = wiz.dataset.sizes if wiz.dataset else {}
    train_size = sizes.get("train") or 0
    if cfg.data.max_train_samples:
        train_size = min(train_size, cfg.data.max_train_samples) if train_size else cfg.data.max_train_samples
    if cfg.task == "causal_lm" and train_size:  # an LM trains on token windows, several per text
        train_size = selectors.lm_train_windows(cfg) or train_size
    teacher_config = selectors.teacher_hf_config(wiz.teacher)
    try:
        est = estimate(cfg, wiz.arch, train_size, teacher_config=teacher_config)
        budget = memory_budget()
        fixes = suggest_fixes(cfg, wiz.arch, train_size, budget, teacher_config=teacher_config)
    except (ConfigError, ValueError, KeyError, OSError):
        return {"estimate": None}
    return {
        "budget_text": format_bytes(budget),
        "over_budget": est.peak_bytes > budget,
        "fixes": [
            {
                "title": fix.title,
                "peak_text": format_bytes(fix.estimate.peak_bytes),
                "fits": fix.estimate.peak_bytes <= budget,
                "changes": json.dumps(fix.changes),
            }
            for fix in fixes
        ],
        "estimate": est,
        "student_params_text": f"{est.student_params:,}" if est.student_params else None,
        "teacher_params_text": f"{est.teacher_params:,}",
        "peak_text": format_bytes(est.peak_bytes),
        "step_text": f"{est.seconds_per_step:.2g} s"
        if est.seconds_per_step < 10
        else format_duration(est.seconds_per_step),
        "total_text": format_duration(est.total_seconds) if train_size or cfg.optim.max_steps else None,
        "train_size": train_size,
        "memory_parts": [
            ("weights", format_bytes(est.weights_bytes)),
            ("gradients and AdamW state", format_bytes(est.optimizer_bytes)),
            ("activations", format_bytes(est.activation_bytes)),
            ("attention maps", format_bytes(est.attention_bytes)),
            ("logits (causal LMs, in chunks)", format_bytes(est.logits_bytes)),
            ("Python, torch and data", format_bytes(est.runtime_bytes)),
        ],
    }


def _review_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    name = wiz.state.get("name") or wiz.default_name()
    form = _form(wiz, "review", ReviewStepForm, {"name": name, **wiz.study_options()})
    context: dict[str, Any] = {
        "form": form,
        "summary": _summary(wiz),
        "problems": [],
        "study_fields": [form["baselines"], form["ablations"], form["seeds"]] if wiz.kind != FINETUNE else [],
    }
    try:
        cfg = services.run_config_build(
            kind=wiz.kind, teacher=wiz.teacher, dataset=wiz.dataset, name=name, sections=wiz.sections()
        )
    except ValidationError as exc:
        found = _collect_errors(wiz, exc)
        wiz.state["errors"] = found
        wiz.save()
        context["problems"] = [
            {"step": BY_SLUG[slug], "url": reverse("wizard_step", kwargs={"step": slug}), "messages": items}
            for slug, items in found.items()
        ]
        return _render(request, wiz, "review", "jobs/wizard/review.html", context)
    if wiz.state.get("errors"):  # the choices are consistent again: forget what an earlier check found
        wiz.state["errors"] = {}
        wiz.save()
    context["config_yaml"] = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    context.update(_estimate_context(wiz, cfg))
    return _render(request, wiz, "review", "jobs/wizard/review.html", context)


def _launch(request: HttpRequest) -> HttpResponse:
    """POST on the review step: create the run (viewers get 403), or take each error back to its step."""
    wiz = Wizard(request)
    teacher = get_object_or_404(selectors.teacher_list(request.user), pk=wiz.state.get("teacher") or 0)
    require_write(request.user, teacher.team)
    if wiz.teacher is None or wiz.dataset is None or wiz.first_open() != "review":
        return redirect("wizard_step", step=wiz.first_open() if wiz.teacher else "teacher")
    form = ReviewStepForm(request.POST)
    wiz.state["study"] = {
        "baselines": bool(request.POST.get("baselines")),
        "ablations": request.POST.getlist("ablations"),
        "seeds": request.POST.get("seeds", ""),
    }
    if not form.is_valid():
        found = [[field, m] for field, ms in form.errors.items() for m in ms]
        wiz.state["errors"] = {**wiz.state.get("errors", {}), "review": found}
        wiz.save()
        return redirect("wizard_step", step="review")
    name = form.cleaned_data["name"]
    wiz.state["name"] = name
    as_study = wiz.kind != FINETUNE and form.cleaned_data["baselines"]
    common = {"user": request.user, "teacher": teacher, "dataset": wiz.dataset, "name": name}
    common.update(sections=wiz.sections(), queue=wiz.state.get("queue", ""))
    try:
        if as_study:
            seeds = form.cleaned_data["seeds"] or [wiz.sections()["seed"]]
            study = services.study_create(**common, ablations=form.cleaned_data["ablations"], seeds=seeds)
        else:
            run = services.run_create(**common, kind=wiz.kind)
    except ValidationError as exc:
        found = _collect_errors(wiz, exc)
        wiz.state["errors"] = found
        wiz.save()
        first = next(slug for slug in wiz.slugs if slug in found) if set(found) & set(wiz.slugs) else "review"
        messages.error(request, "The run was not launched: the highlighted fields need a change.")
        return redirect("wizard_step", step=first)
    request.session.pop(SESSION_KEY, None)
    if as_study:
        messages.success(request, f"Study “{study.name}”: {study.runs.count()} runs are queued.")
        return redirect("study_detail", study_id=study.pk)
    if run.waiting_for_broker:
        messages.warning(request, f"“{run.name}” is queued; the broker does not answer: it is sent once it does.")
    else:
        messages.success(request, f"“{run.name}” is queued on {run.queue}.")
    return redirect("run_detail", run_id=run.pk)


HANDLERS = {
    "teacher": _teacher_step,
    "student": _student_step,
    "layer-map": _layer_map_step,
    "data": _data_step,
    "training": _training_step,
    "queue": _queue_step,
    "review": _review_step,
}


# --- views ------------------------------------------------------------------------------------------------


@login_required
@require_GET
def start(request: HttpRequest) -> HttpResponse:
    """``/runs/new/``: continue where the user left off (``?teacher=&kind=`` preselect a fresh start)."""
    wiz = Wizard(request)
    if request.GET.get("teacher") or request.GET.get("kind"):
        request.session.pop(SESSION_KEY, None)
        return redirect(f"{reverse('wizard_step', kwargs={'step': 'teacher'})}?{request.GET.urlencode()}")
    return redirect("wizard_step", step=wiz.first_open() if wiz.teacher else "teacher")


@login_required
def step(request: HttpRequest, step: str) -> HttpResponse:
    if step not in BY_SLUG:
        raise Http404("No such step.")
    if request.method not in ("GET", "HEAD", "POST"):
        return HttpResponse(status=405)
    if step == "review" and request.method == "POST":
        return _launch(request)
    wiz = Wizard(request)
    if step != "teacher":
        if wiz.teacher is None:
            if wiz.state.get("teacher"):
                messages.error(request, "That teacher is no longer available to you: pick one again.")
            request.session.pop(SESSION_KEY, None)
            return redirect("wizard_step", step="teacher")
        if not wiz.can_visit(step):
            return redirect("wizard_step", step=wiz.first_open())
    return HANDLERS[step](request, wiz)


@login_required
@require_GET
def student_live(request: HttpRequest) -> HttpResponse:
    """htmx: the student's parameter count and compression for the shape being typed, errors by field."""
    wiz = Wizard(request)
    if wiz.teacher is None:
        return HttpResponse('<p class="help">Pick a teacher first.</p>')
    form = StudentStepForm(request.GET, kind=wiz.kind, teacher=wiz.teacher, arch=wiz.arch)
    context = {"live": student_live_context(wiz.teacher, wiz.arch, form), "form": form, "oob": True}
    return render(request, "jobs/wizard/_student_live.html", context)


# where a fix's dotted config path lives in the wizard's state: section -> keys from the state's root
FIX_PLACES: dict[str, tuple[str, ...]] = {
    "optim": ("training", "optim"),
    "loss": ("training", "loss"),
    "data": ("data",),
    "generation": ("generation",),
}
BAD_FIX = "That change cannot be applied here: go to its step and change it there."


def apply_fix(wiz: Wizard, changes: dict[str, Any]) -> None:
    """Set the choices a memory fix changes (``{"optim.batch_size": 8, "teacher.dtype": "bfloat16"}``);
    the review validates the result as it validates every choice. Raises ValueError for another path."""
    for path, value in changes.items():
        section, _, key = path.partition(".")
        if path == "teacher.dtype":
            wiz.state["teacher_dtype"] = value
        elif section in FIX_PLACES and key and "." not in key:
            node = wiz.state
            for part in FIX_PLACES[section]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[key] = value
        else:
            raise ValueError(path)
    wiz.save()


@login_required
@require_POST
def fix(request: HttpRequest) -> HttpResponse:
    """The review's "Apply" button of a memory fix: change those choices, then show the review again."""
    wiz = Wizard(request)
    if wiz.teacher is None:
        return redirect("wizard_step", step="teacher")
    try:
        changes = safejson.loads(request.POST.get("changes", ""))
        if not isinstance(changes, dict):
            raise ValueError(changes)
        apply_fix(wiz, changes)
    except ValueError:  # json's errors are ValueErrors too
        messages.error(request, BAD_FIX)
    else:
        messages.success(request, f"Applied: {request.POST.get('title') or ', '.join(changes)}.")
    return redirect("wizard_step", step="review")


@login_required
@require_POST
def reset(request: HttpRequest) -> HttpResponse:
    request.session.pop(SESSION_KEY, None)
    return redirect("wizard_step", step="teacher")
