"""The wizard's session: the run config chosen so far, and what follows from it.

``request.session["wizard"]`` holds ``config``, a partial run config in the engine's own layout (``kind``,
``task``, ``student``, ``data``, ``loss``, ``optim``, ``seed``, ``lora``, ``generation``, ``teacher.dtype``),
beside what is no config field: the teacher's and the data set's ids, the steps done, the errors a check
found per step, the queue and the study options. So the sections handed to ``services.run_create`` are the
config itself, and an error at a config path is routed by ``jobs.wizard.checks.owner``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from distill.config import FULL_METHOD, OptimConfig, StudentConfig, loss_defaults
from distill.students import student_shape
from distill.teachers import Architecture
from jobs import selectors
from jobs.models import DatasetSpec, Teacher
from jobs.permissions import teams_for_user
from jobs.wizard.checks import FINETUNE, owner
from jobs.wizard.forms import CAUSAL_LM, LAYER_PRESETS

SESSION_KEY = "wizard"


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
    """The steps a kind of run needs: fine-tuning has no student; only the full method maps layers."""
    skip = {"student", "layer-map"} if kind == FINETUNE else set() if kind == FULL_METHOD else {"layer-map"}
    return [s for s in STEPS if s.slug not in skip]


def error_step(key: str, kind: str) -> tuple[str, str | None]:
    """The step and field a ``run_create`` error key concerns: ``optim.lr`` -> (training, lr)."""
    return owner(key, [s.slug for s in steps_for(kind)]) or ("review", None)


def writable_teachers(user) -> QuerySet[Teacher]:
    """Teachers the user may launch runs from: those of teams where they are owner or member."""
    return selectors.teacher_list(user).filter(team__in=teams_for_user(user, write=True))


def shape(student: dict[str, Any]) -> dict[str, Any]:
    """The width fields of a ``student`` section, for ``student_shape``."""
    return {k: student.get(k) for k in ("hidden_size", "heads", "intermediate_size")}


class Wizard:
    """The choices so far and what follows from them (the teacher, the steps of this kind of run)."""

    def __init__(self, request: HttpRequest):
        self.request = request
        self.state: dict[str, Any] = dict(request.session.get(SESSION_KEY) or {})
        self.config: dict[str, Any] = self.state.setdefault("config", {})

    @property
    def kind(self) -> str:
        return self.config.get("kind", FULL_METHOD)

    @property
    def task(self) -> str:
        return self.config.get("task") or (self.teacher.task if self.teacher else Teacher.Task.CLASSIFICATION)

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
        pk = self.state.get("dataset")
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

    def section(self, name: str) -> dict[str, Any]:
        """A section of the config (``{}`` until a step sets it), to read or to change in place."""
        if not isinstance(self.config.get(name), dict):
            self.config[name] = {}
        return self.config[name]

    def student(self) -> dict[str, Any]:
        """The student's shape and init: as chosen, else half the teacher's blocks, copied."""
        stored = {k: v for k, v in self.config.get("student", {}).items() if k not in ("layer_map", "map_embeddings")}
        return stored or {"layers": max(1, self.arch.layers // 2), "init": "teacher"}

    def layer_map(self) -> tuple[str, list, bool]:
        """The preset (or ``custom``), its pairs as chosen (a preset's: none), and whether to map the embeddings."""
        student = self.config.get("student", {})
        value = student.get("layer_map", LAYER_PRESETS[0])
        custom = not isinstance(value, str)
        return ("custom" if custom else value), (value if custom else []), student.get("map_embeddings", True)

    def sections(self) -> dict[str, Any]:
        """The ``sections`` of ``services.run_create``: the config, without the sections this kind has no
        step for (a fine-tuning run has no student; only the full method maps layers)."""
        out = {k: v for k, v in self.config.items() if v is not None} | {"task": self.task}
        if not self.is_lm:
            out.pop("generation", None)
        if self.kind == FINETUNE:
            out.pop("student", None)
        else:
            out.pop("lora", None)
            student = self.student()
            if self.kind == FULL_METHOD:
                preset, pairs, embeddings = self.layer_map()
                student |= {"layer_map": pairs if preset == "custom" else preset, "map_embeddings": embeddings}
            out["student"] = student
        return out

    def loss(self) -> dict[str, Any]:
        return loss_defaults(self.task) | self.config.get("loss", {})

    def optim(self) -> dict[str, Any]:
        return OptimConfig().model_dump() | self.config.get("optim", {})

    def study_options(self) -> dict[str, Any]:
        """The review step's study choices: as last submitted, else baselines on and the training seed."""
        default = {"baselines": True, "ablations": [], "seeds": str(self.config.get("seed", 0))}
        return {**default, **self.state.get("study", {})}

    def default_name(self) -> str:
        teacher = self.teacher.name if self.teacher else "run"
        if self.kind == FINETUNE:
            name = f"{teacher}-{self.dataset.name if self.dataset else 'data'}-finetune"
        else:
            hidden, _, _ = student_shape(StudentConfig(layers=1, **shape(self.student())), self.arch)
            name = f"{teacher}-{self.student()['layers']}x{hidden}-{self.kind}"
        return name[:100]
