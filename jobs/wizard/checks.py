"""Which wizard step edits which config path, and the engine's checks the steps share.

An error of the engine names a config path (``loss.attention``, ``student.layer_map[2]``); :data:`OWNS` says
which step's form edits that path and at which field, so the steps, the review and the launch all route an
error the same way, from the config's own layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django import forms

from distill.config import ConfigError, LossConfig, parse_config
from distill.students import validate_against
from distill.teachers import Architecture
from jobs.models import Run, Teacher
from jobs.wizard.labels import LABELS

FINETUNE = Run.Kind.TEACHER_FINETUNE


# --- which step edits which config path, and at which field ------------------------------------------------


@dataclass(frozen=True)
class Owns:
    """A config path a step edits: errors at ``path.leaf`` land on field ``prefix + leaf`` when the step
    shows ``leaf``, else on ``otherwise`` (``None``: the top of the form for the path itself)."""

    path: str
    fields: tuple[str, ...] = ()
    prefix: str = ""
    otherwise: str | None = None

    def field(self, key: str) -> str | bool | None:
        """The field of error ``key``; ``False`` when ``key`` is not under this path."""
        if key != self.path and not key.startswith((self.path + ".", self.path + "[")):
            return False
        leaf = key[len(self.path) :].lstrip(".").split("[")[0].split(".")[0]
        return self.prefix + leaf if leaf in self.fields else self.otherwise


OWNS: dict[str, tuple[Owns, ...]] = {
    "teacher": tuple(Owns(path, otherwise="teacher") for path in ("teacher", "kind", "task")),
    "student": (Owns("student", tuple(LABELS["student"])),),
    "layer-map": tuple(Owns(f"student.{path}", otherwise="pairs") for path in ("layer_map", "map_embeddings")),
    "data": (
        Owns("data", tuple(LABELS["data"]), otherwise="dataset"),
        Owns("dataset", otherwise="dataset"),
        Owns("generation", tuple(LABELS["generation"])),
    ),
    "training": (
        Owns("loss", tuple(LossConfig.model_fields)),
        Owns("optim", tuple(LABELS["optim"])),
        Owns("seed", otherwise="seed"),
        Owns("lora", tuple(LABELS["lora"]), prefix="lora_", otherwise="lora"),
    ),
    "queue": (Owns("queue", otherwise="queue"),),
    "review": tuple(Owns(path, otherwise=path) for path in ("name", "seeds", "ablations")),
}


def owner(key: str, slugs: Iterable[str]) -> tuple[str, str | None] | None:
    """The step among ``slugs`` that edits config path ``key``, and its field (the most specific path wins)."""
    found = [(len(o.path), slug, o.field(key)) for slug in slugs for o in OWNS[slug] if o.field(key) is not False]
    if not found:
        return None
    _, slug, field = max(found, key=lambda item: item[0])
    return slug, field


def add_config_errors(form: forms.Form, errors: Iterable[tuple[str, str]], slug: str) -> None:
    """Show the engine's errors at the fields of step ``slug`` that edit their paths; an error at a whole
    section (``loss: every term ... has weight 0``) goes to the top. Errors of other steps are not shown."""
    for path, message in errors:
        found = owner(path, [slug])
        if found is None:
            continue
        field = found[1]
        if field in form.fields:
            form.add_error(field, message)
        elif field is None and "." not in path and "[" not in path:
            form.add_error(None, message)


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


def without_blanks(values: dict[str, Any]) -> dict[str, Any]:
    """A section as the config holds it: a blank field means the engine's default."""
    return {k: v for k, v in values.items() if v not in ("", None)}
