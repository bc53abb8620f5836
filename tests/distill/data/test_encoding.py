"""Encoding a split once and collating padded batches for the trainer."""

from __future__ import annotations

import pytest
import torch
from transformers import BertTokenizerFast

from distill.data import (
    EncodedSplit,
    Split,
    collate,
    encode,
    load_data,
)
from tests.distill.data.support import data_cfg, reviews, write_jsonl


@pytest.fixture
def tokenizer(tmp_path) -> BertTokenizerFast:
    words = ["the", "film", "was", "good", "bad", "very", "plot", "a"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    # transformers 5 takes the file as `vocab=`; `vocab_file=` is silently ignored (specials only)
    tok = BertTokenizerFast(vocab=str(vocab))
    assert tok.vocab_size == 5 + len(words)
    return tok


def test_it_encodes_once_and_collates_padded_batches(tokenizer):
    split = Split(["the film was good", "bad", "a very very very very bad plot"], [1, 0, 0])
    encoded = encode(split, tokenizer, max_length=6)
    assert isinstance(encoded, EncodedSplit) and len(encoded) == 3
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert encoded[0] == {"input_ids": [cls, 5, 6, 7, 8, sep], "labels": 1, "index": 0}
    assert encoded[1]["input_ids"] == [cls, 9, sep]
    assert len(encoded[2]["input_ids"]) == 6  # truncated to max_length

    batch = collate([encoded[1], encoded[0]], pad_token_id=tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "index"}
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].tolist() == [[cls, 9, sep, 0, 0, 0], [cls, 5, 6, 7, 8, sep]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert batch["labels"].tolist() == [0, 1]
    assert batch["index"].tolist() == [1, 0]  # each item's place in its split, whatever the batch order

    short = collate([encoded[1]], pad_token_id=tokenizer.pad_token_id)
    assert short["input_ids"].shape == (1, 3)
    assert len(encode(Split([], []), tokenizer, max_length=8)) == 0


def test_it_encodes_a_loaded_split_for_a_dataloader(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "r.jsonl", [{"text": t, "label": y} for t, y in reviews()])
    data = load_data(data_cfg(path))
    encoded = encode(data.train, tokenizer, max_length=16)
    loader = torch.utils.data.DataLoader(encoded, batch_size=8, collate_fn=lambda b: collate(b, tokenizer.pad_token_id))
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 8
    assert batch["labels"].tolist() == data.train.labels[:8]
