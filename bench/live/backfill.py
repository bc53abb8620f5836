"""Part 3, backfill: a run's stored series written by COPY, and the time the message a viewer gets on connect
takes to build and encode."""

from __future__ import annotations

import io
import json
import statistics
import time

import numpy as np

from bench.live.fixture import SERIES


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
