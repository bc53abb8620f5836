"""Local files as a source: CSV and JSON lines, their split column, and every error a file can give."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from distill.config import ConfigError
from distill.data import (
    SPLITS,
    load_data,
    preview,
)
from tests.distill.data.support import assert_disjoint, data_cfg, load_error, reviews, write_csv, write_jsonl


def test_it_maps_csv_columns_and_makes_the_fixed_split(tmp_path):
    rows = [f'"{text}, quoted",{label},x' for text, label in reviews()]
    rows += ['"  ",pos,x', '"review 0 of class neg, quoted",neg,x']  # an empty text, a duplicate
    path = write_csv(tmp_path / "reviews.csv", "review,sentiment,other", rows)
    data = load_data(data_cfg(path, text_column="review", label_column="sentiment"))
    assert data.name == "reviews"
    assert data.labels == ("neg", "pos")
    assert (len(data.train), len(data.validation), len(data.test)) == (32, 4, 4)
    assert_disjoint(data)
    for name in SPLITS:
        assert Counter(data.split(name).labels)[0] == len(data.split(name)) // 2
    assert "review 3 of class pos, quoted" in data.train.texts + data.validation.texts + data.test.texts
    assert load_data(data_cfg(path, text_column="review", label_column="sentiment")) == data


def test_it_uses_a_split_column_and_sorts_int_labels_numerically(tmp_path):
    rows = []
    for split, count in (("train", 6), ("validation", 2), ("test", 3)):
        for i in range(count):
            for label in (2, 10, 1):
                rows.append(f"{split} text {i} label {label},{label},{split}")
    path = write_csv(tmp_path / "numbers.csv", "text,label,split", rows)
    data = load_data(data_cfg(path))
    assert data.labels == ("1", "2", "10")
    assert (len(data.train), len(data.validation), len(data.test)) == (18, 6, 9)
    assert all(text.startswith("test ") for text in data.test.texts)
    assert data.train.texts[0] == "train text 0 label 2" and data.train.labels[0] == 1


def test_it_reads_jsonl_with_int_labels_and_a_split_column(tmp_path):
    records = [{"review": f"{split} {i}", "sentiment": i % 2, "split": split} for split in SPLITS for i in range(6)]
    records.append({"review": None, "sentiment": 1, "split": "train"})  # dropped, not an error
    path = write_jsonl(tmp_path / "reviews.jsonl", records)
    data = load_data(data_cfg(path, text_column="review", label_column="sentiment"))
    assert data.labels == ("0", "1")
    assert data.validation.texts == [f"validation {i}" for i in range(6)]
    assert data.validation.labels == [0, 1, 0, 1, 0, 1]

    named = load_data(data_cfg(path, text_column="review", label_column="sentiment", labels=("1", "0")))
    assert named.validation.labels == [1, 0, 1, 0, 1, 0]
    assert preview(data_cfg(path, text_column="review", label_column="sentiment"), rows=2) == [
        {"text": "train 0", "label": "0"},
        {"text": "train 1", "label": "1"},
    ]


def test_it_splits_a_jsonl_file_without_a_split_column(tmp_path):
    records = [{"text": text, "label": label} for text, label in reviews(20, (0, 1, 2))]
    path = write_jsonl(tmp_path / "three.json", records)  # .json holding JSON lines
    data = load_data(data_cfg(path))
    assert data.labels == ("0", "1", "2")
    assert (len(data.train), len(data.validation), len(data.test)) == (48, 6, 6)
    assert_disjoint(data)
    assert all(Counter(data.split(name).labels) == {0: 2, 1: 2, 2: 2} for name in ("validation", "test"))

    array = tmp_path / "array.json"
    array.write_text(json.dumps(records))
    assert load_data(data_cfg(array)).train == data.train


def test_it_rejects_a_missing_file_and_an_unsupported_extension(tmp_path):
    field, message = load_error(data_cfg(tmp_path / "nope.csv"))
    assert field == "data.source" and "file not found" in message and "nope.csv" in message

    (tmp_path / "reviews.txt").write_text("hello\n")
    field, message = load_error(data_cfg(tmp_path / "reviews.txt"))
    assert field == "data.source" and "'.txt'" in message and ".csv" in message

    field, message = load_error(data_cfg("rotten_tomatoes"))
    assert "did you mean packaged:rotten_tomatoes" in message


def test_it_names_the_line_of_a_file_that_does_not_parse(tmp_path):
    bad_quote = tmp_path / "quote.csv"
    bad_quote.write_text('text,label\nfine,pos\n"broken"x,neg\n')
    field, message = load_error(data_cfg(bad_quote))
    assert field == "data.source" and "not valid CSV" in message and "line 3" in message

    unterminated = tmp_path / "open.csv"
    unterminated.write_text('text,label\nfine,pos\n"never closed,neg\nmore,pos\n')
    field, message = load_error(data_cfg(unterminated))
    assert field == "data.source" and "line 3" in message

    extra = write_csv(tmp_path / "extra.csv", "text,label", ["fine,pos", "one,two,three"])
    field, message = load_error(data_cfg(extra))
    assert field == "data.source" and "line 3" in message and "3 fields" in message

    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": \n')
    field, message = load_error(data_cfg(jsonl))
    assert field == "data.source" and "line 3" in message and "not valid JSON" in message

    not_object = tmp_path / "list.jsonl"
    not_object.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    field, message = load_error(data_cfg(not_object))
    assert "line 2" in message and "not a JSON object" in message


def test_it_names_a_missing_column_and_the_columns_present(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", "review,sentiment", ["good,pos", "bad,neg"])
    field, message = load_error(data_cfg(path, text_column="body", label_column="sentiment"))
    assert field == "data.text_column"
    assert "'body'" in message and "review, sentiment" in message

    field, message = load_error(data_cfg(path, text_column="review"))
    assert field == "data.label_column" and "'label'" in message and "review, sentiment" in message

    with pytest.raises(ConfigError) as info:
        load_data(data_cfg(path))
    assert [f for f, _ in info.value.errors] == ["data.text_column", "data.label_column"]

    jsonl = write_jsonl(tmp_path / "r.jsonl", [{"review": "good", "stars": 5}])
    field, message = load_error(data_cfg(jsonl, text_column="review"))
    assert field == "data.label_column" and "review, stars" in message
