"""Classes and the one fixed split of a labelled set: ``load_data``, and ``preview`` for the web.

The fixed split: stratified 80/10/10 train/validation/test with sklearn's ``train_test_split`` and
``SPLIT_SEED``. The seed is a module constant, deliberately not the run seed: every run of every kind
(teacher fine-tuning, distillation, the no-KD baseline) sees the same test set, so their scores compare.
``max_train_samples`` / ``max_eval_samples`` take seeded stratified subsamples of train and of
validation and test, so a capped run is as reproducible as a full one.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from distill.config import ConfigError, DataConfig
from distill.data.hub import hf_load, hf_preview
from distill.data.sources import read_table
from distill.data.table import SPLIT_COLUMN, SPLITS, Table, clean_text, dedupe

SPLIT_SEED = 20240601
HOLDOUT = 0.2  # validation + test share of the fixed split, halved between them
CARVE = 0.1  # share of train carved out for a split a Hugging Face set lacks

_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Split:
    """One split: parallel lists of texts and class ids."""

    texts: list[str]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TextClassificationData:
    """A labelled set with its three splits; ``labels[i]`` names class id ``i``."""

    name: str
    labels: tuple[str, ...]
    train: Split
    validation: Split
    test: Split

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def split(self, name: str) -> Split:
        """The split called ``name``: train, validation or test."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)


def _class_names(table: Table, cfg: DataConfig) -> tuple[str, ...]:
    """The class order, after checking every label against it."""
    if table.splits is None:
        train_labels = table.labels
    else:
        train_labels = [y for y, s in zip(table.labels, table.splits, strict=True) if s == "train"]
    if cfg.labels is not None:
        repeated = sorted(name for name, count in Counter(cfg.labels).items() if count > 1)
        if repeated:
            raise ConfigError.one("data.labels", f"label {repeated[0]!r} is listed more than once")
        if len(cfg.labels) < 2:
            raise ConfigError.one("data.labels", f"classification needs at least 2 labels, got {cfg.labels}")
        allowed = set(cfg.labels)
        for i, label in enumerate(table.labels):
            if label not in allowed:
                raise ConfigError.one(
                    "data.labels",
                    f"label {label!r} on {table.locate(i)} is not in data.labels ({', '.join(cfg.labels)})",
                )
        names = tuple(cfg.labels)
    elif table.order is not None:
        names = table.order
    else:
        values = set(train_labels)
        numeric = all(_INT.fullmatch(value) for value in values)
        names = tuple(sorted(values, key=int if numeric else str))

    present = sorted(set(train_labels))
    if len(present) < 2:
        found = f"only the label {present[0]!r}" if present else "no labels"
        raise ConfigError.one(
            "data.label_column",
            f"{table.name} has {found} in the train rows of column {cfg.label_column!r}; "
            "classification needs at least 2 classes",
        )
    if table.splits is not None:
        seen = set(present)
        for i, (label, split) in enumerate(zip(table.labels, table.splits, strict=True)):
            if label not in seen:
                raise ConfigError.one(
                    "data.label_column",
                    f"label {label!r} on {table.locate(i)} ({split}) never appears in train",
                )
    return names


def _stratified(indices: np.ndarray, strata: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held-out) with ``size`` held out, class ratios kept; raises ValueError if too small.

    ``strata`` holds label names, not ids: the split must not change when data.labels reorders classes.
    """
    rest, held = train_test_split(
        indices, test_size=size, stratify=strata[indices], random_state=SPLIT_SEED, shuffle=True
    )
    return rest, held


def _too_small(name: str, y: np.ndarray, names: Sequence[str], what: str) -> ConfigError:
    counts = np.bincount(y, minlength=len(names))
    smallest = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    return ConfigError.one(
        "data.source",
        f"{name} is too small for {what}: {len(y)} rows, and class {names[smallest]!r} has only "
        f"{counts[smallest]}; give each class at least about 10 rows, or add a {SPLIT_COLUMN!r} column",
    )


def _fixed_split(name: str, y: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    indices = np.arange(len(y))
    strata = np.asarray(names)[y]
    try:
        train, held = _stratified(indices, strata, HOLDOUT)
        validation, test = _stratified(held, strata, 0.5)
    except ValueError:
        raise _too_small(name, y, names, "the fixed stratified 80/10/10 split") from None
    return {"train": train, "validation": validation, "test": test}


def _subsample(split: Split, limit: int | None, names: Sequence[str]) -> Split:
    """A seeded, stratified subset of ``limit`` rows, in the split's order."""
    if limit is None or limit >= len(split):
        return split
    indices = np.arange(len(split))
    strata = np.asarray(names)[np.asarray(split.labels, dtype=np.int64)]
    try:
        keep, _ = train_test_split(indices, train_size=limit, stratify=strata, random_state=SPLIT_SEED)
    except ValueError:  # fewer rows than classes, or a singleton class: plain seeded sample
        keep = np.random.default_rng(SPLIT_SEED).permutation(len(split))[:limit]
    keep = np.sort(keep)
    return Split([split.texts[i] for i in keep], [split.labels[i] for i in keep])


