"""The wizard's step pages before the review: teacher, student, layer map, data, losses & optimizer, queue.

Each step shows its form with the stored choices, and on a valid POST writes its part of the partial run
config (``Wizard.config``) and moves on. The helpers at the top render any step, the review's included.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from distill.config import (
    KIND_LOSS_SETTINGS,
    KIND_TERMS,
    TEACHER_CACHE_SETTINGS,
    DataConfig,
    GenerationConfig,
    LoraConfig,
)
from jobs import safejson, selectors
from jobs.models import Teacher
from jobs.permissions import teams_for_user
from jobs.wizard.checks import FINETUNE
from jobs.wizard.drawing import (
    GEOMETRY,
    describe_architecture,
    layer_map_drawing,
    pair_rows,
    preset_pairs,
    student_live_context,
)
from jobs.wizard.forms import (
    FULL_METHOD,
    DataStepForm,
    LayerMapStepForm,
    QueueStepForm,
    StudentStepForm,
    TeacherStepForm,
    TrainingStepForm,
)
from jobs.wizard.labels import KINDS, LABELS, TASKS
from jobs.wizard.state import BY_SLUG, Wizard, writable_teachers

# --- rendering any step ----------------------------------------------------------------------------------


def as_data(values: dict[str, Any]) -> dict[str, Any]:
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


def step_form(wiz: Wizard, slug: str, form_class: type, initial: dict[str, Any], **kwargs: Any):
    """The step's form: bound to the stored choices when there are errors to show, else unbound."""
    pending = wiz.pending(slug)
    if not pending:
        return form_class(initial=initial, **kwargs)
    form = form_class(data=as_data(initial), initial=initial, **kwargs)
    form.is_valid()
    for field, message in pending:
        target = field if field in form.fields else None
        if message not in form.errors.get(target or "__all__", []):
            form.add_error(target, message)
    return form


def render_step(request: HttpRequest, wiz: Wizard, slug: str, template: str, context: dict[str, Any]) -> HttpResponse:
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
        "kind_title": KINDS[wiz.kind][0] if wiz.kind in KINDS else wiz.kind,
        "task": wiz.task,
        "task_title": TASKS[wiz.task][0] if wiz.task in TASKS else wiz.task,
    }
    return render(request, template, {**base, **context})


# --- 1. teacher --------------------------------------------------------------------------------------------


def teacher_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    teachers = writable_teachers(request.user)
    preselected = teachers.filter(pk=request.GET.get("teacher")).first() if request.GET.get("teacher") else None
    initial = {
        "task": wiz.config.get("task") or request.GET.get("task") or getattr(preselected, "task", None),
        "kind": wiz.config.get("kind") or request.GET.get("kind") or FULL_METHOD,
        "teacher": wiz.state.get("teacher") or request.GET.get("teacher"),
    }
    initial["task"] = initial["task"] or Teacher.Task.CLASSIFICATION
    if request.method == "POST":
        form = TeacherStepForm(request.POST, teachers=teachers)
        if form.is_valid():
            teacher, kind, task = (form.cleaned_data[k] for k in ("teacher", "kind", "task"))
            if (teacher.pk, kind, task) != (wiz.state.get("teacher"), wiz.config.get("kind"), wiz.config.get("task")):
                restart(wiz, teacher, kind, task)
            return wiz.advance("teacher")
    else:
        form = step_form(wiz, "teacher", TeacherStepForm, initial, teachers=teachers)
    chosen_task = str(form["task"].value() or Teacher.Task.CLASSIFICATION)
    chosen_kind = str(form["kind"].value() or FULL_METHOD)
    chosen_teacher = str(form["teacher"].value() or "")
    tasks = [{"value": v, "title": t, "help": h, "checked": v == chosen_task} for v, (t, h) in TASKS.items()]
    kinds = [{"value": v, "title": t, "help": h, "checked": v == chosen_kind} for v, (t, h) in KINDS.items()]
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
    return render_step(request, wiz, "teacher", "jobs/wizard/teacher.html", context)


