"""Studies: the full method against its baselines and ablations, each trained once per seed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from distill.config import ABLATIONS, BASELINES, FULL_METHOD, loss_defaults
from jobs.models import DatasetSpec, Run, Study, Teacher
from jobs.permissions import require_write
from jobs.services.runs import checked_queue, run_create

MAX_STUDY_SEEDS = 10


def weighted_ablations(loss: Mapping[str, Any]) -> list[str]:
    """The ablations that mean something for a full method with ``loss``: those of a term it weighs above 0."""
    return [variant for variant, zeroed in ABLATIONS.items() if loss.get(zeroed)]


def study_variants(ablations: Iterable[str], loss: Mapping[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
    """``(variant, kind, loss weights set to 0)`` of a study: the full method, the chosen ablations of it, then
    the baselines, in the order the scorecard shows them. ``loss`` is the full method's loss section (an ablation
    of a term it already weighs 0 would repeat the full method)."""
    chosen = set(ablations)
    unknown = sorted(chosen - set(ABLATIONS))
    if unknown:
        raise ValidationError(
            {"ablations": f"Unknown ablation {', '.join(unknown)}: choose from {', '.join(ABLATIONS)}."}
        )
    idle = sorted(chosen - set(weighted_ablations(loss)))
    if idle:
        raise ValidationError(
            {
                "ablations": f"{idle[0]} switches the {ABLATIONS[idle[0]]} term off, and its weight is already 0: "
                "the run would repeat the full method."
            }
        )
    return [
        (FULL_METHOD, FULL_METHOD, {}),
        *((variant, FULL_METHOD, {zeroed: 0.0}) for variant, zeroed in ABLATIONS.items() if variant in chosen),
        *((kind, kind, {}) for kind in BASELINES),
    ]


def study_run_name(study: str, variant: str, seed: int) -> str:
    """``<study> · <variant> · seed <n>``, the study's name shortened to fit a run's name."""
    suffix = f" · {variant} · seed {seed}"
    return study[: Run._meta.get_field("name").max_length - len(suffix)] + suffix


def _labelled(exc: ValidationError, label: str) -> ValidationError:
    """The same errors (keyed by the same fields), each message saying which run of the study it concerns."""
    if hasattr(exc, "error_dict"):
        return ValidationError({key: [f"{label}: {m}" for m in ms] for key, ms in exc.message_dict.items()})
    return ValidationError([f"{label}: {m}" for m in exc.messages])


@transaction.atomic
def study_create(
    *,
    user,
    teacher: Teacher,
    dataset: DatasetSpec,
    name: str,
    sections: dict,
    ablations: Iterable[str] = (),
    seeds: Iterable[int] = (0,),
    queue: str = "",
) -> Study:
    """A study of the full method (kd_feature) against its baselines (kd_logits, no_kd) and the chosen
    ablations (``output+feature``: kd_feature without the attention term, ``output+attention``: without the
    feature term), each trained once per seed with the same student shape, data, budget and queue.

    One transaction: every run is validated and created by ``run_create`` (so each is enqueued on commit), or
    none is. Every run evaluates its teacher at its end, on the same split and host as its student
    (``Evaluation`` role ``teacher``): the scorecard compares with that, so no separate teacher run is needed.
    """
    require_write(user, teacher.team)
    variants = study_variants(ablations, loss_defaults(teacher.task) | sections.get("loss", {}))
    seeds = list(dict.fromkeys(seeds))
    if not seeds:
        raise ValidationError({"seeds": "Give at least one seed."})
    if len(seeds) > MAX_STUDY_SEEDS:
        raise ValidationError({"seeds": f"At most {MAX_STUDY_SEEDS} seeds ({len(seeds)} given)."})
    queue = checked_queue(queue)  # once for all its runs, unlabelled
    names = ", ".join(variant for variant, _, _ in variants)
    study = Study.objects.create(
        team=teacher.team,
        name=name,
        description=f"{names} on {dataset.name}; seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}",
        created_by=user,
    )
    for seed in seeds:
        for variant, kind, zeroed in variants:
            run_sections = {**sections, "seed": seed, "loss": {**sections.get("loss", {}), **zeroed}}
            try:
                run = run_create(
                    user=user,
                    teacher=teacher,
                    dataset=dataset,
                    kind=kind,
                    name=study_run_name(name, variant, seed),
                    sections=run_sections,
                    queue=queue,
                )
            except ValidationError as exc:
                raise _labelled(exc, f"{variant}, seed {seed}") from None
            run.study = study
            run.save(update_fields=["study"])
    return study
