"""LTTB downsampling of a metric series (jobs.downsample): exact bounds, kept ends, kept order, kept peaks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from jobs.downsample import lttb, lttb_indices


def _series(n: int, start: int = 1) -> list[list[float]]:
    return [[step, math.sin(step / 37) + 1 / step] for step in range(start, start + n)]


@pytest.mark.parametrize("n", [2001, 2500, 5000, 100_000])
def test_it_keeps_at_most_max_points_with_the_first_and_the_last(n):
    points = _series(n)

    kept = lttb(points, 2000)

    assert len(kept) == 2000  # exactly the bound when there are more points
    assert kept[0] == points[0] and kept[-1] == points[-1]
    steps = [p[0] for p in kept]
    assert all(a < b for a, b in itertools.pairwise(steps))  # strictly increasing steps
    originals = {p[0]: p[1] for p in points}
    assert all(originals[s] == v for s, v in kept)  # real points only, never averages


@pytest.mark.parametrize("n", [0, 1, 2, 1999, 2000])
def test_it_leaves_a_series_of_at_most_max_points_unchanged(n):
    points = _series(n)
    assert lttb(points, 2000) == points


@pytest.mark.parametrize("max_points", [2, 3, 10, 333])
def test_it_honours_small_bounds(max_points):
    points = _series(1000, start=5)

    kept = lttb(points, max_points)

    assert len(kept) == max_points
    assert kept[0] == points[0] and kept[-1] == points[-1]


def test_it_refuses_a_bound_that_cannot_keep_both_ends():
    with pytest.raises(ValueError, match="at least 2"):
        lttb(_series(10), 1)


def test_it_keeps_a_spike_that_striding_would_drop():
    points = [[step, 0.0] for step in range(1, 10_001)]
    points[4321][1] = 50.0  # one diverging step

    kept = lttb(points, 100)

    assert [4322, 50.0] in kept
    assert points[4321][0] % (10_000 // 100) != 0  # a stride of 100 would not have kept it


def test_it_works_on_irregular_steps_and_numpy_input():
    steps = np.cumsum(np.random.default_rng(0).integers(1, 50, size=7000))
    values = np.random.default_rng(1).normal(size=7000)

    kept = lttb_indices(steps, values, 500)

    assert len(kept) == 500 and kept[0] == 0 and kept[-1] == 6999
    assert np.all(np.diff(kept) > 0)
