"""Unlabelled text for causal language models (``task: causal_lm``): splits, token windows, batches.

The text comes from the same sources without labels: the BBC articles (split exactly as the
classification set, so an article held out there is held out here), a local ``.txt`` file (documents
separated by blank lines), a ``.csv`` / ``.jsonl`` / ``.json`` file's ``text_column``, or ``hf:<id>``.
A set without its own splits gets a seeded 80/10/10 shuffle-split after deduplication.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from distill.config import ConfigError, DataConfig
from distill.data.encoding import collate
from distill.data.packaged import PACKAGED
from distill.data.sources import read_table
from distill.data.splitting import CARVE, HOLDOUT, SPLIT_SEED, assemble
from distill.data.table import SPLITS
from distill.losses import IGNORE_INDEX


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
    table = read_table(cfg, labelled=False)
    if table.name in PACKAGED and cfg.source.strip().startswith("packaged:"):
        # the classification set's own split and caps: held-out articles are the same in both tasks
        data = assemble(table, cfg.model_copy(update={"labels": None}))
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
    """Token windows for next-token prediction; item ``i`` is ``{"input_ids": list[int], "index": i}``."""

    def __init__(self, windows: list[list[int]]):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.windows[index], "index": index}

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
    ids with ``IGNORE_INDEX`` (-100) at padding, shifted by the loss (position l predicts token l+1); ``index``
    as :func:`~distill.data.collate` gives it."""
    padded = collate([{**item, "labels": 0} for item in batch], pad_token_id)
    padded["labels"] = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, IGNORE_INDEX)
    return padded
