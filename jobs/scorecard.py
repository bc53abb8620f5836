"""The study maths: metrics in order, ratios against the teacher, scorecard rows and groups, best marks, config
diffs and a run's evaluation table. Pure: it reads the runs and evaluations it is given (their ``evaluations``
and ``artifacts`` prefetched, as ``selectors.scorecard_runs`` fetches them) and queries nothing.

Imports jobs.models for its choices only (run kinds, artifact kinds); nothing else of jobs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from distill.config import ABLATIONS, BASELINES, FULL_METHOD, LM_METRICS, loss_defaults
from distill.metrics import compression, retention, speedup
from jobs.configs import applicable_settings
from jobs.models import Artifact, Run

if TYPE_CHECKING:
    from jobs.models import Evaluation


VARIANT_ORDER: tuple[str, ...] = (FULL_METHOD, *ABLATIONS, *BASELINES, Run.Kind.TEACHER_FINETUNE)
# each run task's metrics, shown first in this order (the first present is the primary one); other metrics
# (pearson, spearman...) follow; the eval loss and the LM's mean token NLL (log perplexity) are no task metrics
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1", "mcc"),
    "causal_lm": LM_METRICS,
}
METRIC_ORDER: tuple[str, ...] = tuple(m for metrics in TASK_METRICS.values() for m in metrics)
METRIC_LABELS: dict[str, str] = {
    "accuracy": "accuracy",
    "f1": "F1",
    "mcc": "MCC",
    "perplexity": "perplexity",
    "bleu": "BLEU",
    "rouge_l": "ROUGE-L",
    "cer": "CER",
}
LOWER_IS_BETTER = frozenset({"perplexity", "cer", "nll", "loss"})
NOT_TASK_METRICS = frozenset({"loss", "nll"})
# per-run numbers of a scorecard row, averaged over seeds in its variant's group (besides the task metrics)
MEASURES: tuple[str, ...] = ("retention", "params", "mb", "smaller", "bs1_ms", "bs32_ms", "faster_bs1", "faster_bs32")
# each row's latency spread (p10-p90, ms) and peak memory, from the side-by-side measurement
SPREADS: tuple[str, ...] = ("bs1_p10", "bs1_p90", "bs32_p10", "bs32_p90", "peak_mb")
NOT_MEASURED = "not measured side by side yet"
# differ between every two runs, so they say nothing in a config diff (the host's folders are not shown at all:
# ``configs.applicable_settings`` leaves them out)
DIFF_IGNORED = frozenset({"name"})


def run_task(config: dict[str, Any]) -> str:
    """A run's task; configs stored before runs had one are classification runs."""
    return config.get("task") or "classification"


def primary_metric(task: str) -> str:
    """The metric a task's runs are ranked by: accuracy, or perplexity for causal language modelling."""
    return TASK_METRICS.get(task, TASK_METRICS["classification"])[0]


def better_score(metric: str, value: float | None) -> float | None:
    """``value`` on a higher-is-better scale (negated for perplexity, CER...), to rank runs by ``metric``."""
    if value is None:
        return None
    return -value if metric in LOWER_IS_BETTER else value


def trained_role(run: Run) -> str:
    """The role of the model a run trains: the teacher for fine-tuning runs, the student otherwise."""
    return "teacher" if run.kind == Run.Kind.TEACHER_FINETUNE else "student"


def latency_ms(ev: Evaluation, batch: str) -> float | None:
    """Median forward latency in ms at ``batch`` (``bs1``, ``bs32``); None when not measured."""
    entry = (ev.latency or {}).get(batch) or {}
    return entry.get("median_ms")


def safe_ratio(ratio: Callable[..., float], *args: float | None) -> float | None:
    """``ratio(*args)``, or None when a number is missing or the denominator is 0."""
    if any(a is None for a in args):
        return None
    try:
        return ratio(*args)
    except ValueError:  # a zero denominator: the ratio is undefined
        return None


