"""Part 4, connections: a storm of sockets opened within a second on a long run, then idle sockets held on a
run's page and the runs list: how many connect, how fast the backfill comes, how many drop."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.live.backfill import store_series
from bench.live.fixture import Fixture, create_run
from bench.live.viewers import viewers
from kdweb.launcher import daphne_on_free_port  # no Django either


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
