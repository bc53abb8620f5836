"""The page of results: the machine's facts, one section per part, the targets and the CPU each part saw."""

from __future__ import annotations

import os
import platform

from bench.live.fixture import SERIES
from bench.live.latency import STEPS_PER_S
from bench.live.quiet import QUIET_OTHER_PCT

TARGETS = {"latency_p95_ms": 250.0, "overhead_pct": 2.0, "backfill_ms": 300.0}


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
