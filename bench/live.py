"""The live view under load: worker-to-browser latency, the monitoring cost on training, and backfill time.

Every part runs the real pieces, on a PostgreSQL database and a Redis database of the bench's own (dropped
and emptied at the start; never the tests' ``kdweb``/``test_kdweb`` or Redis db 0):

1. **Latency.** daphne serves ``kdweb.asgi`` in a subprocess, as ``make up`` does. The viewers, websocket
   clients in a process of their own, log in with a session cookie and open ``/ws/runs/<id>/`` as the run
   page does. Each emitting run is a process that feeds the worker's callback (``jobs.progress.RunMonitor``)
   steps and makes it flush at a fixed rate, as its thread does in a worker: store the points
   (``services.run_progress``); the monitor's thread then publishes them and the status
   (``events.run_event_publish`` on its own event loop). One point of each flush, ``bench/emit_s``, carries
   as its value the wall time at which its step ended; a viewer subtracts it from the wall time at
   which the message arrived (one machine, one clock). Scenarios: 1 viewer of 1 run, 50 viewers of 1 run,
   10 runs emitting at once with 5 viewers each.
2. **Monitoring overhead.** In this one process, the same small KD run is trained with ``RunMonitor`` (as
   ``jobs.tasks`` uses it) and without, in alternating pairs; the cost is the ratio of the mean step time.
3. **Backfill.** A run with 100,000 stored points in each of its 6 series: the time ``selectors.run_backfill``
   takes to build the message the consumer sends on connect, its size, and the time from opening a socket
   to receiving it through daphne.
4. **Connections.** A storm: 200 sockets opened within one second on a run of 7,000 stored steps, through
   daphne; how many connect, and the time to their backfill. Stability: idle sockets on a run's page and on
   the runs list held for a minute, then one event: drops per viewer-hour (none expected), and who heard it.

    .venv/bin/python bench/live.py            # ~10 min; writes bench/results/live.json and .md
    .venv/bin/python bench/live.py --quick    # a smoke run of every part (~3 min); results not written
    .venv/bin/python bench/live.py --only connections   # these parts only, in place of theirs in the results

Timings are only as good as the machine is quiet. Before each part the benchmark waits (a while) for other
work to stop, a pair of trainings counts only if none ran meanwhile, and the CPU use of each part, the
benchmark's and the rest, is recorded with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.callbacks import Callback  # noqa: E402 (light: no torch, no Django)
from kdweb.launcher import daphne_on_free_port  # noqa: E402 (no Django either)

RESULTS = ROOT / "bench" / "results"
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/kdweb_bench_live"
REDIS_URL = "redis://127.0.0.1:6379/5"  # db 0 is the tests' and `make up`'s
SERIES = ("loss/task", "loss/output", "loss/feature", "loss/attention", "loss/total", "lr")  # what train() logs
EMIT_SERIES = "bench/emit_s"  # value: time.time() at the end of the step whose flush carries it
TARGETS = {"latency_p95_ms": 250.0, "overhead_pct": 2.0, "backfill_ms": 300.0}


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

# The overhead run: a random 4 x 128 BERT teacher (4 heads, FFN 512) over a made-up 400-word vocabulary,
# distilled (kd_feature: all four loss terms) into 2 of its blocks; batch 16 of 48-96 token texts. About
# 50 ms a step on 2 threads: the callback's fixed cost per flush is set against a realistic step rate.
TEACHER_SHAPE = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}
STUDENT_LAYERS, BATCH, MAX_LENGTH, VOCAB_WORDS, TRAIN_ROWS = 2, 16, 96, 400, 4000


# --- the bench's own database and Redis ---------------------------------------------------------------


def reset_services(database_url: str, redis_url: str) -> None:
    """Drop and create the bench database and empty the bench Redis database: every run starts alike.

    Both are the bench's own; names that look like someone else's are refused before anything is dropped.
    """
    import psycopg
    import redis
    from psycopg import sql

    name = urlparse(database_url).path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"error: the bench drops and recreates its database; {name!r} has no 'bench' in its name")
    if urlparse(redis_url).path.strip("/") in ("", "0"):
        raise SystemExit("error: the bench empties its Redis database; use one other than 0 (e.g. /5)")
    with psycopg.connect(database_url, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    redis.Redis.from_url(redis_url).flushdb()


def setup_django() -> None:
    """Django with the environment this process was given (the bench's DATABASE_URL and REDIS_URL)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kdweb.settings")
    django.setup()


def create_schema(scratch: Path) -> str:
    """Migrate the fresh database. When jobs' models are ahead of its migrations (a change in progress),
    jobs' tables come from a migration made now from the models, so the bench measures the tree as it is."""
    from django.conf import settings
    from django.core.management import call_command

    try:
        call_command("makemigrations", "jobs", check_changes=True, dry_run=True, verbosity=0)
    except SystemExit:
        package = scratch / "bench_jobs_migrations"
        package.mkdir()
        (package / "__init__.py").touch()
        sys.path.insert(0, str(scratch))
        settings.MIGRATION_MODULES = {"jobs": package.name}
        call_command("makemigrations", "jobs", verbosity=0)
        call_command("migrate", verbosity=0)
        return "models (jobs' models are ahead of its migrations: migrated from a migration made from them)"
    call_command("migrate", verbosity=0)
    return "migrations"


@dataclass
class Fixture:
    """A user logged in through a session, member of the team that owns the bench's runs."""

    user: Any
    team: Any
    teacher: Any
    dataset: Any
    cookie: str


def create_fixture() -> Fixture:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from jobs.models import DatasetSpec, Membership, Teacher, Team

    team = Team.objects.create(name="bench")
    user = get_user_model().objects.create_user(username="bench")
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    teacher = Teacher.objects.create(team=team, name="bench", source="package:bench", architecture={"labels": ["a"]})
    dataset = DatasetSpec.objects.create(team=team, name="bench", source="packaged:bench", labels=["a"])
    client = Client()
    client.force_login(user)  # a real session row, as the login page makes
    return Fixture(user, team, teacher, dataset, client.cookies[settings.SESSION_COOKIE_NAME].value)


def create_run(fx: Fixture, name: str, total_steps: int = 0):
    from jobs.models import Run

    return Run.objects.create(
        team=fx.team,
        name=name,
        kind=Run.Kind.KD_FEATURE,
        teacher=fx.teacher,
        dataset=fx.dataset,
        config={},
        status=Run.Status.RUNNING,
        total_steps=total_steps,
        queue="bench",
        created_by=fx.user,
    )


# --- a quiet machine ---------------------------------------------------------------------------------------

QUIET_OTHER_PCT = 15.0  # CPU (in % of all cores) that other work may use while a measurement still counts


@dataclass
class CpuSnapshot:
    """CPU seconds used so far by the whole machine and by this benchmark (this process, its threads and the
    children it has reaped: daphne, emitters, viewers), to tell whether something else ran meanwhile."""

    at: float
    machine_busy_s: float  # niced work apart: it yields the cores to the benchmark
    machine_niced_s: float
    bench_s: float

    @classmethod
    def now(cls) -> CpuSnapshot:
        import psutil

        m, me = psutil.cpu_times(), psutil.Process().cpu_times()
        busy = m.user + m.system + m.irq + m.softirq + m.steal
        return cls(time.monotonic(), busy, m.nice, me.user + me.system + me.children_user + me.children_system)

    def since(self, before: CpuSnapshot) -> dict[str, float]:
        """CPU over the interval in % of all cores: the machine's busy time (niced work apart), this
        benchmark's share of it, the rest (``other``: other people's work, and PostgreSQL and Redis serving
        this benchmark), and niced work."""
        capacity = (self.at - before.at) * (os.cpu_count() or 1) / 100
        busy = (self.machine_busy_s - before.machine_busy_s) / capacity
        bench = (self.bench_s - before.bench_s) / capacity
        niced = (self.machine_niced_s - before.machine_niced_s) / capacity
        return {"machine_busy_pct": busy, "bench_pct": bench, "other_pct": busy - bench, "niced_pct": niced}


def wait_for_quiet(deadline: float, window_s: float = 3.0) -> float:
    """Wait until other work (niced work apart) used less than ``QUIET_OTHER_PCT`` of the CPU over
    ``window_s``, or until ``deadline`` (``time.monotonic()``); returns the seconds waited. Timings on a
    shared two-core machine mean little while someone else's test suite runs: a preempted torch thread
    stalls a whole step."""
    started = time.monotonic()
    while True:
        before = CpuSnapshot.now()
        time.sleep(window_s)
        if CpuSnapshot.now().since(before)["other_pct"] < QUIET_OTHER_PCT or time.monotonic() > deadline:
            return time.monotonic() - started - window_s


# --- part 1: latency ------------------------------------------------------------------------------------


def viewer_protocol() -> type:
    """The client of the run page's socket: records when each message arrives, and the emit-to-arrival time
    of metric points. Built in the viewers' process only: autobahn's asyncio flavour cannot share a process
    with Django, whose ``daphne`` app installs the Twisted one (txaio allows one per process)."""
    from autobahn.asyncio.websocket import WebSocketClientProtocol

    class Viewer(WebSocketClientProtocol):
        def __init__(self) -> None:  # made by the factory inside the event loop, before the handshake
            super().__init__()
            loop = asyncio.get_running_loop()
            self.latencies_s: list[float] = []
            self.opened_at: float | None = None
            self.backfill_at: float | None = None
            self.backfill_bytes = 0
            self.messages = 0  # after the greeting (the backfill and the status of a run's socket)
            self.opened: asyncio.Future = loop.create_future()  # the handshake is done
            self.ready: asyncio.Future = loop.create_future()  # the backfill and the status have arrived
            self.closed: asyncio.Future = loop.create_future()

        def onOpen(self) -> None:
            self.opened_at = time.perf_counter()
            self.opened.set_result(None)

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            arrived = time.time()  # first, before any parsing
            message = json.loads(payload)
            if message["type"] == "metrics":
                self.latencies_s += [arrived - p["value"] for p in message["points"] if p["name"] == EMIT_SERIES]
            elif message["type"] == "backfill":
                self.backfill_at, self.backfill_bytes = time.perf_counter(), len(payload)
            elif message["type"] == "status" and not self.ready.done():
                self.ready.set_result(None)
            else:
                self.messages += 1

        def onClose(self, wasClean: bool, code: int, reason: str) -> None:
            for future in (self.opened, self.ready):
                if not future.done():  # refused (4403, 4404) or a failed handshake
                    future.set_exception(RuntimeError(f"socket closed before the status: {code} {reason}"))
            if not self.closed.done():
                self.closed.set_result(code)

    return Viewer


async def open_viewer(protocol: type, port: int, run_id: int | None, cookie: str):
    """A socket to a run's live view (or, ``run_id=None``, to the runs list), with the session cookie and the
    site's own Origin, once it has the backfill and the status (the runs list's: once it is open)."""
    from autobahn.asyncio.websocket import WebSocketClientFactory

    base = f"127.0.0.1:{port}"
    path = "/ws/runs/" if run_id is None else f"/ws/runs/{run_id}/"
    factory = WebSocketClientFactory(f"ws://{base}{path}", origin=f"http://{base}", headers={"Cookie": cookie})
    factory.protocol = protocol
    _, viewer = await asyncio.get_running_loop().create_connection(factory, "127.0.0.1", port)
    if run_id is None:
        await asyncio.wait_for(viewer.opened, 60)
        viewer.ready.set_result(None)  # the runs list sends no greeting: every message counts
    else:
        await asyncio.wait_for(viewer.ready, 60)
    return viewer


async def close_viewers(viewers: list) -> None:
    for viewer in viewers:
        viewer.sendClose()
    await asyncio.wait([asyncio.ensure_future(v.closed) for v in viewers], timeout=10)


async def watch(task: dict, ready, stop) -> dict:
    """Open ``per_run`` sockets to each run, say ready, collect until told to stop; latencies per socket."""
    protocol = viewer_protocol()
    viewers = []
    for run_id in task["run_ids"]:  # one run's sockets at a time, those at once
        opening = (open_viewer(protocol, task["port"], run_id, task["cookie"]) for _ in range(task["per_run"]))
        viewers += await asyncio.gather(*opening)
    ready.set()
    while not stop.is_set():  # the emitters are done
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + 10  # then what is still on its way; what has not come by then is lost
    while any(len(v.latencies_s) < task["expected"] for v in viewers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await close_viewers(viewers)
    return {"latencies_s": [v.latencies_s for v in viewers]}


async def time_backfill(task: dict) -> dict:
    """Open and close a socket ``repeats`` times: time from opening it to the arrival of the backfill."""
    protocol, times, size = viewer_protocol(), [], 0
    for _ in range(task["repeats"]):
        started = time.perf_counter()
        viewer = await open_viewer(protocol, task["port"], task["run_id"], task["cookie"])
        times.append(viewer.backfill_at - started)
        size = viewer.backfill_bytes
        await close_viewers([viewer])
    return {"times_s": times, "message_bytes": size}


async def storm(task: dict) -> dict:
    """``viewers`` sockets to one run, opened evenly over ``window_s``: for each, the seconds from opening
    it to the end of the handshake and to the arrival of the backfill, or why it failed."""
    protocol = viewer_protocol()

    async def one(delay: float) -> dict:
        await asyncio.sleep(delay)
        started = time.perf_counter()
        try:
            viewer = await open_viewer(protocol, task["port"], task["run_id"], task["cookie"])
        except Exception as exc:  # reset, refused, or no backfill within a minute
            return {"error": f"{type(exc).__name__}: {exc}"}
        out = {"open_s": viewer.opened_at - started, "backfill_s": viewer.backfill_at - started}
        return out | {"bytes": viewer.backfill_bytes, "viewer": viewer}

    got = await asyncio.gather(*(one(task["window_s"] * i / task["viewers"]) for i in range(task["viewers"])))
    await close_viewers([g.pop("viewer") for g in got if "viewer" in g])
    return {"viewers": got}


async def hold(task: dict, ready, stop) -> dict:
    """``viewers`` idle sockets, half on a run's page and half on the runs list, held until told to stop;
    then, within 10 s, each should hear the status event the bench sends. A socket the server closed
    meanwhile is a drop."""
    protocol = viewer_protocol()
    run_ids = [task["run_id"], None] * (task["viewers"] // 2)
    viewers = [await open_viewer(protocol, task["port"], run_id, task["cookie"]) for run_id in run_ids]
    opened = time.monotonic()
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    held_s = time.monotonic() - opened
    dropped = [v.closed.result() for v in viewers if v.closed.done()]
    deadline = time.monotonic() + 10
    while any(not v.messages and not v.closed.done() for v in viewers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    heard = sum(1 for v in viewers if v.messages and not v.closed.done())
    await close_viewers([v for v in viewers if not v.closed.done()])
    return {"viewers": len(viewers), "held_s": held_s, "dropped_codes": dropped, "heard_event": heard}


def viewers_main(task: dict, ready, stop, results) -> None:
    """The browsers: one asyncio process of websocket clients (none of Django)."""
    try:
        work = {
            "watch": lambda: watch(task, ready, stop),
            "backfill": lambda: time_backfill(task),
            "storm": lambda: storm(task),
            "hold": lambda: hold(task, ready, stop),
        }[task["mode"]]()
        results.put(("done", asyncio.run(work)))
    except BaseException:
        import traceback

        results.put(("error", traceback.format_exc()))
        ready.set()


@contextmanager
def viewers(task: dict) -> Iterator[Callable[[], dict]]:
    """Start the viewers' process and wait until its sockets are open; yields ``finish()``, which tells
    it to close them and returns what it collected."""
    ctx = mp.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    process = ctx.Process(target=viewers_main, args=(task, ready, stop, results), daemon=True)
    process.start()

    def finish() -> dict:
        stop.set()
        kind, value = results.get(timeout=120)
        if kind == "error":
            raise RuntimeError(f"the viewers failed:\n{value}")
        return value

    try:
        if task["mode"] in ("watch", "hold") and not ready.wait(180):
            raise RuntimeError("the viewers did not connect within 180 s")
        yield finish
    finally:
        stop.set()
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()


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


# --- part 2: monitoring overhead ------------------------------------------------------------------------


@contextmanager
def monitoring_callback(run) -> Iterator[Callback]:
    """The worker's monitoring callback for ``run``, as ``jobs.tasks`` builds it (its heartbeat thread too)."""
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


# --- part 3: backfill ----------------------------------------------------------------------------------


def store_series(run_id: int, points: int) -> None:
    """``points`` steps of each train() series for one run, by COPY: loss curves that fall with noise, the lr
    of a linear schedule."""
    from django.db import connection

    rng = np.random.default_rng(0)
    steps = np.arange(1, points + 1)
    buffer = io.StringIO()
    for i, name in enumerate(SERIES):
        if name == "lr":
            values = 1e-4 * np.minimum(steps / (0.06 * points), (points - steps) / (0.94 * points))
        else:
            values = (2.0 - 0.2 * i) * np.exp(-steps / (points / 5)) + 0.1 * i + rng.normal(0, 0.05, points)
        buffer.writelines(
            f"{run_id}\t{name}\t{s}\t{v!r}\n" for s, v in zip(steps.tolist(), values.tolist(), strict=True)
        )
    with connection.cursor() as cursor:
        with cursor.copy("COPY jobs_metricpoint (run_id, name, step, value) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        cursor.execute("ANALYZE jobs_metricpoint")


def measure_backfill(run, repeats: int) -> dict:
    from jobs import selectors

    selectors.run_backfill(run)  # warm-up: connection, caches
    build, encode = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        message = selectors.run_backfill(run)
        built = time.perf_counter()
        text = json.dumps(message)  # what the consumer's send_json does
        encode.append(time.perf_counter() - built)
        build.append(built - started)
    return {
        "series": len(message["series"]),
        "stored_points_per_series": run.points.filter(name=SERIES[0]).count(),
        "sent_points_per_series": len(message["series"][SERIES[0]]),
        "message_bytes": len(text.encode()),
        "build_ms_median": statistics.median(build) * 1000,
        "build_ms_max": max(build) * 1000,
        "json_ms_median": statistics.median(encode) * 1000,
        "repeats": repeats,
    }


# --- part 4: connections ----------------------------------------------------------------------------------


def measure_connections(fx: Fixture, env: dict, scratch: Path, args) -> dict:
    """A storm: ``args.storm_viewers`` sockets opened within a second on a run of ``args.storm_steps``
    stored steps; then stability: ``args.idle_viewers`` sockets held idle for ``args.hold`` seconds, and one
    status event at the end. daphne's log is searched for the tracebacks of dropped sockets."""
    from django.conf import settings

    from jobs.live import events

    cookie = f"{settings.SESSION_COOKIE_NAME}={fx.cookie}"
    run = create_run(fx, "storm", args.storm_steps)
    store_series(run.id, args.storm_steps)
    log = scratch / "daphne-connections.log"
    with daphne_on_free_port(env, log) as url:
        task = {"port": int(url.rsplit(":", 1)[1]), "cookie": cookie, "run_id": run.id}
        with viewers({**task, "mode": "storm", "viewers": args.storm_viewers, "window_s": 1.0}) as finish:
            got = finish()["viewers"]
        with viewers({**task, "mode": "hold", "viewers": args.idle_viewers}) as finish:
            time.sleep(args.hold)
            events.run_event_send(run.id, events.status_event(run), team_id=run.team_id)
            held = finish()
    ok = [g for g in got if "error" not in g]
    backfill_ms = [g["backfill_s"] * 1000 for g in ok] or [float("nan")]
    viewer_hours = held["viewers"] * held["held_s"] / 3600
    return {
        "storm": {
            "viewers": len(got),
            "window_s": 1.0,
            "stored_steps": args.storm_steps,
            "connected": len(ok),
            "errors": sorted({g["error"] for g in got if "error" in g}),
            "message_bytes": ok[0]["bytes"] if ok else 0,
            "open_ms_p95": float(np.percentile([g["open_s"] * 1000 for g in ok] or [float("nan")], 95)),
            "backfill_ms_p50": float(np.percentile(backfill_ms, 50)),
            "backfill_ms_p95": float(np.percentile(backfill_ms, 95)),
            "backfill_ms_max": float(max(backfill_ms)),
        },
        "idle": {
            **held,
            "drops": len(held["dropped_codes"]),
            "drops_per_viewer_hour": len(held["dropped_codes"]) / viewer_hours,
        },
        "server_tracebacks": log.read_text(errors="replace").count("Exception inside application"),
    }


# --- results ---------------------------------------------------------------------------------------------


def machine_facts(database_url: str, redis_url: str) -> dict:
    import django
    import psycopg
    import redis
    import torch

    with psycopg.connect(database_url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "django": django.__version__,
        "postgresql": pg,
        "redis": redis.Redis.from_url(redis_url).info("server")["redis_version"],
        "machine": platform.machine(),
        "load_avg_at_start": os.getloadavg()[0],  # 1-minute load average, as the benchmark starts
    }


def verdict(value: float, target: float) -> str:
    return "met" if value < target else "**not met**"


def report_latency(results: dict) -> list[str]:
    lat, a = results["latency"], results["args"]
    lines = [
        "## Worker to browser: latency of a metric point",
        "",
        "daphne (one process) serves kdweb's ASGI app; the viewers are websocket clients (autobahn, one asyncio "
        "process) on `/ws/runs/<id>/` with a session cookie, as the run page. Each emitting run is a process "
        f"that feeds `RunMonitor` (the worker's callback) {STEPS_PER_S} steps a second of the {len(SERIES)} "
        "series loss/task, loss/output, loss/feature, loss/attention, loss/total and lr, and flushes it "
        "(as the monitor's thread does in a worker, once a second) every interval: `services.run_progress` (one "
        "transaction), after which the monitor's thread publishes the points and the status "
        "(`events.run_event_publish`, on its own event loop). Latency: arrival at a viewer minus the end of "
        "the step whose flush carries the point (store, wake-up of the monitor's thread, publish, daphne, "
        "viewer), for every viewer; "
        f"{a['duration']:.0f} s of emitting per scenario; the runs' flushes are spread over the interval; a "
        "message not arrived 10 s after the last flush is lost.",
        "",
        "| scenario | flush every | samples (lost) | p50 ms | p95 ms | p99 ms | max ms | flush ms p50 / p95 "
        "| p95 < 250 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in lat["scenarios"].items():
        lines.append(
            f"| {name} | {s['interval_s']:.1f} s ({s['points_per_flush']} points) | {s['samples']} ({s['lost']}) "
            f"| {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['p99_ms']:.1f} "
            f"| {s['max_ms']:.1f} | {s['flush_ms_p50']:.1f} / {s['flush_ms_p95']:.1f} "
            f"| {verdict(s['p95_ms'], TARGETS['latency_p95_ms'])} |"
        )
    lines += [
        "",
        "Flush: the emitter's time in `RunMonitor.flush` (the store; publishing follows on its thread), inside "
        "the latency; the wait of a "
        "point in the buffer for the next flush (up to 1 s in a worker) is batching and not counted.",
        "",
    ]
    return lines


def report_overhead(results: dict) -> list[str]:
    ov = results["overhead"]
    fa = ov["flush_anatomy"]
    return [
        "## Monitoring overhead on training",
        "",
        f"One process, {ov['threads']} torch threads: {ov['model']}. Pairs of trainings of the same run, one "
        f"with `{ov['callback']}` as the worker's task uses it (storing, publishing with no viewer, heartbeat "
        f"thread, log lines) and one without, in alternating order; {ov['steps_per_training']} steps per "
        f"training, the last {ov['timed_steps_per_training']} timed ({ov['points_stored_per_training']:,} points "
        "stored per monitored training). Step time: the mean over the timed steps, flushes included; "
        "overhead: the median over pairs of the ratio. A pair counts only if other work used less than "
        f"{QUIET_OTHER_PCT:.0f}% of the CPU through both trainings: {ov['pairs_counted']} of {ov['pairs_run']} "
        f"counted (the benchmark waited {ov['waited_s']:.0f} s for a quiet machine)"
        + ("." if ov["valid"] else "; **none did, so the figures below are from a busy machine, not a measure**."),
        "",
        "| callback | step ms with | step ms without | overhead (median, min to max) | median step ms with / "
        "without | CPU ms per step with / without (overhead) | < 2% |",
        "|---|---|---|---|---|---|---|",
        f"| {ov['callback']} | {ov['step_ms_with']:.2f} | {ov['step_ms_without']:.2f} | {ov['overhead_pct']:+.2f}% "
        f"({ov['overhead_pct_min']:+.2f}% to {ov['overhead_pct_max']:+.2f}%) | {ov['step_ms_median_with']:.2f} / "
        f"{ov['step_ms_median_without']:.2f} | {ov['cpu_step_ms_with']:.2f} / {ov['cpu_step_ms_without']:.2f} "
        f"({ov['cpu_overhead_pct']:+.2f}%) | "
        + (verdict(ov["overhead_pct"], TARGETS["overhead_pct"]) if ov["valid"] else "not measured")
        + " |",
        "",
        f"Inside the callback's step hook, on the training thread: {ov['in_callback_pct']:.2f}% of the timed wall "
        "time (median over pairs); "
        + (
            f"calls over 2 ms there (database writes): {ov['writes_timed']}, {ov['write_ms_median']:.1f} ms each "
            "(median)."
            if ov["writes_timed"]
            else "no call there took over 2 ms: the database and Redis are the monitor's thread's."
        )
        + " The A/B difference adds what the callback costs around the training thread: its own thread (flushes, "
        "heartbeat), and PostgreSQL and Redis working on the same two cores.",
        "",
        "One flush, part by part (each timed alone, median of "
        f"{fa['repeats']}): storing 120 points (`services.run_progress`) {fa['store_ms']:.1f} ms, publishing them "
        f"{fa['publish_metrics_ms']:.1f} ms, publishing the status to the run and its team "
        f"{fa['publish_status_ms']:.1f} ms, both on the monitor's own event loop; `async_to_sync` of an empty "
        f"coroutine, which each publish would add on a new loop (and a new Redis connection), "
        f"{fa['async_to_sync_ms']:.1f} ms.",
        "",
    ]


def report_backfill(results: dict) -> list[str]:
    bf = results["backfill"]
    sock = results.get("latency", {}).get(
        "backfill_socket", {"connect_to_backfill_ms_median": float("nan"), "repeats": 0}
    )
    return [
        "## Backfill of a long run",
        "",
        f"One run with {bf['stored_points_per_series']:,} stored points in each of {bf['series']} series "
        f"({', '.join(SERIES)}). `selectors.run_backfill`: median of {bf['repeats']} after a warm-up. "
        "Through daphne: from opening the socket to the arrival of the backfill (median of "
        f"{sock['repeats']}).",
        "",
        "| points sent per series | message bytes | build ms (median, max) | JSON encode ms | socket open to "
        "backfill ms | build < 300 ms |",
        "|---|---|---|---|---|---|",
        f"| {bf['sent_points_per_series']:,} | {bf['message_bytes']:,} | {bf['build_ms_median']:.0f} "
        f"({bf['build_ms_max']:.0f}) | {bf['json_ms_median']:.0f} "
        f"| {sock['connect_to_backfill_ms_median']:.0f} "
        f"| {verdict(bf['build_ms_median'], TARGETS['backfill_ms'])} |",
        "",
    ]


def report_connections(results: dict) -> list[str]:
    c = results["connections"]
    st, idle = c["storm"], c["idle"]
    return [
        "## Connections: a storm of viewers, and idle sockets",
        "",
        f"daphne (one process) serves kdweb's ASGI app, as in the latency part. Storm: {st['viewers']} sockets "
        f"(autobahn, one asyncio process) open `/ws/runs/<id>/` of a run with {st['stored_steps']:,} stored steps "
        f"of each of the {len(SERIES)} series, evenly within {st['window_s']:.0f} s; time from opening a socket "
        "to the end of its handshake and to the arrival of its backfill (a message of "
        f"{st['message_bytes']:,} bytes). Stability: {idle['viewers']} sockets, half on the run's page and half "
        f"on the runs list, held idle for {idle['held_s']:.0f} s; then one status event is sent, which each "
        "should hear. A drop is a socket the server closed meanwhile.",
        "",
        "| viewers connected | handshake ms p95 | backfill ms p50 / p95 / max | all connected |",
        "|---|---|---|---|",
        f"| {st['connected']} of {st['viewers']} | {st['open_ms_p95']:.0f} | {st['backfill_ms_p50']:.0f} / "
        f"{st['backfill_ms_p95']:.0f} / {st['backfill_ms_max']:.0f} "
        f"| {'met' if st['connected'] == st['viewers'] else '**not met**'} |",
        "",
        "| idle sockets | held s | drops (close codes) | drops per viewer-hour | heard the event after | no drop |",
        "|---|---|---|---|---|---|",
        f"| {idle['viewers']} | {idle['held_s']:.0f} "
        f"| {idle['drops']} ({', '.join(map(str, idle['dropped_codes'])) or '-'}) "
        f"| {idle['drops_per_viewer_hour']:.1f} | {idle['heard_event']} of {idle['viewers']} "
        f"| {'met' if idle['drops'] == 0 else '**not met**'} |",
        "",
        f'Tracebacks in daphne\'s log ("Exception inside application"): {c["server_tracebacks"]}.'
        + (f" Storm errors: {'; '.join(st['errors'])}." if st["errors"] else ""),
        "",
    ]


REPORTS = {  # part -> its section, in the order of the page
    "latency": report_latency,
    "overhead": report_overhead,
    "backfill": report_backfill,
    "connections": report_connections,
}


def report(results: dict) -> str:
    m, a = results["machine"], results["args"]
    separate = results.get("separate", {})
    together = [part for part in results["cpu"] if part not in separate]
    wall_s = sum(s for part, s in results["wall_s"].items() if part not in separate)
    minutes = (wall_s + sum(results["waited_s"][part] for part in together)) / 60
    lines = [
        "# The live view under load: latency, monitoring overhead, backfill, connections",
        "",
        f"{m['cpus']} CPUs ({m['machine']}), torch {m['torch']} on {m['torch_threads']} threads, Python "
        f"{m['python']}, Django {m['django']}, PostgreSQL {m['postgresql']}, Redis {m['redis']}; everything on "
        f"this one machine; load average {m['load_avg_at_start']:.2f} at the start, {m['load_avg_at_end']:.2f} at "
        f"the end. Command: `{results['command']}` ({minutes:.1f} min). Schema from {results['schema']}.",
        "",
    ]
    for part, section in REPORTS.items():
        if part in results:
            lines += section(results)
        if part in separate:
            x = separate[part]
            lines += [
                f"Measured on its own, {x['date']}: `{x['command']}`; load average {x['load_avg_at_start']:.2f} "
                f"at the start, {x['load_avg_at_end']:.2f} at the end (`uptime`: {x['uptime']}).",
                "",
            ]
    lines += [
        "Targets: latency p95 < 250 ms, overhead < 2%, backfill build < 300 ms; connections: every viewer of a "
        "storm connected, no idle socket dropped.",
        "",
        "CPU during each part, in % of all cores: the machine's busy time / this benchmark's processes / the "
        "rest (other people's work, and PostgreSQL and Redis serving the benchmark) / niced work (which yields "
        "the cores, so it is not counted as busy); before each part the "
        f"benchmark waits (up to {a['wait']:.0f} s) for other work to fall under {QUIET_OTHER_PCT:.0f}%: "
        + "; ".join(
            f"{part} {c['machine_busy_pct']:.0f} / {c['bench_pct']:.0f} / {c['other_pct']:.0f} / "
            f"{c['niced_pct']:.0f}% (waited "
            f"{results['waited_s'][part]:.0f} s)"
            for part, c in results["cpu"].items()
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def with_worker_malloc() -> None:
    """Re-run this script under the worker's glibc settings (``kdweb.launcher.WORKER_MALLOC``), once: without
    them a step's activations are unmapped and faulted back in, and step times are slower and erratic."""
    from kdweb.launcher import WORKER_MALLOC

    if any(key not in os.environ for key in WORKER_MALLOC):
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], {**WORKER_MALLOC, **os.environ})


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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    command = " ".join([".venv/bin/python bench/live.py", *sys.argv[1:]])

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
    if args.only and not args.quick and (RESULTS / "live.json").exists():
        results = with_earlier_parts(results, json.loads((RESULTS / "live.json").read_text()))
    text = report(results)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "live.json").write_text(json.dumps(results, indent=1))
        (RESULTS / "live.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
