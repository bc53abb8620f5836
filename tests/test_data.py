"""Data loading: the packaged sets, local files, the fixed split, every user error, encode and collate."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizerFast

from distill.config import ConfigError, DataConfig
from distill.data import (
    PACKAGED,
    SPLITS,
    EncodedSplit,
    Split,
    TextClassificationData,
    collate,
    encode,
    load_data,
    preview,
)


def _cfg(source: str | Path, **kwargs) -> DataConfig:
    return DataConfig(source=str(source), **kwargs)


def _error(cfg: DataConfig) -> tuple[str, str]:
    with pytest.raises(ConfigError) as info:
        load_data(cfg)
    assert len(info.value.errors) >= 1
    return info.value.errors[0]


def _assert_disjoint(data: TextClassificationData) -> None:
    seen = [set(data.split(name).texts) for name in SPLITS]
    assert not seen[0] & seen[1]
    assert not seen[0] & seen[2]
    assert not seen[1] & seen[2]
    for name, texts in zip(SPLITS, seen, strict=True):
        assert len(texts) == len(data.split(name)), f"duplicate texts inside {name}"


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _reviews(n_per_class: int = 20, labels: tuple = ("neg", "pos")) -> list[tuple[str, object]]:
    return [(f"review {i} of class {label}", label) for label in labels for i in range(n_per_class)]


# --- packaged sets -------------------------------------------------------------------------------


def test_it_loads_rotten_tomatoes_with_a_fixed_stratified_split():
    data = load_data(_cfg("packaged:rotten_tomatoes"))
    assert data.name == "rotten_tomatoes"
    assert data.labels == ("rotten", "fresh")
    total = len(data.train) + len(data.validation) + len(data.test)
    assert 12_500 <= total <= 12_900
    assert abs(len(data.train) / total - 0.8) < 0.005
    assert abs(len(data.validation) / total - 0.1) < 0.005
    assert abs(len(data.test) / total - 0.1) < 0.005
    _assert_disjoint(data)
    assert all(text == text.strip() and text for text in data.train.texts)

    overall = sum(sum(data.split(name).labels) for name in SPLITS) / total
    for name in SPLITS:
        split = data.split(name)
        assert set(split.labels) == {0, 1}
        assert abs(sum(split.labels) / len(split) - overall) < 0.01, name

    again = load_data(_cfg("packaged:rotten_tomatoes"))
    for name in SPLITS:
        assert again.split(name) == data.split(name)


def test_it_loads_bbc_news_deduplicated_with_five_topics():
    data = load_data(_cfg("packaged:bbc_news"))
    assert data.labels == ("business", "entertainment", "politics", "sports", "tech")
    total = len(data.train) + len(data.validation) + len(data.test)
    assert 2_050 <= total <= 2_225  # 2,225 files, some of them duplicates
    _assert_disjoint(data)
    for name in SPLITS:
        assert set(data.split(name).labels) == set(range(5))
    title, body = data.train.texts[0].split("\n", 1)
    assert title and len(body) > len(title)
    assert not any("\ufffd" in text for name in SPLITS for text in data.split(name).texts)


def test_it_caps_samples_deterministically_and_stratified():
    cfg = _cfg("packaged:rotten_tomatoes", max_train_samples=1000, max_eval_samples=100)
    data = load_data(cfg)
    assert (len(data.train), len(data.validation), len(data.test)) == (1000, 100, 100)
    full = load_data(_cfg("packaged:rotten_tomatoes"))
    assert set(data.train.texts) <= set(full.train.texts)
    assert abs(sum(data.train.labels) / 1000 - sum(full.train.labels) / len(full.train)) < 0.01
    assert load_data(cfg) == data


def test_it_reorders_packaged_labels_to_the_configured_order():
    data = load_data(_cfg("packaged:rotten_tomatoes", labels=("fresh", "rotten")))
    full = load_data(_cfg("packaged:rotten_tomatoes"))
    assert data.labels == ("fresh", "rotten")
    for name in SPLITS:  # the split follows the label names, not the class ids
        assert data.split(name).texts == full.split(name).texts
        assert data.split(name).labels == [1 - y for y in full.split(name).labels]


def test_it_previews_the_first_rows_cheaply():
    rows = preview(_cfg("packaged:rotten_tomatoes"), rows=3)
    assert len(rows) == 3
    assert all(set(row) == {"text", "label"} and row["label"] in ("rotten", "fresh") for row in rows)
    assert preview(_cfg("packaged:bbc_news"), rows=0) == []
    assert set(PACKAGED) == {"rotten_tomatoes", "bbc_news"}


# --- local files ---------------------------------------------------------------------------------


def test_it_maps_csv_columns_and_makes_the_fixed_split(tmp_path):
    rows = [f'"{text}, quoted",{label},x' for text, label in _reviews()]
    rows += ['"  ",pos,x', '"review 0 of class neg, quoted",neg,x']  # an empty text, a duplicate
    path = _write_csv(tmp_path / "reviews.csv", "review,sentiment,other", rows)
    data = load_data(_cfg(path, text_column="review", label_column="sentiment"))
    assert data.name == "reviews"
    assert data.labels == ("neg", "pos")
    assert (len(data.train), len(data.validation), len(data.test)) == (32, 4, 4)
    _assert_disjoint(data)
    for name in SPLITS:
        assert Counter(data.split(name).labels)[0] == len(data.split(name)) // 2
    assert "review 3 of class pos, quoted" in data.train.texts + data.validation.texts + data.test.texts
    assert load_data(_cfg(path, text_column="review", label_column="sentiment")) == data


def test_it_uses_a_split_column_and_sorts_int_labels_numerically(tmp_path):
    rows = []
    for split, count in (("train", 6), ("validation", 2), ("test", 3)):
        for i in range(count):
            for label in (2, 10, 1):
                rows.append(f"{split} text {i} label {label},{label},{split}")
    path = _write_csv(tmp_path / "numbers.csv", "text,label,split", rows)
    data = load_data(_cfg(path))
    assert data.labels == ("1", "2", "10")
    assert (len(data.train), len(data.validation), len(data.test)) == (18, 6, 9)
    assert all(text.startswith("test ") for text in data.test.texts)
    assert data.train.texts[0] == "train text 0 label 2" and data.train.labels[0] == 1


def test_it_reads_jsonl_with_int_labels_and_a_split_column(tmp_path):
    records = [{"review": f"{split} {i}", "sentiment": i % 2, "split": split} for split in SPLITS for i in range(6)]
    records.append({"review": None, "sentiment": 1, "split": "train"})  # dropped, not an error
    path = _write_jsonl(tmp_path / "reviews.jsonl", records)
    data = load_data(_cfg(path, text_column="review", label_column="sentiment"))
    assert data.labels == ("0", "1")
    assert data.validation.texts == [f"validation {i}" for i in range(6)]
    assert data.validation.labels == [0, 1, 0, 1, 0, 1]

    named = load_data(_cfg(path, text_column="review", label_column="sentiment", labels=("1", "0")))
    assert named.validation.labels == [1, 0, 1, 0, 1, 0]
    assert preview(_cfg(path, text_column="review", label_column="sentiment"), rows=2) == [
        {"text": "train 0", "label": "0"},
        {"text": "train 1", "label": "1"},
    ]


def test_it_splits_a_jsonl_file_without_a_split_column(tmp_path):
    records = [{"text": text, "label": label} for text, label in _reviews(20, (0, 1, 2))]
    path = _write_jsonl(tmp_path / "three.json", records)  # .json holding JSON lines
    data = load_data(_cfg(path))
    assert data.labels == ("0", "1", "2")
    assert (len(data.train), len(data.validation), len(data.test)) == (48, 6, 6)
    _assert_disjoint(data)
    assert all(Counter(data.split(name).labels) == {0: 2, 1: 2, 2: 2} for name in ("validation", "test"))

    array = tmp_path / "array.json"
    array.write_text(json.dumps(records))
    assert load_data(_cfg(array)).train == data.train


# --- errors --------------------------------------------------------------------------------------


def test_it_rejects_an_unknown_packaged_set():
    field, message = _error(_cfg("packaged:imdb"))
    assert field == "data.source"
    assert "'imdb'" in message and "bbc_news" in message and "rotten_tomatoes" in message


def test_it_rejects_a_missing_file_and_an_unsupported_extension(tmp_path):
    field, message = _error(_cfg(tmp_path / "nope.csv"))
    assert field == "data.source" and "file not found" in message and "nope.csv" in message

    (tmp_path / "reviews.txt").write_text("hello\n")
    field, message = _error(_cfg(tmp_path / "reviews.txt"))
    assert field == "data.source" and "'.txt'" in message and ".csv" in message

    field, message = _error(_cfg("rotten_tomatoes"))
    assert "did you mean packaged:rotten_tomatoes" in message


def test_it_names_the_line_of_a_file_that_does_not_parse(tmp_path):
    bad_quote = tmp_path / "quote.csv"
    bad_quote.write_text('text,label\nfine,pos\n"broken"x,neg\n')
    field, message = _error(_cfg(bad_quote))
    assert field == "data.source" and "not valid CSV" in message and "line 3" in message

    unterminated = tmp_path / "open.csv"
    unterminated.write_text('text,label\nfine,pos\n"never closed,neg\nmore,pos\n')
    field, message = _error(_cfg(unterminated))
    assert field == "data.source" and "line 3" in message

    extra = _write_csv(tmp_path / "extra.csv", "text,label", ["fine,pos", "one,two,three"])
    field, message = _error(_cfg(extra))
    assert field == "data.source" and "line 3" in message and "3 fields" in message

    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": \n')
    field, message = _error(_cfg(jsonl))
    assert field == "data.source" and "line 3" in message and "not valid JSON" in message

    not_object = tmp_path / "list.jsonl"
    not_object.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    field, message = _error(_cfg(not_object))
    assert "line 2" in message and "not a JSON object" in message


def test_it_names_a_missing_column_and_the_columns_present(tmp_path):
    path = _write_csv(tmp_path / "reviews.csv", "review,sentiment", ["good,pos", "bad,neg"])
    field, message = _error(_cfg(path, text_column="body", label_column="sentiment"))
    assert field == "data.text_column"
    assert "'body'" in message and "review, sentiment" in message

    field, message = _error(_cfg(path, text_column="review"))
    assert field == "data.label_column" and "'label'" in message and "review, sentiment" in message

    with pytest.raises(ConfigError) as info:
        load_data(_cfg(path))
    assert [f for f, _ in info.value.errors] == ["data.text_column", "data.label_column"]

    jsonl = _write_jsonl(tmp_path / "r.jsonl", [{"review": "good", "stars": 5}])
    field, message = _error(_cfg(jsonl, text_column="review"))
    assert field == "data.label_column" and "review, stars" in message


def test_it_says_which_split_is_empty(tmp_path):
    rows = [f"t{i},{'ab'[i % 2]},{'train' if i < 8 else 'test'}" for i in range(12)]
    path = _write_csv(tmp_path / "nosplit.csv", "text,label,split", rows)
    field, message = _error(_cfg(path))
    assert field == "data.source" and "validation split" in message and "is empty" in message

    bad = _write_csv(tmp_path / "dev.csv", "text,label,split", ["a,x,train", "b,y,dev"])
    field, message = _error(_cfg(bad))
    assert field == "data.source" and "'dev'" in message and "line 3" in message


def test_it_rejects_labels_outside_data_labels_and_unseen_in_train(tmp_path):
    rows = [f"{text},{label}" for text, label in _reviews()] + ["meh,neutral"]
    path = _write_csv(tmp_path / "three.csv", "text,label", rows)
    field, message = _error(_cfg(path, labels=("neg", "pos")))
    assert field == "data.labels"
    assert "'neutral'" in message and "line 42" in message and "neg, pos" in message

    rows = [f"tr{i},{'ab'[i % 2]},train" for i in range(6)] + ["v,a,validation", "t1,a,test", "t2,c,test"]
    path = _write_csv(tmp_path / "unseen.csv", "text,label,split", rows)
    field, message = _error(_cfg(path))
    assert field == "data.label_column"
    assert "'c'" in message and "line 10" in message and "never appears in train" in message

    field, message = _error(_cfg("packaged:rotten_tomatoes", labels=("rotten", "meh")))
    assert field == "data.labels" and "'fresh'" in message and "packaged:rotten_tomatoes" in message


def test_it_needs_two_classes_and_usable_rows(tmp_path):
    one = _write_csv(tmp_path / "one.csv", "text,label", [f"t{i},pos" for i in range(30)])
    field, message = _error(_cfg(one))
    assert field == "data.label_column" and "'pos'" in message and "at least 2 classes" in message

    field, message = _error(_cfg(one, labels=("pos",)))
    assert field == "data.labels" and "at least 2" in message

    empty = _write_csv(tmp_path / "empty.csv", "text,label", ['"",pos', "  ,neg"])
    field, message = _error(_cfg(empty))
    assert field == "data.source" and "no usable rows" in message and "'text'" in message

    header_only = _write_csv(tmp_path / "header.csv", "text,label", [])
    field, message = _error(_cfg(header_only))
    assert field == "data.source" and "no data rows" in message

    no_label = _write_csv(tmp_path / "nolabel.csv", "text,label", ["a,pos", "b,"])
    field, message = _error(_cfg(no_label))
    assert field == "data.label_column" and "line 3" in message and "empty label" in message


def test_it_says_when_a_file_is_too_small_to_split(tmp_path):
    rows = [f"{text},{label}" for text, label in _reviews()] + ["lonely,rare"]
    path = _write_csv(tmp_path / "tiny.csv", "text,label", rows)
    field, message = _error(_cfg(path))
    assert field == "data.source" and "too small" in message and "'rare'" in message


# --- encode and collate --------------------------------------------------------------------------


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
    assert encoded[0] == {"input_ids": [cls, 5, 6, 7, 8, sep], "labels": 1}
    assert encoded[1]["input_ids"] == [cls, 9, sep]
    assert len(encoded[2]["input_ids"]) == 6  # truncated to max_length

    batch = collate([encoded[1], encoded[0]], pad_token_id=tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].tolist() == [[cls, 9, sep, 0, 0, 0], [cls, 5, 6, 7, 8, sep]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert batch["labels"].tolist() == [0, 1]

    short = collate([encoded[1]], pad_token_id=tokenizer.pad_token_id)
    assert short["input_ids"].shape == (1, 3)
    assert len(encode(Split([], []), tokenizer, max_length=8)) == 0


def test_it_encodes_a_loaded_split_for_a_dataloader(tmp_path, tokenizer):
    path = _write_jsonl(tmp_path / "r.jsonl", [{"text": t, "label": y} for t, y in _reviews()])
    data = load_data(_cfg(path))
    encoded = encode(data.train, tokenizer, max_length=16)
    loader = torch.utils.data.DataLoader(encoded, batch_size=8, collate_fn=lambda b: collate(b, tokenizer.pad_token_id))
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 8
    assert batch["labels"].tolist() == data.train.labels[:8]
