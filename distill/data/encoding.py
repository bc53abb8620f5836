"""Tokenized classification splits for the trainer: encode once, pad per batch in ``collate``."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from distill.data.splitting import Split


class EncodedSplit(Dataset):
    """A split tokenized once up front; item ``i`` is ``{"input_ids": list[int], "labels": int, "index": i}``."""

    def __init__(self, input_ids: list[list[int]], labels: list[int]):
        if len(input_ids) != len(labels):
            raise ValueError(f"{len(input_ids)} encoded texts but {len(labels)} labels")
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index], "index": index}


def encode(split: Split, tokenizer: Any, max_length: int) -> EncodedSplit:
    """Tokenize every text in one batched call, truncated to ``max_length``; padding waits for collate."""
    if not len(split):
        return EncodedSplit([], [])
    # one call lets a fast tokenizer work through the batch in Rust; padding per batch keeps batches short
    encoded = tokenizer(split.texts, truncation=True, max_length=max_length)
    return EncodedSplit([list(ids) for ids in encoded["input_ids"]], list(split.labels))


def collate(batch: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest item: input_ids and attention_mask (B, L), labels (B,), all long; and the
    items' positions in their split, ``index`` (B,), when they carry one (the teacher cache looks them up by it,
    whatever order the sampler drew them in)."""
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
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if "index" in batch[0]:
        out["index"] = torch.tensor([item["index"] for item in batch], dtype=torch.long)
    return out
