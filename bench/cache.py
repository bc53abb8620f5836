"""The KD step that reads the teacher-output cache against a CE-only student step, side by side.

Three steps on the same student shape, batch and optimizer: ``ce`` (no teacher: the task term alone, as a no_kd
run trains), ``live`` (today's kd_feature step: teacher forward, then the four terms) and ``cached`` (the same
kd_feature step reading the teacher's outputs from a float16 cache: logits, the mapped hidden states and the
attention maps already grouped to the student's heads). ``distill.trainer.training_step`` exactly as ``train()``
calls it. Time alternates the three in one process (``bench/engine_step.py``'s ``round_times``; the median of
per-round ratios against ``ce``); peak memory above the set-up resident size is measured in a fresh process per
step (the cached step's process never holds the teacher during its steps). The machine's load average is read
before and after, as the machine is shared.

    nice -n 19 .venv/bin/python bench/cache.py       # writes bench/results/cache.json and cache.md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from accelerate import Accelerator
from transformers import get_scheduler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine_step import CASES, LENGTH, T, make_batch, round_times, step_memory, teacher_with_head  # noqa: E402

from bench.output import host_facts, write_results  # noqa: E402
from distill.config import parse_config  # noqa: E402
from distill.data import EncodedSplit, collate  # noqa: E402
from distill.teacher_cache import ensure  # noqa: E402
from distill.trainer import build_models, make_optimizer, teacher_cache_plan, training_step  # noqa: E402

VARIANTS = ("ce", "live", "cached")


def run_config(case: str, teacher_dir: Path, kind: str, cache_root: Path):
    return parse_config(
        {
            "kind": kind,
            "teacher": {"source": str(teacher_dir)},
            "student": CASES[case],
            "data": {"source": "packaged:rotten_tomatoes", "max_length": LENGTH},
            "loss": {"temperature": T},  # the default cache: float16
            "optim": {"scheduler": "constant", "warmup_ratio": 0.0, "max_grad_norm": None, "lr": 1e-4},
            "cache_dir": str(cache_root),
        }
    )


class Step:
    """One variant's training step on the engine's batch of 32 x 128 (with its examples' ids)."""

    def __init__(self, case: str, variant: str, teacher_dir: Path, cache_root: Path):
        cfg = run_config(case, teacher_dir, "no_kd" if variant == "ce" else "kd_feature", cache_root)
        m = build_models(cfg, ("neg", "pos"))
        batch = make_batch(m.teacher.config.vocab_size)
        split = EncodedSplit(batch["input_ids"].tolist(), batch["labels"].tolist())
        self.batch = collate([split[i] for i in range(len(split))], pad_token_id=0)
        self.cache = None
        if variant == "cached":
            plan = teacher_cache_plan(cfg, m, split)
            self.cache = ensure(plan, m.teacher, split, partial(collate, pad_token_id=0), batch_size=len(split))
        self.teacher = m.teacher if variant == "live" else None
        m.teacher = None
        gc.collect()
        self.accelerator = Accelerator()
        optimizer = make_optimizer(cfg, m.distiller)
        scheduler = get_scheduler("constant", optimizer)
        self.distiller, self.optimizer, self.scheduler = self.accelerator.prepare(m.distiller, optimizer, scheduler)
        self.weights = cfg.loss_weights()

    def __call__(self) -> None:
        training_step(
            self.accelerator,
            self.distiller,
            self.teacher,
            self.batch,
            self.weights,
            self.optimizer,
            self.scheduler,
            None,
            self.cache,
        )


def time_case(case: str, teacher_dir: Path, cache_root: Path, rounds: int, warmup: int) -> dict:
    steps = {v: Step(case, v, teacher_dir, cache_root) for v in VARIANTS}
    times = round_times(steps, rounds, warmup)
    out = {"times_s": times, "rounds": rounds}
    for v in VARIANTS:
        out[f"{v}_median_s"] = statistics.median(times[v])
    for v in ("live", "cached"):
        ratios = [a / b for a, b in zip(times[v], times["ce"], strict=True)]
        out[f"{v}_ratio_median"] = statistics.median(ratios)
        out[f"{v}_ratio_min"], out[f"{v}_ratio_max"] = min(ratios), max(ratios)
    return out


def memory_case(case: str, teacher_dir: Path, cache_root: Path) -> dict:
    out = {}
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--memory-child", case, variant]
        command += ["--teacher-dir", str(teacher_dir), "--cache-root", str(cache_root)]
        run = subprocess.run(command, check=True, capture_output=True, text=True)
        out[variant] = json.loads(run.stdout.splitlines()[-1])
    out["cached_over_live_step"] = out["cached"]["step_mb"] / out["live"]["step_mb"]
    out["cached_over_live_peak"] = out["cached"]["peak_mb"] / out["live"]["peak_mb"]
    return out


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def report(results: dict) -> str:
    lines = [
        "# Teacher-output cache: the cached KD step against a CE-only student step",
        "",
        f"MiniLM-L6 teacher (6x384, 12 heads, random 2-label head), kd_feature with every term, batch 32 x {LENGTH}, "
        f"float16 cache; CPU, {results['threads']} threads, torch {results['torch']}; {results['rounds']} alternated "
        f"rounds in one process (median of per-round ratios, min-max); load average {results['load_before']:.1f} "
        f"before and {results['load_after']:.1f} after on {results['cpus']} cores (the machine is shared). "
        "Command: `nice -n 19 .venv/bin/python bench/cache.py`.",
        "",
        "| student | CE step (s) | live KD (s) | cached KD (s) | live ÷ CE | cached ÷ CE | step memory CE / live / "
        "cached (MB) | peak RSS live / cached (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, r in results["cases"].items():
        t, m = r["time"], r["memory"]
        lines.append(
            f"| {case} | {t['ce_median_s']:.3f} | {t['live_median_s']:.3f} | {t['cached_median_s']:.3f} "
            f"| {t['live_ratio_median']:.2f} ({t['live_ratio_min']:.2f}-{t['live_ratio_max']:.2f}) "
            f"| {t['cached_ratio_median']:.2f} ({t['cached_ratio_min']:.2f}-{t['cached_ratio_max']:.2f}) "
            f"| {m['ce']['step_mb']:.0f} / {m['live']['step_mb']:.0f} / {m['cached']['step_mb']:.0f} "
            f"| {m['live']['peak_mb']:.0f} / {m['cached']['peak_mb']:.0f} |"
        )
    lines += ["", "Target: cached ÷ CE <= 1.2.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cases", nargs="*", default=list(CASES))
    p.add_argument("--memory-child", nargs=2, metavar=("CASE", "VARIANT"))
    p.add_argument("--teacher-dir", type=Path)
    p.add_argument("--cache-root", type=Path)
    args = p.parse_args()
    if args.memory_child:
        case, variant = args.memory_child
        print(json.dumps(step_memory(Step(case, variant, args.teacher_dir, args.cache_root))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = teacher_with_head(Path(tmp) / "teacher")
        cache_root = Path(tmp) / "teacher-cache"
        results = {**host_facts(), "cpus": os.cpu_count(), "rounds": args.rounds, "load_before": load_average()}
        results["cases"] = {}
        for case in args.cases:
            results["cases"][case] = {
                "time": time_case(case, teacher_dir, cache_root, args.rounds, args.warmup),
                "memory": memory_case(case, teacher_dir, cache_root),
            }
            print(json.dumps({case: results["cases"][case]}, indent=1), flush=True)
        results["load_after"] = load_average()
    write_results("cache", results, report(results))


if __name__ == "__main__":
    main()
