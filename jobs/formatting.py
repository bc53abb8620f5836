"""How every page writes a number: :func:`number` (thousands separators, significant digits) and :func:`compact`
(``22.7 M``). Templates use them as the ``number`` and ``compact`` filters (``{% load numbers %}``)."""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"
# (threshold, suffix) of the compact form, largest first
UNITS = ((1e9, "B"), (1e6, "M"), (1e3, "k"))


def _as_float(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def number(value: Any, digits: int = 4) -> str:
    """``22713986`` -> ``22,713,986``; a float to ``digits`` significant digits (``0.812549`` -> ``0.8125``,
    ``1234.56`` -> ``1,235``; tiny ones in exponent form, ``5e-05``); missing -> ``—``; text stays as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    x = _as_float(value)
    if x is None:
        return MISSING if value is None or value == "" else str(value)
    if not math.isfinite(x) or x == 0:
        return f"{x:g}"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude < -3:
        return f"{x:.{max(1, digits - 1)}g}"
    return f"{x:,.{max(0, digits - 1 - magnitude)}f}"


def compact(value: Any) -> str:
    """A count in a few characters: ``22713986`` -> ``22.7 M``, ``410512`` -> ``410.5 k``, ``950`` -> ``950``;
    missing -> ``—``. Tables put the exact :func:`number` in the cell's title."""
    x = _as_float(value)
    if x is None:
        return MISSING
    for threshold, suffix in UNITS:
        if abs(x) >= threshold:
            return f"{x / threshold:.1f} {suffix}"
    return number(value)
