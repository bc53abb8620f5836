"""The live view under load: worker-to-browser latency, the monitoring cost on training, and backfill time.

Every part runs the real pieces, on a PostgreSQL database and a Redis database of the bench's own (dropped
and emptied at the start; never the tests' ``kdweb``/``test_kdweb`` or Redis db 0):

1. **Latency.** daphne serves ``kdweb.asgi`` in a subprocess, as ``make up`` does. The viewers, websocket
   clients in a process of their own, log in with a session cookie and open ``/ws/runs/<id>/`` as the run
   page does. Each emitting run is a process that feeds the worker's callback (``jobs.worker.progress.RunMonitor``)
   steps and makes it flush at a fixed rate, as its thread does in a worker: store the points
   (``services.run_progress``); the monitor's thread then publishes them and the status
   (``events.run_event_publish`` on its own event loop). One point of each flush, ``bench/emit_s``, carries
   as its value the wall time at which its step ended; a viewer subtracts it from the wall time at
   which the message arrived (one machine, one clock). Scenarios: 1 viewer of 1 run, 50 viewers of 1 run,
   10 runs emitting at once with 5 viewers each.
2. **Monitoring overhead.** In this one process, the same small KD run is trained with ``RunMonitor`` (as
   ``jobs.worker.tasks`` uses it) and without, in alternating pairs; the cost is the ratio of the mean step time.
3. **Backfill.** A run with 100,000 stored points in each of its 6 series: the time ``selectors.run_backfill``
   takes to build the message the consumer sends on connect, its size, and the time from opening a socket
   to receiving it through daphne.
4. **Connections.** A storm: 200 sockets opened within one second on a run of 7,000 stored steps, through
   daphne; how many connect, and the time to their backfill. Stability: idle sockets on a run's page and on
   the runs list held for a minute, then one event: drops per viewer-hour (none expected), and who heard it.

    .venv/bin/python -m bench.live           # ~10 min; writes bench/results/live.json and .md
    .venv/bin/python -m bench.live --quick    # a smoke run of every part (~3 min); results not written
    .venv/bin/python -m bench.live --only connections   # these parts only, in place of theirs in the results

Timings are only as good as the machine is quiet. Before each part the benchmark waits (a while) for other
work to stop, a pair of trainings counts only if none ran meanwhile, and the CPU use of each part, the
benchmark's and the rest, is recorded with the results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.live.backfill import measure_backfill, store_series
from bench.live.connections import measure_connections
from bench.live.fixture import (
    DATABASE_URL,
    REDIS_URL,
    create_fixture,
    create_run,
    create_schema,
    reset_services,
    setup_django,
)
from bench.live.latency import measure_latency
from bench.live.overhead import measure_overhead
from bench.live.quiet import CpuSnapshot, wait_for_quiet
from bench.live.report import TARGETS, machine_facts, report
from bench.output import read_results, write_results


def with_worker_malloc() -> None:
    """Re-run this script under the worker's glibc settings (``kdweb.launcher.WORKER_MALLOC``), once: without
    them a step's activations are unmapped and faulted back in, and step times are slower and erratic."""
    from kdweb.launcher import WORKER_MALLOC

    if any(key not in os.environ for key in WORKER_MALLOC):
        os.execve(sys.executable, [sys.executable, "-m", "bench.live", *sys.argv[1:]], {**WORKER_MALLOC, **os.environ})


PARTS = ("overhead", "latency", "backfill", "connections")  # in the order they run