def versus_teacher(student: Evaluation, teacher: Evaluation, metric: str = "accuracy") -> dict[str, float | None]:
    """What a student keeps and saves against its teacher (distill.metrics' ratios): retention of ``metric``,
    × smaller (parameters), × faster at batch 1 and 32.

    Retention is student / teacher for a higher-is-better metric, and teacher / student for a lower-is-better
    one (perplexity, CER), so that 100% is the teacher's level and less is worse either way."""
    scores = (student.metrics.get(metric), teacher.metrics.get(metric))
    if metric in LOWER_IS_BETTER:
        scores = scores[::-1]
    return {
        "retention": safe_ratio(retention, *scores),
        "smaller": safe_ratio(compression, teacher.params, student.params),
        "faster_bs1": safe_ratio(speedup, latency_ms(teacher, "bs1"), latency_ms(student, "bs1")),
        "faster_bs32": safe_ratio(speedup, latency_ms(teacher, "bs32"), latency_ms(student, "bs32")),
    }


def evaluation_table(evaluations: list[Evaluation]) -> dict[str, Any]:
    """The final measurements of one run for its page: ``metrics`` ``[(name, label)]`` in order, one row per
    evaluation (role, split, metric values by name, params, MB, latency at batch 1 and 32), and per split
    measured for both student and teacher a ``comparisons`` row (``versus_teacher`` on the primary metric)."""
    metrics = _ordered_metrics([{"metrics": ev.metrics} for ev in evaluations])
    rows = [
        {
            "role": ev.role,
            "split": ev.split,
            "metrics": ev.metrics,
            "params": ev.params,
            "mb": ev.bytes / 1e6 if ev.bytes is not None else None,
            "bs1_ms": latency_ms(ev, "bs1"),
            "bs32_ms": latency_ms(ev, "bs32"),
        }
        for ev in evaluations
    ]
    primary = metrics[0] if metrics else "accuracy"
    by_split: dict[str, dict[str, Evaluation]] = {}
    for ev in evaluations:
        by_split.setdefault(ev.split, {})[ev.role] = ev
    comparisons = [
        {"split": split, **versus_teacher(roles["student"], roles["teacher"], primary)}
        for split, roles in by_split.items()
        if "student" in roles and "teacher" in roles
    ]
    return {
        "metrics": [(m, METRIC_LABELS.get(m, m)) for m in metrics],
        "primary_label": METRIC_LABELS.get(primary, primary),
        "rows": rows,
        "comparisons": comparisons,
    }


def final_score(run: Run, evaluations: Iterable[Evaluation]) -> float | None:
    """The primary metric of the model a run trained (accuracy, or perplexity for an LM), on any split."""
    role, metric = trained_role(run), primary_metric(run_task(run.config))
    return next((ev.metrics[metric] for ev in evaluations if ev.role == role and metric in ev.metrics), None)


def run_variant(config: dict[str, Any]) -> str:
    """What a run's config compares: its kind, or the ablation of the full method it is (a term its task weighs
    0 by default, as an LM's attention, switches nothing off)."""
    kind = config.get("kind", "")
    if kind == FULL_METHOD:
        loss = config.get("loss") or {}
        defaults = loss_defaults(config.get("task", "classification"))
        for variant, zeroed in ABLATIONS.items():
            if loss.get(zeroed) == 0 and defaults[zeroed]:
                return variant
    return kind


def _sizes(ev: Evaluation) -> dict[str, Any]:
    return {"params": ev.params, "mb": ev.bytes / 1e6 if ev.bytes is not None else None}


