"""A quiet machine: the CPU the bench and everything else used over an interval, and a wait until other work
stops, so that a timing on a shared two-core machine means something."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

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
