"""A run's config as people read it: only the settings its kind and task use (``distill.config.applies``), in
the engine's field order, one row per setting with its value as text. The run page shows these rows; the
scorecard's config diff compares the same flattened settings."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from distill.config import HOST_PATHS, RunConfig, applicable_config
from jobs.formatting import number


def _section_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def in_field_order(config: Any, model: type[BaseModel] = RunConfig) -> Any:
    """The stored config with its keys in the engine's field order (the database keeps JSON keys sorted)."""
    if not isinstance(config, dict):
        return config
    fields = model.model_fields
    rank = {name: i for i, name in enumerate(fields)}
    ordered = {}
    for key in sorted(config, key=lambda k: (rank.get(k, len(rank)), k)):
        section = _section_model(fields[key].annotation) if key in fields else None
        ordered[key] = in_field_order(config[key], section) if section else config[key]
    return ordered


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"task": 1}}`` -> ``{"loss.task": 1}``; lists stay whole (a layer map is one value)."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def applicable_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened settings of a stored config that its kind and task read, in the engine's field order,
    without the host's folders (``HOST_PATHS``: the worker sets them, people neither choose nor compare them)."""
    settings = flatten(in_field_order(applicable_config(config)))
    return {key: value for key, value in settings.items() if key not in HOST_PATHS}


PAIR_KEYS = ("student", "teacher", "feature_weight", "attention_weight")


def _pair_text(pair: dict[str, Any] | list[Any]) -> str:
    """A layer pair (stored as a mapping, or the YAML shorthand list) as ``s→t``, with its weights when not 1."""
    p = pair if isinstance(pair, dict) else dict(zip(PAIR_KEYS, pair, strict=False))
    text = f"{p.get('student')}→{p.get('teacher')}"
    weights = [p.get(w, 1.0) for w in PAIR_KEYS[2:]]
    return text if weights == [1.0, 1.0] else f"{text} ({weights[0]:g}, {weights[1]:g})"


def setting_text(value: Any) -> str:
    """One setting's value as text: ``yes``/``no``, numbers by :func:`number`, lists joined, layer pairs as
    ``student→teacher`` (with their feature and attention weights when not 1); unset (None) is ``—``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return number(value) if isinstance(value, int) else f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_pair_text(v) if isinstance(v, dict | list) else setting_text(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {setting_text(v)}" for k, v in value.items())
    return "—" if value is None else str(value)


def config_rows(config: dict[str, Any]) -> list[dict[str, str]]:
    """The run page's config table: ``[{"section", "name", "key", "value"}]`` for the settings that apply."""
    rows = []
    for key, value in applicable_settings(config).items():
        section, _, name = key.rpartition(".")
        rows.append({"section": section, "name": name, "key": key, "value": setting_text(value)})
    return rows