def side_by_side_speeds(result: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    """A side-by-side measurement's (``Measurement.result``) speeds: the teacher's, and each run's by its id.
    Each is ``{"bs1_ms", "bs1_p10", "bs1_p90", "bs32_ms", ..., "peak_mb"}`` (medians and p10-p90 in ms)."""
    teacher, runs = None, {}
    for entry in result.get("models", []):
        speed = {"peak_mb": entry.get("peak_mb")}
        for batch, t in entry["latency"].items():
            speed |= {f"{batch}_ms": t["median_ms"], f"{batch}_p10": t["p10_ms"], f"{batch}_p90": t["p90_ms"]}
        if entry.get("run") is None:
            teacher = speed
        else:
            runs[entry["run"]] = speed
    return teacher, runs


def side_by_side_faster(result: dict[str, Any]) -> dict[int, dict[str, float | None]]:
    """× faster at batch 1 and 32 of each run of a side-by-side measurement, against its one teacher figure."""
    teacher, runs = side_by_side_speeds(result)
    return {
        run: {b: safe_ratio(speedup, (teacher or {}).get(f"{b}_ms"), speed.get(f"{b}_ms")) for b in ("bs1", "bs32")}
        for run, speed in runs.items()
    }


def measured_on(result: dict[str, Any]) -> dict[str, Any]:
    """The conditions of a side-by-side measurement, for the note under the scorecard: host, threads, tokens,
    rounds (and whether the medians settled), seconds, the load average at its highest, the cores that other
    processes used, and whether that was heavy."""
    keys = ("host", "threads", "seq_len", "rounds", "stable", "seconds", "cpus", "load_max", "foreign_cores")
    return {key: result.get(key) for key in keys} | {"heavy_load": bool(result.get("heavy_load"))}


def _evaluations(run: Run) -> dict[str, Evaluation]:
    """role -> the run's evaluation on its eval split (the one split the engine measures both models on)."""
    split = (run.config.get("data") or {}).get("eval_split", "validation")
    evaluations = sorted(run.evaluations.all(), key=lambda ev: ev.split != split)
    return {ev.role: ev for ev in reversed(evaluations)}  # the eval split's wins


def _ordered_metrics(rows: list[dict[str, Any]]) -> list[str]:
    names = {name for row in rows for name in row["metrics"]} - NOT_TASK_METRICS
    return [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))


