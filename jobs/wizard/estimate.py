"""The review's cost panel: the run's memory and time on a worker, the memory fixes, and a study's time.

Times come from ``distill.estimate`` (parameter and token counts), calibrated by the nearest record of a run
that finished on the queue (``selectors.step_time_nearest``), or, with none, by the first steps the balance
preview timed on a worker of the queue for this very config (``jobs.wizard.balance``).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError

from distill.config import FULL_METHOD, KD_KINDS, ConfigError, RunConfig
from distill.estimate import Estimate, available_memory_bytes, estimate, format_bytes, format_duration
from distill.fixes import suggest_fixes
from jobs import selectors, services
from jobs.models import StepTime
from jobs.wizard.balance import queue_of, stored_preview
from jobs.wizard.cache import CacheReview, cache_context, cache_review
from jobs.wizard.checks import FINETUNE
from jobs.wizard.state import Wizard


def memory_budget() -> int:
    """The memory a run may use on a worker: ``KDWEB_WORKER_MEMORY_BYTES``, else what this host has free."""
    return settings.KDWEB_WORKER_MEMORY_BYTES or available_memory_bytes()


def split_sizes(wiz: Wizard, cfg: RunConfig) -> tuple[int, int, int]:
    """(train, validation, held-out) examples of the run: texts, capped as the config caps them; for a causal LM
    token windows, several per text (the other splits at the train split's windows per text)."""
    sizes = wiz.dataset.sizes if wiz.dataset else {}
    train_size = sizes.get("train") or 0
    if cfg.data.max_train_samples:
        train_size = min(train_size, cfg.data.max_train_samples) if train_size else cfg.data.max_train_samples
    held = [sizes.get(name) or 0 for name in ("validation", cfg.data.eval_split)]
    if cfg.data.max_eval_samples:
        held = [min(n, cfg.data.max_eval_samples) for n in held]
    if cfg.task == "causal_lm" and train_size:  # an LM trains on token windows, several per text
        windows = selectors.lm_train_windows(cfg)
        if windows:
            held = [round(n * windows / train_size) for n in held]
            train_size = windows
    return train_size, held[0], held[1]


def run_estimate(
    wiz: Wizard,
    cfg: RunConfig,
    sizes: tuple[int, int, int],
    step_ratio: float | None = None,
    cache: Literal["read", "build"] | None = None,
) -> tuple[Estimate, StepTime | None]:
    """The run's cost on splits of ``sizes`` (``split_sizes``), reading or building its teacher-output ``cache``
    (:class:`jobs.wizard.cache.CacheReview`), its times calibrated by the nearest measured run on its queue when
    there is one, else its step time by ``step_ratio`` (:func:`timed_step_ratio`)."""
    train_size, val_size, eval_size = sizes
    teacher_config = selectors.teacher_hf_config(wiz.teacher)
    cache = cache if cfg.kind in KD_KINDS else None
    est = estimate(
        cfg, wiz.arch, train_size, teacher_config=teacher_config, eval_size=eval_size, val_size=val_size, cache=cache
    )
    record = selectors.step_time_nearest(wiz.teacher, cfg, queue_of(wiz))
    if record is not None:
        return est.calibrated(record.ratios()), record
    return (est.calibrated({"step_s": step_ratio}) if step_ratio else est), None


def timed_step_ratio(preview: dict[str, Any] | None) -> float | None:
    """Measured / analytic seconds of the steps a stored preview timed (how fast the queue's worker is against
    the analytic model: it holds for the study's other kinds too); None when it timed none."""
    measured, analytic = (preview or {}).get("step_s"), (preview or {}).get("analytic_step_s")
    return measured / analytic if measured and analytic else None


def study_time(
    wiz: Wizard,
    cfg: RunConfig,
    sizes: tuple[int, int, int],
    step_ratio: float | None = None,
    cache: CacheReview | None = None,
) -> dict[str, Any] | None:
    """What the study the review would launch takes: every run's time (variants × seeds), its distillation runs
    reading the teacher-output ``cache`` it builds once (per seed) before them, and the wall time on the queue's
    workers, each running one job at a time. None when the review launches a single run."""
    options = wiz.study_options()
    if wiz.kind == FINETUNE or not options.get("baselines"):
        return None
    try:
        variants = services.study_variants(options.get("ablations") or [], cfg.loss.model_dump())
    except ValidationError:
        return None
    seeds = max(1, len([s for s in str(options.get("seeds") or "").split(",") if s.strip()]))
    mode = cache.estimate_mode if cache else None
    by_kind = {
        kind: run_estimate(wiz, cfg.model_copy(update={"kind": kind}), sizes, step_ratio, "read" if mode else None)[0]
        for _, kind, _ in variants
    }
    runs = len(variants) * seeds
    work = seeds * sum(by_kind[kind].total_seconds for _, kind, _ in variants)
    if mode == "build":  # once per seed, before its first run trains
        full = cfg.model_copy(update={"kind": FULL_METHOD})
        work += seeds * run_estimate(wiz, full, sizes, step_ratio, mode)[0].caching_seconds
    workers = selectors.queue_workers(queue_of(wiz))
    wall = work / min(workers, runs) if workers else work
    return {
        "runs": runs,
        "work_s": work,
        "work_text": format_duration(work),
        "wall_text": format_duration(wall),
        "workers": workers,
    }


def estimate_context(wiz: Wizard, cfg: RunConfig) -> dict[str, Any]:
    """The cost panel, with the teacher-output cache's line (read, built first, or the teacher live)."""
    sizes = split_sizes(wiz, cfg)
    train_size = sizes[0]
    teacher_config = selectors.teacher_hf_config(wiz.teacher)
    preview = stored_preview(wiz, cfg)
    step_ratio = timed_step_ratio(preview)
    as_study = wiz.kind != FINETUNE and bool(wiz.study_options().get("baselines"))
    cache = cache_review(wiz, cfg, train_size, as_study)
    try:
        est, record = run_estimate(wiz, cfg, sizes, step_ratio, cache.estimate_mode)
        budget = memory_budget()
        fixes = suggest_fixes(cfg, wiz.arch, train_size, budget, teacher_config=teacher_config)
        study = study_time(wiz, cfg, sizes, step_ratio, cache)
    except (ConfigError, ValueError, KeyError, OSError):
        return {"estimate": None, **cache_context(cache, None)}
    caching_text = format_duration(est.caching_seconds) if est.caching_seconds else None
    if as_study and cache.state == "build":  # the study's build: its full-method run's teacher pass
        full = run_estimate(wiz, cfg.model_copy(update={"kind": FULL_METHOD}), sizes, step_ratio, "build")[0]
        caching_text = format_duration(full.caching_seconds)
    return {
        **cache_context(cache, caching_text),
        "caching_text": caching_text,
        "calibrated_by": record,
        "timed_step_text": _seconds(preview["step_s"]) if step_ratio and not record else None,
        "study_time": study,
        "finish_parts": [(phase, format_duration(seconds)) for phase, seconds in est.finish_seconds.items()],
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
        "step_text": _seconds(est.seconds_per_step),
        "total_text": format_duration(est.total_seconds) if train_size or cfg.optim.max_steps else None,
        "training_text": format_duration(est.training_seconds),
        "finish_text": format_duration(sum(est.finish_seconds.values())),
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


def _seconds(seconds: float) -> str:
    return f"{seconds:.2g} s" if seconds < 10 else format_duration(seconds)
