"""Helpers the data tests share: a config for a source, the error it gives, small files to read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config import ConfigError, DataConfig
from distill.data import (
    SPLITS,
    TextClassificationData,
    load_data,
)


def data_cfg(source: str | Path, **kwargs) -> DataConfig:
    """A data config reading ``source``."""
    return DataConfig(source=str(source), **kwargs)


def load_error(cfg: DataConfig) -> tuple[str, str]:
    """The first ``(field, message)`` of the ConfigError that loading ``cfg`` raises."""
    with pytest.raises(ConfigError) as info:
        load_data(cfg)
    assert len(info.value.errors) >= 1
    return info.value.errors[0]


def assert_disjoint(data: TextClassificationData) -> None:
    """No text in two splits, and none twice in one."""
    seen = [set(data.split(name).texts) for name in SPLITS]
    assert not seen[0] & seen[1]
    assert not seen[0] & seen[2]
    assert not seen[1] & seen[2]
    for name, texts in zip(SPLITS, seen, strict=True):
        assert len(texts) == len(data.split(name)), f"duplicate texts inside {name}"


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    """A CSV file of a header line and raw rows."""
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """A JSON lines file, one record a line."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def reviews(n_per_class: int = 20, labels: tuple = ("neg", "pos")) -> list[tuple[str, object]]:
    """``n_per_class`` distinct ``(text, label)`` rows for each label."""
    return [(f"review {i} of class {label}", label) for label in labels for i in range(n_per_class)]
