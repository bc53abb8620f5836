"""Downsampling a metric series for the charts: largest-triangle-three-buckets (Steinarsson, 2013).

LTTB keeps the first and the last point and, from each of ``max_points - 2`` buckets of the points in
between, the one that makes the largest triangle with the point kept in the previous bucket and the mean of
the next bucket. It keeps spikes and the overall shape where plain striding would drop them, and the kept
points are a subset of the real ones, in the same (step) order.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_POINTS = 2000


def lttb_indices(x: np.ndarray, y: np.ndarray, max_points: int = DEFAULT_MAX_POINTS) -> np.ndarray:
    """Indices (increasing) of the points of ``(x, y)`` that LTTB keeps; all of them if there are few enough.

    ``x`` must be sorted. At most ``max_points`` indices, the first and the last always among them.
    ``x`` and ``y`` may also be 2-D, one series of the same length per row (each row sorted): the rows are
    reduced together, in one pass over the buckets, and the result has a row of indices per series. A run's
    loss curves share their length, and the pass, not the arithmetic, is what costs (one bucket at a time).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[-1]
    if max_points < 2:
        raise ValueError("max_points must be at least 2: the first and the last point are always kept")
    if n <= max_points:
        return np.broadcast_to(np.arange(n), x.shape).copy()
    xs, ys = np.atleast_2d(x), np.atleast_2d(y)
    series = np.arange(len(xs))
    kept = np.empty((len(xs), max_points), dtype=np.int64)
    kept[:, 0], kept[:, -1] = 0, n - 1
    buckets = max_points - 2
    if not buckets:
        return kept if x.ndim == 2 else kept[0]
    # bucket b holds the points [edges[b], edges[b + 1]) of the inner points 1 .. n-2
    edges = (np.arange(buckets + 1) * ((n - 2) / buckets)).astype(np.int64) + 1
    edges[-1] = n - 1
    sizes = np.diff(edges)
    # the mean of each bucket (the "third point" of the triangle of the bucket before it), then the last point
    mean_x = np.concatenate([np.add.reduceat(xs[:, : n - 1], edges[:-1], axis=1) / sizes, xs[:, -1:]], axis=1)
    mean_y = np.concatenate([np.add.reduceat(ys[:, : n - 1], edges[:-1], axis=1) / sizes, ys[:, -1:]], axis=1)
    a = np.zeros(len(xs), dtype=np.int64)  # per series, the point kept in the previous bucket
    for b in range(buckets):
        lo, hi = edges[b], edges[b + 1]
        ax, ay = xs[series, a][:, None], ys[series, a][:, None]
        cx, cy = mean_x[:, b + 1 : b + 2], mean_y[:, b + 1 : b + 2]
        # twice the triangle's area; its sign is irrelevant
        area = np.abs((ax - cx) * (ys[:, lo:hi] - ay) - (ax - xs[:, lo:hi]) * (cy - ay))
        a = lo + area.argmax(axis=1)
        kept[:, b + 1] = a
    return kept if x.ndim == 2 else kept[0]


def lttb(points: list[list[float]], max_points: int = DEFAULT_MAX_POINTS) -> list[list[float]]:
    """``[[step, value], ...]`` (in step order) reduced to at most ``max_points`` points by LTTB."""
    if len(points) <= max_points:
        return [list(p) for p in points]
    xy = np.asarray(points, dtype=np.float64)
    return [list(points[i]) for i in lttb_indices(xy[:, 0], xy[:, 1], max_points)]
