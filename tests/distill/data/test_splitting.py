"""Classes and the fixed split: caps, label order, the preview, and the errors of a set that cannot be split."""

from __future__ import annotations

from distill.data import (
    PACKAGED,
    SPLITS,
    load_data,
    preview,
)
from tests.distill.data.support import data_cfg, load_error, reviews, write_csv


def test_it_caps_samples_deterministically_and_stratified():
    cfg = data_cfg("packaged:rotten_tomatoes", max_train_samples=1000, max_eval_samples=100)
    data = load_data(cfg)
    assert (len(data.train), len(data.validation), len(data.test)) == (1000, 100, 100)
    full = load_data(data_cfg("packaged:rotten_tomatoes"))
    assert set(data.train.texts) <= set(full.train.texts)
    assert abs(sum(data.train.labels) / 1000 - sum(full.train.labels) / len(full.train)) < 0.01
    assert load_data(cfg) == data


def test_it_reorders_packaged_labels_to_the_configured_order():
    data = load_data(data_cfg("packaged:rotten_tomatoes", labels=("fresh", "rotten")))
    full = load_data(data_cfg("packaged:rotten_tomatoes"))
    assert data.labels == ("fresh", "rotten")
    for name in SPLITS:  # the split follows the label names, not the class ids
        assert data.split(name).texts == full.split(name).texts
        assert data.split(name).labels == [1 - y for y in full.split(name).labels]


def test_it_previews_the_first_rows_cheaply():
    rows = preview(data_cfg("packaged:rotten_tomatoes"), rows=3)
    assert len(rows) == 3
    assert all(set(row) == {"text", "label"} and row["label"] in ("rotten", "fresh") for row in rows)
    assert preview(data_cfg("packaged:bbc_news"), rows=0) == []
    assert set(PACKAGED) == {"rotten_tomatoes", "bbc_news"}


def test_it_says_which_split_is_empty(tmp_path):
    rows = [f"t{i},{'ab'[i % 2]},{'train' if i < 8 else 'test'}" for i in range(12)]
    path = write_csv(tmp_path / "nosplit.csv", "text,label,split", rows)
    field, message = load_error(data_cfg(path))
    assert field == "data.source" and "validation split" in message and "is empty" in message

    bad = write_csv(tmp_path / "dev.csv", "text,label,split", ["a,x,train", "b,y,dev"])
    field, message = load_error(data_cfg(bad))
    assert field == "data.source" and "'dev'" in message and "line 3" in message


def test_it_rejects_labels_outside_data_labels_and_unseen_in_train(tmp_path):
    rows = [f"{text},{label}" for text, label in reviews()] + ["meh,neutral"]
    path = write_csv(tmp_path / "three.csv", "text,label", rows)
    field, message = load_error(data_cfg(path, labels=("neg", "pos")))
    assert field == "data.labels"
    assert "'neutral'" in message and "line 42" in message and "neg, pos" in message

    rows = [f"tr{i},{'ab'[i % 2]},train" for i in range(6)] + ["v,a,validation", "t1,a,test", "t2,c,test"]
    path = write_csv(tmp_path / "unseen.csv", "text,label,split", rows)
    field, message = load_error(data_cfg(path))
    assert field == "data.label_column"
    assert "'c'" in message and "line 10" in message and "never appears in train" in message

    field, message = load_error(data_cfg("packaged:rotten_tomatoes", labels=("rotten", "meh")))
    assert field == "data.labels" and "'fresh'" in message and "packaged:rotten_tomatoes" in message


def test_it_needs_two_classes_and_usable_rows(tmp_path):
    one = write_csv(tmp_path / "one.csv", "text,label", [f"t{i},pos" for i in range(30)])
    field, message = load_error(data_cfg(one))
    assert field == "data.label_column" and "'pos'" in message and "at least 2 classes" in message

    field, message = load_error(data_cfg(one, labels=("pos",)))
    assert field == "data.labels" and "at least 2" in message

    empty = write_csv(tmp_path / "empty.csv", "text,label", ['"",pos', "  ,neg"])
    field, message = load_error(data_cfg(empty))
    assert field == "data.source" and "no usable rows" in message and "'text'" in message

    header_only = write_csv(tmp_path / "header.csv", "text,label", [])
    field, message = load_error(data_cfg(header_only))
    assert field == "data.source" and "no data rows" in message

    no_label = write_csv(tmp_path / "nolabel.csv", "text,label", ["a,pos", "b,"])
    field, message = load_error(data_cfg(no_label))
    assert field == "data.label_column" and "line 3" in message and "empty label" in message


def test_it_says_when_a_file_is_too_small_to_split(tmp_path):
    rows = [f"{text},{label}" for text, label in reviews()] + ["lonely,rare"]
    path = write_csv(tmp_path / "tiny.csv", "text,label", rows)
    field, message = load_error(data_cfg(path))
    assert field == "data.source" and "too small" in message and "'rare'" in message
