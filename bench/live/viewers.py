"""The browsers: websocket clients of the run page's socket (autobahn, asyncio) in a process of their own, with
none of Django, that watch, time the backfill, storm a run or hold idle sockets."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bench.live.fixture import EMIT_SERIES


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
