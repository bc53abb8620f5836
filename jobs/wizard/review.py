"""The wizard's last step: the review (the whole config, its size and cost, memory fixes), and the launch.

The review validates the partial config the way the launch does (``services.run_config_build``); every error
goes back to the step and field that edit its config path (``jobs.wizard.state.error_step``). A memory fix
(``{"optim.batch_size": 8}``) is written into the partial config at its own path.
"""

from __future__ import annotations

from typing import Any

import yaml
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from distill.config import ABLATIONS, KIND_TERMS, DataConfig, StudentConfig
from distill.layer_map import resolve_layer_map
from distill.students import student_shape
from jobs import safejson, scorecard, selectors, services
from jobs.permissions import require_write
from jobs.wizard.balance import balance_context
from jobs.wizard.checks import FINETUNE
from jobs.wizard.estimate import estimate_context
from jobs.wizard.forms import FULL_METHOD, lora_default_targets
from jobs.wizard.labels import KINDS, LABELS, TASKS
from jobs.wizard.state import BY_SLUG, SESSION_KEY, Wizard, error_step, shape
from jobs.wizard.steps import render_step, step_form

# the config sections a memory fix may change (as ``section.field``), besides the teacher's dtype
FIXABLE = ("optim", "loss", "data", "generation")
# the tag of the launch message: the run page's live view removes it once the run leaves the queue (live.js)
QUEUED_NOTICE = "queued-notice"
BAD_FIX = "That change cannot be applied here: go to its step and change it there."


ABLATION_CHOICES = [
    (variant, f"{variant} (feature KD without the {zeroed} term)") for variant, zeroed in ABLATIONS.items()
]


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
        choices=ABLATION_CHOICES,
        label="Ablations",
    )
    seeds = forms.CharField(
        required=False,
        max_length=100,
        label="Seeds",
        help_text="One or more, comma-separated (0 or 0,1,2): every run of the study is trained once per seed, and "
        "the scorecard shows each variant's mean ± spread.",
    )

    def __init__(self, *args: Any, loss: dict[str, Any], **kwargs: Any):
        super().__init__(*args, **kwargs)
        # an ablation of a term the full method weighs 0 would train the full method again
        weighted = services.weighted_ablations(loss)
        self.fields["ablations"].choices = [(v, text) for v, text in ABLATION_CHOICES if v in weighted]

    def clean_seeds(self) -> list[int]:
        """``"0, 1,2"`` -> ``[0, 1, 2]`` (each once); blank -> ``[]``, the seed of the training step."""
        parts = [part.strip() for part in self.cleaned_data["seeds"].split(",") if part.strip()]
        try:
            return list(dict.fromkeys(int(part) for part in parts))
        except ValueError:
            raise forms.ValidationError("Seeds are whole numbers separated by commas, e.g. 0,1,2.") from None


def collect_errors(wiz: Wizard, exc: ValidationError) -> dict[str, list[list[str | None]]]:
    """Service errors by step, as (field, message); layer-map messages keep their path, as in the CLI."""
    by_step: dict[str, list[list[str | None]]] = {}
    errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    for key, messages_ in errors.items():
        slug, field = error_step(key, wiz.kind)
        for message in messages_:
            text = f"{key}: {message}" if key.startswith("student.layer_map") else message
            by_step.setdefault(slug, []).append([field, text])
    return by_step


def summary(wiz: Wizard) -> list[dict[str, Any]]:
    """One line per step for the review, with a link back to it."""
    lines = {
        "teacher": f"{KINDS[wiz.kind][0]} from {wiz.teacher.name} ({wiz.teacher.team.name}); "
        f"task: {TASKS[wiz.task][0].lower()}"
    }
    if wiz.kind != FINETUNE:
        s = wiz.student()
        hidden, heads, intermediate = student_shape(StudentConfig(layers=s["layers"], **shape(s)), wiz.arch)
        kv = f" sharing {s['kv_heads']} key/value heads" if s.get("kv_heads") else ""
        lines["student"] = (
            f"{s['layers']} blocks × {hidden} hidden, {heads} heads{kv}, feed-forward {intermediate}; init {s['init']}"
        )
    if wiz.kind == FULL_METHOD:
        preset, pairs, embeddings = wiz.layer_map()
        if preset != "custom":
            cfg = StudentConfig(layers=wiz.student()["layers"], layer_map=preset, map_embeddings=embeddings)
            pairs = [[p.student, p.teacher] for p in resolve_layer_map(cfg, wiz.arch.layers)]
        lines["layer-map"] = f"{preset}: {', '.join(f'{p[0]}→{p[1]}' for p in pairs)} (student → teacher)"
    data = {k: DataConfig.model_fields[k].default for k in LABELS["data"]} | wiz.config.get("data", {})
    parts = [wiz.dataset.name if wiz.dataset else "—", f"max length {data.get('max_length')}"]
    parts += [f"at most {data[k]:,} {k.split('_')[1]} samples" for k in list(LABELS["data"])[1:3] if data.get(k)]
    parts.append(f"evaluate on {data['eval_split']}")
    generation = wiz.config.get("generation")
    if wiz.is_lm and generation:
        parts.append(
            f"metrics {', '.join(scorecard.METRIC_LABELS[m] for m in generation['metrics'])} "
            f"({generation['samples']} samples, {generation['prompt_tokens']} prompt + {generation['new_tokens']} "
            "new tokens)"
        )
    lines["data"] = ", ".join(parts)
    loss, optim = wiz.loss(), wiz.optim()
    weights = " · ".join(f"{t} {loss[t]:g}" for t in KIND_TERMS[wiz.kind])
    length = f"{optim['max_steps']} steps" if optim.get("max_steps") else f"{optim['epochs']:g} epochs"
    lines["training"] = f"{weights}; lr {optim['lr']:g}, {length}, batch {optim['batch_size']}"
    if wiz.kind == FINETUNE and (lora := wiz.config.get("lora")):
        modules = ", ".join(lora["target_modules"] or lora_default_targets(wiz.arch.model_type))
        lines["training"] += f"; LoRA rank {lora['rank']}, alpha {lora['alpha']:g} on {modules}"
    lines["queue"] = wiz.state.get("queue") or f"any worker (default queue “{settings.CELERY_TASK_DEFAULT_QUEUE}”)"
    return [
        {"step": s, "text": lines.get(s.slug, ""), "url": reverse("wizard_step", kwargs={"step": s.slug})}
        for s in wiz.steps
        if s.slug != "review"
    ]


