"""Part 2, monitoring overhead: the same small KD run trained with the worker's monitoring callback and
without, in alternating pairs on a quiet machine; and what one flush costs, part by part."""

from __future__ import annotations

import asyncio
import io
import json
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.live.fixture import SERIES, Fixture, create_run
from bench.live.quiet import QUIET_OTHER_PCT, CpuSnapshot, wait_for_quiet
from distill.callbacks import Callback  # light: no torch, no Django

# The overhead run: a random 4 x 128 BERT teacher (4 heads, FFN 512) over a made-up 400-word vocabulary,
# distilled (kd_feature: all four loss terms) into 2 of its blocks; batch 16 of 48-96 token texts. About
# 50 ms a step on 2 threads: the callback's fixed cost per flush is set against a realistic step rate.
TEACHER_SHAPE = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}


STUDENT_LAYERS, BATCH, MAX_LENGTH, VOCAB_WORDS, TRAIN_ROWS = 2, 16, 96, 400, 4000


@contextmanager
def monitoring_callback(run) -> Iterator[Callback]:
    """The worker's monitoring callback for ``run``, as ``jobs.worker.tasks`` builds it (its heartbeat thread too)."""
    from jobs.worker.progress import RunMonitor

    with RunMonitor(run.id, run.team_id) as monitor:
        yield monitor


def write_overhead_assets(folder: Path) -> tuple[Path, Path]:
    """A random BERT classifier of ``TEACHER_SHAPE`` with a word-level tokenizer, and texts for it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = [f"w{i}" for i in range(VOCAB_WORDS)]
    tokenizer = BertTokenizerFast(
        vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    )
    torch.manual_seed(0)
    labels = {"id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=128, **TEACHER_SHAPE, **labels)
    teacher = folder / "teacher"
    BertForSequenceClassification(config).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    rng = random.Random(0)
    out = io.StringIO()
    out.write("text,label,split\n")
    for i in range(TRAIN_ROWS + 128):  # small validation and test splits: evaluation is not what is timed
        split = "train" if i < TRAIN_ROWS else ("validation" if i % 2 else "test")
        out.write(f"{' '.join(rng.choices(words, k=rng.randint(46, 94)))},{('neg', 'pos')[i % 2]},{split}\n")
    texts = folder / "texts.csv"
    texts.write_text(out.getvalue())
    return teacher, texts


class StepClock(Callback):
    """Wall and process CPU time at the end of each step; listed after the monitor, so its work (and that of
    any thread it runs) is inside the steps."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_end(self, state, control, logs) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


class HookTimer:
    """Stands in for ``inner`` among the trainer's callbacks: forwards every hook to it, and keeps the time
    each ``on_step_end`` took: the callback's own cost on the training thread, apart from what it costs the
    machine around it."""

    def __init__(self, inner: Callback) -> None:
        self.inner = inner
        self.step_end_s: list[float] = []

    def __getattr__(self, hook: str) -> Any:
        return getattr(self.inner, hook)

    def on_step_end(self, state, control, logs) -> None:
        started = time.perf_counter()
        self.inner.on_step_end(state, control, logs)
        self.step_end_s.append(time.perf_counter() - started)


def train_round(cfg, run) -> tuple[StepClock, HookTimer | None]:
    """One training, monitored for ``run`` or (``None``) not at all; the clock, and the hook timer if any."""
    from distill.trainer import train

    clock = StepClock()
    if run is None:
        train(cfg, [clock])
        return clock, None
    with monitoring_callback(run) as monitor:
        timer = HookTimer(monitor)
        train(cfg, [timer, clock])
    return clock, timer