def restart(wiz: Wizard, teacher: Teacher, kind: str, task: str) -> None:
    """A new teacher, kind or task: later steps are walked again (their values are kept where they still fit)."""
    if teacher.pk != wiz.state.get("teacher"):
        wiz.config.pop("student", None)  # a shape and pairs relative to another teacher
        wiz.config.pop("teacher", None)  # its dtype
        old = wiz.teacher
        if old is None or old.team_id != teacher.team_id:
            wiz.state.pop("dataset", None)
    if task != wiz.config.get("task"):
        wiz.config.pop("generation", None)
        wiz.config.pop("lora", None)  # default target modules of another architecture
    wiz.config.update(kind=kind, task=task)
    wiz.state.update(teacher=teacher.pk, done=[], errors={})
    for cached in ("teacher", "arch", "dataset"):
        wiz.__dict__.pop(cached, None)


# --- 2. student and 3. layer map ------------------------------------------------------------------------------


def student_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    kwargs = {"kind": wiz.kind, "teacher": wiz.teacher, "arch": wiz.arch}
    initial = wiz.student()
    if request.method == "POST":
        form = StudentStepForm(request.POST, **kwargs)
        if form.is_valid():
            mapping = {k: v for k, v in wiz.section("student").items() if k in ("layer_map", "map_embeddings")}
            wiz.config["student"] = form.student_dict() | mapping
            return wiz.advance("student")
    else:
        form = step_form(wiz, "student", StudentStepForm, initial, **kwargs)
    # the live box shows the stored (or submitted) shape straight away, also without JavaScript
    live_form = form if form.is_bound else StudentStepForm(as_data(initial), **kwargs)
    context = {"form": form, "live": student_live_context(wiz.teacher, wiz.arch, live_form), "arch": wiz.arch}
    return render_step(request, wiz, "student", "jobs/wizard/student.html", context)


def layer_map_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    student = wiz.student()
    s_layers, t_layers = int(student["layers"]), wiz.arch.layers
    kwargs = {"kind": wiz.kind, "teacher": wiz.teacher, "arch": wiz.arch, "student": student}
    preset, stored_pairs, embeddings = wiz.layer_map()
    presets = preset_pairs(s_layers, t_layers)
    if request.method == "POST":
        form = LayerMapStepForm(request.POST, **kwargs)
        if form.is_valid():
            chosen = {"layer_map": form.layer_map_value(), "map_embeddings": form.cleaned_data["map_embeddings"]}
            wiz.section("student").update(chosen)
            return wiz.advance("layer-map")
        pairs = form.cleaned_data.get("pairs") or json_pairs(request.POST.get("pairs"))
    else:
        # a preset's pairs follow the student's current depth
        pairs = stored_pairs if preset == "custom" else ([[0, 0]] if embeddings else []) + presets[preset]
        initial = {"preset": preset, "pairs": json.dumps(pairs), "map_embeddings": embeddings}
        form = step_form(wiz, "layer-map", LayerMapStepForm, initial, **kwargs)
        if form.is_bound:
            form.bad_rows |= bad_rows(wiz.pending("layer-map"))
    pairs = [p for p in pairs if isinstance(p, list) and len(p) >= 2]
    context = {
        "form": form,
        "student_layers": s_layers,
        "teacher_layers": t_layers,
        "presets": presets,
        "drawing": layer_map_drawing(s_layers, t_layers, pairs, form.bad_rows),
        "geometry": GEOMETRY,
        "rows": pair_rows(pairs),
        "bad_rows": sorted(form.bad_rows),
    }
    return render_step(request, wiz, "layer-map", "jobs/wizard/layer_map.html", context)


def json_pairs(raw: str | None) -> list:
    try:
        value = safejson.loads(raw or "[]")
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def bad_rows(errors: list) -> set[int]:
    rows = set()
    for _, message in errors:
        index = str(message).removeprefix("student.layer_map[").split("]")[0]
        if index.isdigit():
            rows.add(int(index))
    return rows


# --- 4. data, 5. training, 6. queue ----------------------------------------------------------------------------


def dataset_cards(wiz: Wizard, chosen: str) -> list[dict[str, Any]]:
    cards = []
    for d in wiz.datasets():
        matches = wiz.is_lm or wiz.kind == FINETUNE or list(d.labels) == wiz.teacher.labels
        sizes = [(split, f"{d.sizes[split]:,}") for split in ("train", "validation", "test") if split in d.sizes]
        cards.append({"obj": d, "checked": str(d.pk) == chosen, "matches": matches, "sizes": sizes})
    return cards


