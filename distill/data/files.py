"""Local files as a source: ``.csv``, ``.jsonl`` or ``.json`` (and ``.txt`` for causal LM text).

Columns are picked by ``text_column`` and ``label_column``. A ``.json`` file is read as JSON lines
unless it starts with ``[`` (one array of objects). A column named ``split`` with the values
train/validation/test gives the split; without one the file gets the fixed split (``splitting``).
A ``.txt`` file holds documents separated by blank lines.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from distill.config import ConfigError, DataConfig
from distill.data.packaged import PACKAGED
from distill.data.table import SPLIT_COLUMN, SPLITS, Table, clean_text, label_value

FILE_TYPES: tuple[str, ...] = (".csv", ".jsonl", ".json")
TEXT_FILE = ".txt"  # causal_lm only: documents separated by blank lines


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


def file_table(path: Path, cfg: DataConfig, labelled: bool = True) -> Table:
    """A local file's usable rows; ``labelled=False`` reads text alone and also accepts ``.txt``."""
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
        text_value = clean_text(record.get(cfg.text_column))
        if not text_value:
            continue  # an empty text teaches nothing; dropped, not an error
        where = f"{unit} {place} of {path}"
        labels.append(label_value(record.get(cfg.label_column), where, cfg.label_column) if labelled else "")
        if has_split:
            split = clean_text(record.get(SPLIT_COLUMN)).lower()
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
    return Table(
        name=path.stem,
        texts=texts,
        labels=labels,
        locate=lambda i: f"{unit} {places[i]} of {path}",
        splits=splits if has_split else None,
    )


def _txt_table(path: Path) -> Table:
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
    return Table(path.stem, documents, [""] * len(documents), lambda i: f"line {starts[i]} of {path}")


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
