"""Peak resident memory of this process (Linux): reset the peak to the current size, then read it back.

VmHWM rather than ``ru_maxrss``: the latter survives exec and cannot be reset.
"""

from __future__ import annotations

from pathlib import Path

import psutil


def reset_peak() -> int:
    """Reset this process's peak resident size to its current one, and return that size in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return psutil.Process().memory_info().rss


def peak_rss() -> int:
    """Peak resident bytes of this process since the last :func:`reset_peak` (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