def with_earlier_parts(results: dict, earlier: dict) -> dict:
    """The earlier results (a run of every part) with the parts just measured in place of theirs, each marked
    as measured on its own, with its command and the machine's load."""
    merged = {**earlier, "separate": dict(earlier.get("separate", {}))}
    for key in ("cpu", "waited_s", "wall_s"):
        merged[key] = {**earlier[key], **results[key]}
    for part in results["cpu"]:
        merged[part] = results[part]
        merged["separate"][part] = {
            "command": results["command"],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_avg_at_start": results["machine"]["load_avg_at_start"],
            "load_avg_at_end": results["machine"]["load_avg_at_end"],
            "uptime": results["machine"]["uptime_at_end"],
        }
    return merged


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run of every part; the results are not written")
    p.add_argument("--database-url", default=DATABASE_URL, help="dropped and recreated (its name must say bench)")
    p.add_argument("--redis-url", default=REDIS_URL, help="emptied at the start (not db 0)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of emitting per latency scenario")
    p.add_argument("--rounds", type=int, default=10, help="overhead: pairs (with, without) that must count")
    p.add_argument("--overhead-budget", type=float, default=600, help="overhead: seconds to get them in")
    p.add_argument("--wait", type=float, default=120, help="seconds to wait for a quiet machine before a part")
    p.add_argument("--steps", type=int, default=160, help="overhead: steps per training")
    p.add_argument("--skip-steps", type=int, default=15, help="overhead: first steps not timed")
    p.add_argument("--points", type=int, default=100_000, help="backfill: stored points per series")
    p.add_argument("--repeats", type=int, default=7, help="backfill: timed builds")
    p.add_argument("--storm-viewers", type=int, default=200, help="connections: sockets opened within a second")
    p.add_argument("--storm-steps", type=int, default=7000, help="connections: stored steps of the storm's run")
    p.add_argument("--idle-viewers", type=int, default=100, help="connections: idle sockets held")
    p.add_argument("--hold", type=float, default=60.0, help="connections: seconds the idle sockets are held")
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(PARTS),
        help="run only these parts; they replace their own results in bench/results/live.{json,md}",
    )
    args = p.parse_args()
    with_worker_malloc()
    if args.quick:
        args.duration, args.rounds, args.steps, args.skip_steps, args.repeats = 4.0, 2, 50, 10, 3
        args.overhead_budget, args.wait = 60, 10
        args.storm_viewers, args.idle_viewers, args.hold = 50, 20, 10.0
    command = " ".join([".venv/bin/python -m bench.live", *sys.argv[1:]])

    reset_services(args.database_url, args.redis_url)
    env = {**os.environ, "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url, "KDWEB_LOG_LEVEL": "WARNING"}
    env.pop("CELERY_BROKER_URL", None)  # derived from REDIS_URL
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        scratch = Path(tmp)
        env["KDWEB_DATA_DIR"] = str(scratch / "data")
        os.environ.update(env)  # this process, and the emitters it spawns
        setup_django()
        results: dict[str, Any] = {
            "machine": machine_facts(args.database_url, args.redis_url),
            "command": command,
            "args": vars(args),
            "schema": create_schema(scratch),
            "targets": TARGETS,
        }
        fx = create_fixture()
        wall: dict[str, float] = {}
        only = args.only or list(PARTS)
        if {"latency", "backfill"} & set(only):
            backfill_run = create_run(fx, "backfill", args.points)
            started = time.perf_counter()
            store_series(backfill_run.id, args.points)
            wall["store_backfill_points"] = time.perf_counter() - started
        parts = {  # the most sensitive to other work on the machine first
            "overhead": lambda: measure_overhead(fx, scratch, args),
            "latency": lambda: measure_latency(fx, backfill_run.id, env, scratch, args),
            "backfill": lambda: measure_backfill(backfill_run, args.repeats),
            "connections": lambda: measure_connections(fx, env, scratch, args),
        }
        results["cpu"], results["waited_s"] = {}, {}
        for name in PARTS:
            if name not in only:
                continue
            part = parts[name]
            results["waited_s"][name] = wait_for_quiet(time.monotonic() + args.wait)
            started, before = time.perf_counter(), CpuSnapshot.now()
            results[name] = part()
            wall[name] = time.perf_counter() - started
            results["cpu"][name] = CpuSnapshot.now().since(before)
        results["wall_s"] = {k: round(v, 1) for k, v in wall.items()}
        results["machine"]["load_avg_at_end"] = os.getloadavg()[0]
        results["machine"]["uptime_at_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    earlier = read_results("live")
    if args.only and not args.quick and earlier is not None:
        results = with_earlier_parts(results, earlier)
    text = report(results)
    if args.quick:
        print(text)
    else:
        write_results("live", results, text)


if __name__ == "__main__":
    main()