def measure_overhead(fx: Fixture, scratch: Path, args) -> dict:
    """Pairs of trainings, with the callback and without, in alternating order (ABBA...); the cost is the
    median over pairs of the ratio of mean step times. A pair counts only if other work stayed under
    ``QUIET_OTHER_PCT`` of the CPU through both trainings; before each pair the machine is waited for, until
    ``args.rounds`` pairs count or the budget is spent (then, if none counts, all pairs are reported)."""
    import torch

    from distill.config import parse_config
    from jobs.models import MetricPoint

    teacher, texts = write_overhead_assets(scratch / "overhead")
    cfg = parse_config(
        {
            "kind": "kd_feature",
            "name": "bench-live",
            "seed": 0,
            "teacher": {"source": str(teacher)},
            "student": {"layers": STUDENT_LAYERS, "layer_map": "uniform"},
            "data": {"source": str(texts), "max_length": MAX_LENGTH},
            "optim": {"batch_size": BATCH, "max_steps": args.steps, "lr": 1e-4},
            "output_dir": str(scratch / "overhead" / "run"),
            "eval_every": 10**6,  # only the final evaluation, after the timed steps
            "checkpoint_every": 10**6,
            "latency_repeats": 1,
        }
    )
    deadline = time.monotonic() + args.overhead_budget
    pairs: list[dict] = []
    while sum(p["counts"] for p in pairs) < args.rounds and (time.monotonic() < deadline or not pairs):
        waited = wait_for_quiet(deadline)
        order = ("with", "without") if len(pairs) % 2 == 0 else ("without", "with")
        pair: dict[str, Any] = {"waited_s": waited}
        for variant in order:
            run = create_run(fx, f"overhead pair {len(pairs)}", args.steps) if variant == "with" else None
            before = CpuSnapshot.now()
            clock, timer = train_round(cfg, run)
            wall, cpu = np.asarray(clock.wall[args.skip_steps :]), np.asarray(clock.cpu[args.skip_steps :])
            pair[variant] = {
                "step_s": float((wall[-1] - wall[0]) / (len(wall) - 1)),  # the mean: flush steps included
                "median_step_s": float(np.median(np.diff(wall))),
                "cpu_step_s": float((cpu[-1] - cpu[0]) / (len(cpu) - 1)),
                "other_pct": CpuSnapshot.now().since(before)["other_pct"],
            }
            if timer is not None:
                hooks = np.asarray(timer.step_end_s[args.skip_steps + 1 :])  # those inside the timed intervals
                pair[variant]["in_callback"] = float(hooks.sum() / (wall[-1] - wall[0]))
                pair[variant]["writes_ms"] = (hooks[hooks > 0.002] * 1000).tolist()  # those that wrote
        pair["counts"] = max(pair[v]["other_pct"] for v in order) < QUIET_OTHER_PCT
        pairs.append(pair)
        shown = {v: round(pair[v]["step_s"] * 1000, 2) for v in order} | {"counts": pair["counts"]}
        print(f"overhead pair {len(pairs) - 1}, step ms: {json.dumps(shown)}", flush=True)
    used = [p for p in pairs if p["counts"]] or pairs

    def med(variant: str, key: str) -> float:
        return statistics.median(p[variant][key] for p in used)

    ratios = [p["with"]["step_s"] / p["without"]["step_s"] for p in used]
    cpu_ratios = [p["with"]["cpu_step_s"] / p["without"]["cpu_step_s"] for p in used]
    writes = [ms for p in used for ms in p["with"]["writes_ms"]]
    return {
        "callback": "RunMonitor",
        "valid": any(p["counts"] for p in pairs),
        "pairs_counted": sum(p["counts"] for p in pairs),
        "pairs_run": len(pairs),
        "waited_s": sum(p["waited_s"] for p in pairs),
        "steps_per_training": args.steps,
        "timed_steps_per_training": args.steps - args.skip_steps - 1,
        "step_ms_with": med("with", "step_s") * 1000,
        "step_ms_without": med("without", "step_s") * 1000,
        "step_ms_median_with": med("with", "median_step_s") * 1000,
        "step_ms_median_without": med("without", "median_step_s") * 1000,
        "overhead_pct": (statistics.median(ratios) - 1) * 100,
        "overhead_pct_min": (min(ratios) - 1) * 100,
        "overhead_pct_max": (max(ratios) - 1) * 100,
        "overhead_pct_pairs": [(x - 1) * 100 for x in ratios],
        "cpu_step_ms_with": med("with", "cpu_step_s") * 1000,
        "cpu_step_ms_without": med("without", "cpu_step_s") * 1000,
        "cpu_overhead_pct": (statistics.median(cpu_ratios) - 1) * 100,
        "in_callback_pct": med("with", "in_callback") * 100,
        "write_ms_median": statistics.median(writes) if writes else 0.0,
        "writes_timed": len(writes),
        "points_stored_per_training": MetricPoint.objects.filter(run__name="overhead pair 0").count(),
        "flush_anatomy": flush_anatomy(fx),
        "threads": torch.get_num_threads(),
        "model": (
            f"teacher BERT {TEACHER_SHAPE['num_hidden_layers']} x {TEACHER_SHAPE['hidden_size']} "
            f"({TEACHER_SHAPE['num_attention_heads']} heads, FFN {TEACHER_SHAPE['intermediate_size']}, "
            f"vocabulary {VOCAB_WORDS + 5}), kd_feature student of {STUDENT_LAYERS} blocks, "
            f"batch {BATCH} x 48-96 tokens"
        ),
        "pairs": pairs,
    }


def flush_anatomy(fx: Fixture, repeats: int = 30) -> dict:
    """What one flush of the callback costs, part by part, each timed alone (median ms): storing a second of
    points at 20 steps a second, publishing them and the status (to the run and to its team) on one event loop
    as the monitor's thread does, and what ``async_to_sync`` would add to each publish (a new loop, and so a
    new Redis connection, per call)."""
    from asgiref.sync import async_to_sync

    from jobs import services
    from jobs.live import events

    run = create_run(fx, "flush anatomy", 10**6)
    loop = asyncio.new_event_loop()
    parts: dict[str, list[float]] = {"store": [], "publish_metrics": [], "publish_status": [], "async_to_sync": []}

    async def nothing() -> None:
        pass

    for k in range(repeats):
        points = [(name, s, 0.5) for s in range(20 * k + 1, 20 * k + 21) for name in SERIES]
        metrics = {"type": "metrics", "points": [{"name": n, "step": s, "value": v} for n, s, v in points]}
        t0 = time.perf_counter()
        services.run_progress(run.id, points, step=20 * k + 20, total_steps=10**6, eta_s=1.0)
        t1 = time.perf_counter()
        loop.run_until_complete(events.run_event_publish(run.id, metrics))
        t2 = time.perf_counter()
        loop.run_until_complete(events.run_event_publish(run.id, events.status_event(run), team_id=run.team_id))
        t3 = time.perf_counter()
        async_to_sync(nothing)()
        t4 = time.perf_counter()
        for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[name].append(dt)
    loop.close()
    return {f"{name}_ms": statistics.median(v) * 1000 for name, v in parts.items()} | {"repeats": repeats}
