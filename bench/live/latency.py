"""Part 1, latency: emitting runs feed the worker's monitoring callback at a fixed rate while viewers on
daphne time each metric point from the end of its step to its arrival."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.live.fixture import EMIT_SERIES, SERIES, Fixture, create_run, setup_django
from bench.live.viewers import viewers
from kdweb.launcher import daphne_on_free_port  # no Django either


@dataclass(frozen=True)
class Scenario:
    name: str
    runs: int
    viewers_per_run: int
    interval_s: float  # between an emitting run's flushes


# A worker flushes once a second. One run flushes 5 times as often, for samples; ten runs flush at the
# real rate: ten workers at 5 Hz would be fifty, on the same two cores as everything else.
SCENARIOS = (
    Scenario("1 run, 1 viewer", 1, 1, 0.2),
    Scenario("1 run, 50 viewers", 1, 50, 0.2),
    Scenario("10 runs emitting at once, 5 viewers each", 10, 5, 1.0),
)


STEPS_PER_S = 20  # steps an emitting run logs per second, whatever its flush rate (a 50 ms step)


def emitter_main(commands: mp.Queue, results: mp.Queue) -> None:
    """An emitter process: the worker's monitoring callback fed steps at a fixed rate, one run per task."""
    setup_django()
    from jobs.worker.progress import RunMonitor  # imports the services, and with them torch: once per process

    results.put(("ready", RunMonitor.__name__))
    while (task := commands.get()) is not None:
        try:
            results.put(("done", emit(task)))
        except Exception:
            import traceback

            results.put(("error", traceback.format_exc()))


def emit(task: dict) -> dict:
    """``task["count"]`` flushes of ``task["steps"]`` steps each, one every ``interval`` seconds from
    ``start_at`` (wall clock) on, through ``RunMonitor`` exactly as in the worker (it stores the points, then
    its thread publishes them and the status; it also stamps the run and writes log lines). ``flush_ms`` is
    the store alone: the publishing that follows on the monitor's thread counts in the latency.

    The first step of each batch is flushed at once, as the monitor's thread flushes (its own timer is set
    out of the way): it carries the emit time, taken as the step ends, and goes out with the steps buffered
    before it. The time a point waits in the buffer for the next flush (at most ``flush_every_s``, 1 s in the
    worker) is batching, not latency, and is left out."""
    from distill.callbacks import Control, TrainState
    from jobs.worker.progress import RunMonitor

    steps, interval = task["steps"], task["interval"]
    state, control = TrainState(total_steps=task["count"] * steps), Control()
    rng = random.Random(task["run_id"])
    flush_ms, late_ms = [], []
    with RunMonitor(task["run_id"], task["team_id"], flush_every_s=3600) as monitor:
        monitor.on_train_begin(state, control)  # stores and publishes once: connections open before the clock
        began = time.time()
        for k in range(task["count"]):
            due = task["start_at"] + k * interval
            time.sleep(max(0.0, due - time.time()))
            for i in range(steps):
                state.step += 1
                state.elapsed_s = time.time() - began
                logs = {name: rng.random() for name in SERIES}
                if i == 0:
                    emitted = logs[EMIT_SERIES] = time.time()
                    late_ms.append((emitted - due) * 1000)
                monitor.on_step_end(state, control, logs)
                if i == 0:
                    monitor.flush(state)
                    flush_ms.append((time.time() - emitted) * 1000)
        monitor.on_train_end(state, control, None)
    return {"run_id": task["run_id"], "emitted": task["count"], "flush_ms": flush_ms, "late_ms": late_ms}