def review_step(request: HttpRequest, wiz: Wizard) -> HttpResponse:
    name = wiz.config.get("name") or wiz.default_name()
    form = step_form(wiz, "review", ReviewStepForm, {"name": name, **wiz.study_options()}, loss=wiz.loss())
    context: dict[str, Any] = {
        "form": form,
        "summary": summary(wiz),
        "problems": [],
        "study_fields": [form["baselines"], form["ablations"], form["seeds"]] if wiz.kind != FINETUNE else [],
    }
    try:
        cfg = services.run_config_build(
            kind=wiz.kind, teacher=wiz.teacher, dataset=wiz.dataset, name=name, sections=wiz.sections()
        )
    except ValidationError as exc:
        found = collect_errors(wiz, exc)
        wiz.state["errors"] = found
        wiz.save()
        context["problems"] = [
            {"step": BY_SLUG[slug], "url": reverse("wizard_step", kwargs={"step": slug}), "messages": items}
            for slug, items in found.items()
        ]
        return render_step(request, wiz, "review", "jobs/wizard/review.html", context)
    if wiz.state.get("errors"):  # the choices are consistent again: forget what an earlier check found
        wiz.state["errors"] = {}
        wiz.save()
    context["config_yaml"] = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    context.update(estimate_context(wiz, cfg))
    context.update(balance_context(wiz, cfg))
    return render_step(request, wiz, "review", "jobs/wizard/review.html", context)


def launch(request: HttpRequest) -> HttpResponse:
    """POST on the review step: create the run (viewers get 403), or take each error back to its step."""
    wiz = Wizard(request)
    teacher = get_object_or_404(selectors.teacher_list(request.user), pk=wiz.state.get("teacher") or 0)
    require_write(request.user, teacher.team)
    if wiz.teacher is None or wiz.dataset is None or wiz.first_open() != "review":
        return redirect("wizard_step", step=wiz.first_open() if wiz.teacher else "teacher")
    form = ReviewStepForm(request.POST, loss=wiz.loss())
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
    wiz.config["name"] = name
    as_study = wiz.kind != FINETUNE and form.cleaned_data["baselines"]
    common = {"user": request.user, "teacher": teacher, "dataset": wiz.dataset, "name": name}
    common.update(sections=wiz.sections(), queue=wiz.state.get("queue", ""))
    try:
        if as_study:
            seeds = form.cleaned_data["seeds"] or [wiz.config.get("seed", 0)]
            study = services.study_create(**common, ablations=form.cleaned_data["ablations"], seeds=seeds)
        else:
            run = services.run_create(**common, kind=wiz.kind)
    except ValidationError as exc:
        found = collect_errors(wiz, exc)
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
        messages.warning(
            request,
            f"“{run.name}” is queued; the broker does not answer: it is sent once it does.",
            extra_tags=QUEUED_NOTICE,
        )
    else:
        messages.success(request, f"“{run.name}” is queued on {run.queue}.", extra_tags=QUEUED_NOTICE)
    return redirect("run_detail", run_id=run.pk)


def apply_fix(wiz: Wizard, changes: dict[str, Any]) -> None:
    """Set the choices a memory fix changes (``{"optim.batch_size": 8, "teacher.dtype": "bfloat16"}``) at
    their config paths; the review validates the result as it validates every choice. Raises ValueError for
    a path no fix may change."""
    for path, value in changes.items():
        section, _, key = path.partition(".")
        if path != "teacher.dtype" and (section not in FIXABLE or not key or "." in key):
            raise ValueError(path)
        wiz.section(section)[key] = value
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
