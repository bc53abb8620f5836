"""The table every source is read into, and the cleaning all sources share.

Cleaning: texts are stripped and empty ones dropped. A set that we split ourselves is deduplicated
first (one copy of an exact duplicate is kept; a text seen with two different labels is dropped
entirely), so no text can sit in two splits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from distill.config import ConfigError

SPLITS: tuple[str, ...] = ("train", "validation", "test")
SPLIT_COLUMN = "split"


class RawSet(NamedTuple):
    """A parsed packaged set before splitting: parallel texts and class ids, and the class names."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    names: tuple[str, ...]


def dedupe(texts: Sequence[str], labels: Sequence[Any]) -> tuple[list[str], list[Any]]:
    """Keep the first copy of each text; drop texts that occur with more than one label."""
    first: dict[str, Any] = {}
    conflicting: set[str] = set()
    for text, label in zip(texts, labels, strict=True):
        if first.setdefault(text, label) != label:
            conflicting.add(text)  # no right answer to learn or to score against
    kept = [(text, label) for text, label in first.items() if text not in conflicting]
    return [t for t, _ in kept], [y for _, y in kept]


@dataclass
class Table:
    """A source's usable rows in source order, labels still as strings."""

    name: str
    texts: list[str]
    labels: list[str]
    locate: Callable[[int], str]  # row index -> "line 7 of reviews.csv", for messages
    splits: list[str] | None = None  # per-row split when the source brings its own
    order: tuple[str, ...] | None = None  # the source's own class order (packaged set, ClassLabel)
    strict_splits: bool = True  # a split column must fill all three; a hub set may lack some


def clean_text(value: Any) -> str:
    """A cell as stripped text; a missing cell is empty."""
    return "" if value is None else str(value).strip()


def label_value(value: Any, where: str, column: str) -> str:
    """A label as its string form: 1, 1.0 and "1" are the same class."""
    if isinstance(value, list | dict):
        raise ConfigError.one(
            "data.label_column", f"{where}: the label in column {column!r} must be a string or a number"
        )
    if isinstance(value, bool):
        value = json.dumps(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    label = clean_text(value)
    if not label:
        raise ConfigError.one("data.label_column", f"{where}: empty label in column {column!r}")
    return label