def assemble(table: Table, cfg: DataConfig) -> TextClassificationData:
    """Classes, the split (the source's own or the fixed one) and the caps, applied to a table."""
    if not table.texts:
        raise ConfigError.one("data.source", f"{table.name} has no usable rows")
    if table.splits is not None:
        counts = Counter(table.splits)
        if "train" not in counts:
            raise ConfigError.one("data.source", f"{table.name} has no train rows")
        if table.strict_splits:
            for split in SPLITS:
                if not counts[split]:
                    raise ConfigError.one(
                        "data.source",
                        f"the {split} split of {table.name} is empty: its {SPLIT_COLUMN!r} column has no "
                        f"{split!r} rows",
                    )
    names = _class_names(table, cfg)
    ids = {name: i for i, name in enumerate(names)}

    if table.splits is None:
        texts, labels = dedupe(table.texts, [ids[label] for label in table.labels])
        y = np.asarray(labels, dtype=np.int64)
        parts = _fixed_split(table.name, y, names)
    else:
        texts = table.texts
        y = np.asarray([ids[label] for label in table.labels], dtype=np.int64)
        tags = np.asarray(table.splits)
        parts = {split: np.flatnonzero(tags == split) for split in SPLITS}
        for split in SPLITS:
            if len(parts[split]):
                continue
            # only a hub set gets here: carve what it lacks from train
            try:
                parts["train"], parts[split] = _stratified(parts["train"], np.asarray(names)[y], CARVE)
            except ValueError:
                raise _too_small(table.name, y[parts["train"]], names, f"carving a {split} split") from None

    def build(split: str) -> Split:
        return Split([texts[i] for i in parts[split]], [int(y[i]) for i in parts[split]])

    return TextClassificationData(
        name=table.name,
        labels=tuple(names),
        train=_subsample(build("train"), cfg.max_train_samples, names),
        validation=_subsample(build("validation"), cfg.max_eval_samples, names),
        test=_subsample(build("test"), cfg.max_eval_samples, names),
    )


def load_data(cfg: DataConfig) -> TextClassificationData:
    """Read, clean and split the configured data; every user error is a :class:`ConfigError`."""
    return assemble(read_table(cfg), cfg)


def preview(cfg: DataConfig, rows: int = 5, task: str = "classification") -> list[dict[str, str]]:
    """The first ``rows`` usable rows in source order, as ``{"text", "label"}`` (``{"text"}`` for
    ``task="causal_lm"``), for the web preview."""
    if rows <= 0:
        return []
    source = cfg.source.strip()
    if task == "causal_lm":
        if source.startswith("hf:"):
            stream = hf_load(source.removeprefix("hf:"), split="train", streaming=True)
            texts = (clean_text(row.get(cfg.text_column)) for row in itertools.islice(stream, rows * 4))
            return [{"text": t} for t in itertools.islice(filter(None, texts), rows)]
        return [{"text": text} for text in read_table(cfg, labelled=False).texts[:rows]]
    if source.startswith("hf:"):
        return hf_preview(source.removeprefix("hf:"), cfg, rows)
    table = read_table(cfg)
    _class_names(table, cfg)  # the same label errors load_data would give
    return [{"text": text, "label": label} for text, label in zip(table.texts[:rows], table.labels[:rows], strict=True)]