def data_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    kwargs = {"kind": wiz.kind, "teacher": wiz.teacher, "arch": wiz.arch, "datasets": wiz.datasets()}
    initial = {k: DataConfig.model_fields[k].default for k in LABELS["data"]} | {"dataset": wiz.state.get("dataset")}
    initial["max_length"] = min(initial["max_length"], wiz.arch.max_positions or initial["max_length"])
    initial |= wiz.config.get("data", {})
    if wiz.is_lm:  # earlier choices over the engine's defaults
        initial |= GenerationConfig().model_dump(mode="json") | (wiz.config.get("generation") or {})
    if request.method == "POST":
        form = DataStepForm(request.POST, **kwargs)
        if form.is_valid():
            wiz.state["dataset"] = form.cleaned_data["dataset"].pk
            wiz.config.update(data=form.data_dict(), generation=form.generation_dict())
            return wiz.advance("data")
    else:
        form = step_form(wiz, "data", DataStepForm, initial, **kwargs)
    context = {
        "form": form,
        "cards": dataset_cards(wiz, str(form["dataset"].value() or "")),
        "is_lm": wiz.is_lm,
        "generation_fields": [form[f] for f in list(LABELS["generation"])[1:] if f in form.fields],
    }
    return render_step(request, wiz, "data", "jobs/wizard/data.html", context)


def training_initial(wiz: Wizard) -> dict[str, Any]:
    """The training step's fields: earlier choices over the engine's defaults (LoRA's as ``lora_*``)."""
    lora = wiz.config.get("lora")
    lora_values = LoraConfig().model_dump() | (lora or {})
    modules = lora_values.pop("target_modules") or ()
    return {
        **wiz.loss(),
        **wiz.optim(),
        "seed": wiz.config.get("seed") or 0,
        "lora": lora is not None,
        **{f"lora_{k}": v for k, v in lora_values.items()},
        "lora_target_modules": ", ".join(modules),
    }


def training_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    initial = training_initial(wiz)
    kwargs = {"kind": wiz.kind, "teacher": wiz.teacher, "arch": wiz.arch}
    if request.method == "POST":
        form = TrainingStepForm(request.POST, initial=initial, **kwargs)
        if form.is_valid():
            wiz.config.update(form.sections())
            return wiz.advance("training")
    else:
        form = step_form(wiz, "training", TrainingStepForm, initial, **kwargs)
    terms = KIND_TERMS[wiz.kind]
    settings_ = tuple(s for s in KIND_LOSS_SETTINGS[wiz.kind] if s not in TEACHER_CACHE_SETTINGS)
    groups = [
        ("Loss weights", "How much each term counts in the total loss; 0 switches a term off.", terms),
        ("Distillation", "How the teacher's signals are compared with the student's.", settings_),
        (
            "Teacher outputs",
            "The frozen teacher's outputs on the training split, computed once and read by every epoch and by "
            "every run of a study that needs them.",
            TEACHER_CACHE_SETTINGS,
        ),
        ("Optimizer", "AdamW with warm-up and a learning-rate schedule.", tuple(LABELS["optim"])),
        ("LoRA", "Parameter-efficient fine-tuning of the teacher.", ("lora", *(f"lora_{k}" for k in LABELS["lora"]))),
        ("Reproducibility", "", ("seed",)),
    ]
    fieldsets = [
        {"title": title, "lede": lede, "fields": [form[f] for f in names if f in form.fields]}
        for title, lede, names in groups
    ]
    context = {"form": form, "fieldsets": [f for f in fieldsets if f["fields"]]}
    return render_step(request, wiz, "training", "jobs/wizard/training.html", context)


def queue_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    queues = selectors.live_queues()
    if request.method == "POST":
        form = QueueStepForm(request.POST, queues=queues)
        if form.is_valid():
            wiz.state["queue"] = form.cleaned_data["queue"]
            return wiz.advance("queue")
    else:
        stored = wiz.state.get("queue", "")
        form = step_form(wiz, "queue", QueueStepForm, {"queue": stored if stored in queues else ""}, queues=queues)
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    context = {"form": form, "queues": queues, "default_queue": default, "default_live": default in queues}
    return render_step(request, wiz, "queue", "jobs/wizard/queue.html", context)