class Emitters:
    """Long-lived emitter processes (spawned: each sets Django up once), given one run per scenario."""

    def __init__(self, n: int):
        ctx = mp.get_context("spawn")
        self.results: mp.Queue = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(n)]
        self.processes = [ctx.Process(target=emitter_main, args=(q, self.results), daemon=True) for q in self.commands]
        for p in self.processes:
            p.start()
        for _ in range(n):
            self._get("ready")

    def _get(self, kind: str, timeout: float = 180) -> Any:
        got, value = self.results.get(timeout=timeout)
        if got == "error":
            raise RuntimeError(f"an emitter failed:\n{value}")
        if got != kind:
            raise RuntimeError(f"emitter said {got!r}, expected {kind!r}")
        return value

    def run(self, tasks: list[dict]) -> list[dict]:
        for queue, task in zip(self.commands, tasks, strict=False):
            queue.put(task)
        return [self._get("done") for _ in tasks]

    def close(self) -> None:
        for queue in self.commands:
            queue.put(None)
        for p in self.processes:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = np.asarray(values_s) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def latency_scenario(
    sc: Scenario, run_ids: list[int], team_id: int, port: int, cookie: str, emitters: Emitters, args
) -> dict:
    task = {"mode": "watch", "port": port, "cookie": cookie, "run_ids": run_ids, "per_run": sc.viewers_per_run}
    count = max(1, round(args.duration / sc.interval_s))
    task["expected"] = count
    with viewers(task) as finish:
        start_at = time.time() + 2.0  # emitters connect to PostgreSQL and Redis meanwhile
        tasks = [  # worker flushes are not in step with each other: spread the runs' phases over the interval
            {
                "run_id": run_id,
                "team_id": team_id,
                "start_at": start_at + sc.interval_s * i / len(run_ids),
                "count": count,
                "steps": round(STEPS_PER_S * sc.interval_s),
                "interval": sc.interval_s,
            }
            for i, run_id in enumerate(run_ids)
        ]
        done = emitters.run(tasks)
        received = finish()["latencies_s"]
    latencies = [x for per_socket in received for x in per_socket]
    expected = count * len(received)
    return {
        "runs": sc.runs,
        "viewers_per_run": sc.viewers_per_run,
        "interval_s": sc.interval_s,
        "flushes_per_run": count,
        "points_per_flush": round(STEPS_PER_S * sc.interval_s) * len(SERIES),
        "samples": len(latencies),
        "expected": expected,
        "lost": expected - len(latencies),
        **summary_ms(latencies),
        "flush_ms_p50": statistics.median(x for d in done for x in d["flush_ms"]),
        "flush_ms_p95": float(np.percentile([x for d in done for x in d["flush_ms"]], 95)),
        "emit_late_ms_p95": float(np.percentile([x for d in done for x in d["late_ms"]], 95)),
    }


def measure_latency(fx: Fixture, backfill_run_id: int, env: dict, scratch: Path, args) -> dict:
    from django.conf import settings

    cookie = f"{settings.SESSION_COOKIE_NAME}={fx.cookie}"
    runs = {sc: [create_run(fx, f"live {sc.name} #{i}").id for i in range(sc.runs)] for sc in SCENARIOS}
    emitters = Emitters(max(s.runs for s in SCENARIOS))
    out: dict[str, Any] = {"scenarios": {}}
    try:
        with daphne_on_free_port(env, scratch / "daphne.log") as url:
            port = int(url.rsplit(":", 1)[1])
            for sc in SCENARIOS:
                out["scenarios"][sc.name] = r = latency_scenario(sc, runs[sc], fx.team.id, port, cookie, emitters, args)
                print(f"latency, {sc.name}: " + json.dumps({k: round(v, 1) for k, v in r.items()}), flush=True)
            task = {"mode": "backfill", "port": port, "cookie": cookie, "run_id": backfill_run_id}
            with viewers({**task, "repeats": args.repeats}) as finish:
                got = finish()
    finally:
        emitters.close()
    out["backfill_socket"] = {
        "connect_to_backfill_ms_median": statistics.median(got["times_s"]) * 1000,
        "message_bytes": got["message_bytes"],
        "repeats": args.repeats,
    }
    return out
