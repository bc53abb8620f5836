"""Hugging Face data sets as a source (``hf:<dataset id>[:<config>]``, needs the network).

``datasets.load_dataset`` reads the set; its train/validation/test splits are used. A missing validation
or test split is carved from train (10%, ``SPLIT_SEED``): stratified in ``splitting``, seeded in ``lm_text``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from distill.config import ConfigError, DataConfig
from distill.data.table import SPLITS, Table, clean_text, label_value

_HF_SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}


def hf_load(spec: str, **kwargs: Any) -> Any:
    """``datasets.load_dataset`` for ``<id>[:<config>]``; any failure is the user's to fix, as a ConfigError."""
    dataset_id, _, config_name = spec.partition(":")
    if not dataset_id:
        raise ConfigError.one("data.source", "hf: needs a dataset id, e.g. hf:rotten_tomatoes")
    try:
        # imported here: slow to import, and no other path needs it
        import datasets

        return datasets.load_dataset(dataset_id, config_name or None, **kwargs)
    except Exception as exc:  # offline, unknown id, gated set: each is the user's to fix
        raise ConfigError.one("data.source", f"could not load the Hugging Face data set {spec!r}: {exc}") from None


def _hf_label_names(features: Any, column: str) -> tuple[str, ...] | None:
    feature = (features or {}).get(column)
    names = getattr(feature, "names", None)  # a ClassLabel carries its class order
    return tuple(names) if names else None


def _hf_check_columns(columns: Sequence[str], cfg: DataConfig, where: str) -> None:
    missing = [
        (field, f"column {column!r} not found in {where}; columns present: {', '.join(columns)}")
        for field, column in (("data.text_column", cfg.text_column), ("data.label_column", cfg.label_column))
        if column not in columns
    ]
    if missing:
        raise ConfigError(missing)


def hf_table(spec: str, cfg: DataConfig) -> Table:
    """A hub set's labelled rows with their own splits (a split it lacks is carved later)."""
    dataset = hf_load(spec)
    chosen: dict[str, str] = {}
    for split_name in dataset:
        canonical = _HF_SPLIT_NAMES.get(split_name)
        if canonical is not None:
            chosen.setdefault(canonical, split_name)
    if "train" not in chosen:
        raise ConfigError.one("data.source", f"hf:{spec} has no train split (splits: {', '.join(dataset) or 'none'})")
    order = _hf_label_names(dataset[chosen["train"]].features, cfg.label_column)
    texts: list[str] = []
    labels: list[str] = []
    splits: list[str] = []
    places: list[tuple[str, int]] = []
    for canonical in SPLITS:
        if canonical not in chosen:
            continue
        part = dataset[chosen[canonical]]
        _hf_check_columns(part.column_names, cfg, f"the {chosen[canonical]} split of hf:{spec}")
        column = list(part[cfg.label_column])
        if order is not None and all(value == -1 for value in column):
            continue  # GLUE-style unlabelled test split: as good as absent
        for row, (text_value, value) in enumerate(zip(part[cfg.text_column], column, strict=True)):
            text_value = clean_text(text_value)
            if not text_value:
                continue
            where = f"row {row + 1} of the {chosen[canonical]} split of hf:{spec}"
            if order is not None:
                if not isinstance(value, int) or not 0 <= value < len(order):
                    raise ConfigError.one("data.label_column", f"{where}: label {value!r} is not a class id")
                value = order[value]
            labels.append(label_value(value, where, cfg.label_column))
            texts.append(text_value)
            splits.append(canonical)
            places.append((chosen[canonical], row + 1))
    return Table(
        name=spec.partition(":")[0],
        texts=texts,
        labels=labels,
        locate=lambda i: f"row {places[i][1]} of the {places[i][0]} split of hf:{spec}",
        splits=splits,
        order=order,
        strict_splits=False,
    )


def hf_text_table(spec: str, cfg: DataConfig) -> Table:
    """A hub set's texts with their own splits, for a causal LM."""
    dataset = hf_load(spec)
    texts: list[str] = []
    splits: list[str] = []
    for split_name in dataset:
        canonical = _HF_SPLIT_NAMES.get(split_name)
        if canonical is None or canonical in splits:
            continue
        part = dataset[split_name]
        if cfg.text_column not in part.column_names:
            raise ConfigError.one(
                "data.text_column",
                f"column {cfg.text_column!r} not found in the {split_name} split of hf:{spec}; "
                f"columns present: {', '.join(part.column_names)}",
            )
        for value in part[cfg.text_column]:
            if text := clean_text(value):
                texts.append(text)
                splits.append(canonical)
    if "train" not in splits:
        raise ConfigError.one("data.source", f"hf:{spec} has no train split with text")
    return Table(spec, texts, [""] * len(texts), lambda i: f"row {i + 1} of hf:{spec}", splits, strict_splits=False)


def hf_preview(spec: str, cfg: DataConfig, rows: int) -> list[dict[str, str]]:
    """The first ``rows`` labelled rows of a hub set's train split, as ``{"text", "label"}``."""
    # streaming reads a few rows instead of downloading the whole set
    stream = hf_load(spec, split="train", streaming=True)
    order = _hf_label_names(getattr(stream, "features", None), cfg.label_column)
    out: list[dict[str, str]] = []
    for n, row in enumerate(itertools.islice(stream, rows * 4), 1):
        _hf_check_columns(list(row), cfg, f"the train split of hf:{spec}")
        text = clean_text(row[cfg.text_column])
        value = row[cfg.label_column]
        if order is not None and isinstance(value, int) and 0 <= value < len(order):
            value = order[value]
        if text:
            out.append({"text": text, "label": label_value(value, f"row {n} of hf:{spec}", cfg.label_column)})
        if len(out) == rows:
            break
    return out