def _spread(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _groups(rows: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per variant with the mean ± std over its seeds, of the rows that have measurements."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["measured"]:
            by_variant.setdefault(row["variant"], []).append(row)
    groups = []
    for variant, members in by_variant.items():
        stats = {}
        for key in (*metrics, *MEASURES):
            values = [v for row in members if (v := row["metrics"].get(key, row.get(key))) is not None]
            if values:
                stats[key] = _spread(values)
        groups.append(
            {
                "variant": variant,
                "role": members[0]["role"],
                "n": len(members),
                "seeds": [row["seed"] for row in members],
                "stats": stats,
                "best": False,
            }
        )
    return groups


def _mark_best(items: list[dict[str, Any]], score: Callable[[dict[str, Any]], float | None]) -> None:
    """Flag the student item of the highest score (ties: the first); see ``better_score``."""
    scored = [(s, i) for i, item in enumerate(items) if item["role"] == "student" and (s := score(item)) is not None]
    if scored:
        items[max(scored, key=lambda pair: (pair[0], -pair[1]))[1]]["best"] = True


def study_scorecard(runs: Iterable[Run], side_by_side: dict[str, Any] | None = None) -> dict[str, Any]:
    """The scorecard of runs side by side: a Study's runs or any selected ones (``scorecard_runs`` fetches them).

    ``rows``: one per run (variant, seed, task metrics, % of its teacher, parameters, MB, × smaller, the host
    it trained on). Quality ratios compare each student with the teacher evaluated at the end of the same run,
    on the same split. Speed comes only from ``side_by_side``, a measurement of the teacher and the students
    alternately in one process (``Measurement.result``): each row's latency at batch 1 and 32 (median, p10,
    p90) and × faster against that one teacher figure; without it, no row has a speed (``speed_note`` says
    so) — latencies measured in different runs are not divided by each other. ``groups``: with several seeds
    of a variant, one row per variant with each number's mean and std. ``teacher``: the teacher shown, with
    the metrics of the full method's first run that has one and the measurement's speed. ``best``: the student
    of the highest primary metric (the first task metric, accuracy for classification). ``side_by_side``: the
    measurement's conditions (``measured_on``), or None.
    """
    runs = sorted(
        runs,
        key=lambda r: (
            VARIANT_ORDER.index(v) if (v := run_variant(r.config)) in VARIANT_ORDER else len(VARIANT_ORDER),
            r.config.get("seed", 0),
            r.pk,
        ),
    )
    teacher_speed, run_speeds = side_by_side_speeds(side_by_side or {})
    faster = side_by_side_faster(side_by_side or {})
    rows, teacher, pairs = [], None, []
    for run in runs:
        evaluations = _evaluations(run)
        role = trained_role(run)
        trained, its_teacher = evaluations.get(role), evaluations.get("teacher") if role == "student" else None
        row: dict[str, Any] = {
            "run": run,
            "variant": run_variant(run.config),
            "seed": run.config.get("seed", 0),
            "role": role,
            "measured": trained is not None,
            "split": trained.split if trained else None,
            "metrics": dict(trained.metrics) if trained else {},
            "host": run.host,
            "best": False,
            "artifact": next((a for a in run.artifacts.all() if a.kind == Artifact.Kind.STUDENT), None),
            **dict.fromkeys(MEASURES),
            **dict.fromkeys(SPREADS),
            "teacher_bs1_ms": None,  # the teacher figure its × faster divides, the same on every row
            "teacher_bs32_ms": None,
        }
        if trained:
            row.update(_sizes(trained))
        row.update(run_speeds.get(run.pk, {}))
        rows.append(row)
        pairs.append((trained, its_teacher))
        if its_teacher and teacher is None:
            teacher = {"run": run, "split": its_teacher.split, "metrics": dict(its_teacher.metrics), "host": run.host}
            teacher.update(_sizes(its_teacher) | dict.fromkeys(("bs1_ms", "bs32_ms", *SPREADS)) | (teacher_speed or {}))
    metrics = _ordered_metrics(rows + ([teacher] if teacher else []))
    tasks = {run_task(run.config) for run in runs}
    primary = metrics[0] if metrics else primary_metric(tasks.pop() if len(tasks) == 1 else "classification")
    for row, (trained, its_teacher) in zip(rows, pairs, strict=True):
        if trained and its_teacher:
            ratios = versus_teacher(trained, its_teacher, primary)
            row.update(retention=ratios["retention"], smaller=ratios["smaller"])
        if teacher_speed and row["run"].pk in faster:  # one teacher figure, from the same measurement
            for batch, ratio in faster[row["run"].pk].items():
                row[f"faster_{batch}"], row[f"teacher_{batch}_ms"] = ratio, teacher_speed.get(f"{batch}_ms")
    groups = _groups(rows, metrics)
    if all(g["n"] == 1 for g in groups):  # one seed per variant: the rows say it all
        groups = []
    _mark_best(rows, lambda row: better_score(primary, row["metrics"].get(primary)))
    _mark_best(groups, lambda g: better_score(primary, g["stats"].get(primary, {}).get("mean")))
    return {
        "rows": rows,
        "groups": groups,
        "teacher": teacher,
        "metrics": metrics,
        "metric_labels": {m: METRIC_LABELS.get(m, m) for m in metrics},
        "primary": primary,
        "primary_label": METRIC_LABELS.get(primary, primary),
        "lower_is_better": primary in LOWER_IS_BETTER,
        "side_by_side": measured_on(side_by_side) if side_by_side else None,
        "speed_note": None if side_by_side else NOT_MEASURED,
        "diff": config_diff([row["run"] for row in rows]),
    }


def config_diff(runs: list[Run]) -> list[dict[str, Any]]:
    """The settings whose values differ between the runs: ``[{"key", "values": [per run]}]``, in the engine's
    field order; only settings the run's kind and task read count (``configs.applicable_settings``), so a run
    that lacks or does not use a key has None there. Nothing for fewer than two runs."""
    if len(runs) < 2:
        return []
    flat = [applicable_settings(run.config) for run in runs]
    keys = [key for key in dict.fromkeys(key for f in flat for key in f) if key not in DIFF_IGNORED]
    diff = []
    for key in keys:
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values[1:]):
            diff.append({"key": key, "values": values})
    return diff
