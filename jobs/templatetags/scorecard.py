"""Filters of the scorecard page: numbers that may be missing, shown as "—"."""

from __future__ import annotations

from typing import Any

from django import template

from jobs.configs import setting_text

register = template.Library()
MISSING = "—"


@register.filter
def num(value: float | None, digits: int = 3) -> str:
    """``0.8125`` -> ``0.812`` (``digits`` decimals, thousands separated); missing -> ``—``."""
    return MISSING if value is None else f"{value:,.{digits}f}"


@register.filter
def percent(value: float | None) -> str:
    """A ratio as a percentage: ``0.974`` -> ``97.4%``."""
    return MISSING if value is None else f"{100 * value:.1f}%"


@register.filter
def times(value: float | None) -> str:
    """A ratio as a factor: ``3.24`` -> ``3.2×``."""
    return MISSING if value is None else f"{value:.1f}×"


@register.filter
def entry(mapping: dict[str, Any], key: str) -> Any:
    """``mapping[key]``, or None: a task metric by its name, a variant's mean and std of one number."""
    return mapping.get(key)


@register.filter
def setting(value: Any) -> str:
    """A config setting's value as text (``configs.setting_text``): no Python reprs on a page."""
    return setting_text(value)
