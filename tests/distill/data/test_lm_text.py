"""Text for causal LMs: the BBC split shared with classification, .txt/.jsonl/.csv files, token windows,
next-token collation and the text preview."""

from __future__ import annotations

import json

import pytest

from distill.config import ConfigError, DataConfig
from distill.data import collate_lm, encode_lm, load_data, load_text_data, preview
from distill.losses import IGNORE_INDEX


def test_bbc_text_keeps_the_classification_split():
    cfg = DataConfig(source="packaged:bbc_news")
    text, labelled = load_text_data(cfg), load_data(cfg)
    for split in ("train", "validation", "test"):
        assert text.split(split) == labelled.split(split).texts
    assert (len(text.train), len(text.validation), len(text.test)) == (1700, 212, 213)
    assert not set(text.test) & set(text.train)
    capped = load_text_data(DataConfig(source="packaged:bbc_news", max_train_samples=50, max_eval_samples=10))
    assert len(capped.train) == 50 and set(capped.test) <= set(text.test)


def test_a_txt_file_is_documents_separated_by_blank_lines(tmp_path):
    docs = [f"document {i} first line\nand its second line" for i in range(30)]
    path = tmp_path / "notes.txt"
    path.write_text("\n\n\n".join(docs) + "\n\n")
    data = load_text_data(DataConfig(source=str(path)))
    assert sorted(data.train + data.validation + data.test) == sorted(docs)
    assert (len(data.validation), len(data.test)) == (3, 3)
    assert data.split("validation") == load_text_data(DataConfig(source=str(path))).validation  # fixed split
    assert preview(DataConfig(source=str(path)), rows=2, task="causal_lm") == [{"text": d} for d in docs[:2]]


def test_jsonl_and_csv_need_only_the_text_column(tmp_path):
    rows = [
        {"body": f"text number {i}", "split": "train" if i < 8 else ("validation" if i < 9 else "test")}
        for i in range(10)
    ]
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = load_text_data(DataConfig(source=str(path), text_column="body"))
    assert data.validation == ["text number 8"] and data.test == ["text number 9"] and len(data.train) == 8
    csv_path = tmp_path / "texts.csv"
    csv_path.write_text("body\n" + "\n".join(f"line {i}" for i in range(20)))
    assert len(load_text_data(DataConfig(source=str(csv_path), text_column="body")).train) == 16
    with pytest.raises(ConfigError) as err:
        load_text_data(DataConfig(source=str(csv_path), text_column="text"))
    assert err.value.errors[0][0] == "data.text_column"


def test_it_refuses_unusable_text_sources(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "two.txt").write_text("one\n\ntwo\n")
    for name, message in [("empty.txt", "has no text"), ("two.txt", "2 distinct texts"), ("x.parquet", "unsupported")]:
        with pytest.raises(ConfigError, match=message) as err:
            load_text_data(DataConfig(source=str(tmp_path / name)))
        assert err.value.errors[0][0] == "data.source"


def test_long_texts_become_windows_that_never_cross_a_text(lm_assets):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lm_assets["teacher"])
    texts = ["the market rose today " * 10, "news", "a"]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    windows = encode_lm(texts, tokenizer, max_length=16)
    first = [ids[0][i : i + 16] for i in range(0, len(ids[0]), 16)]
    expected = [w for w in first if len(w) >= 2] + ([ids[1]] if len(ids[1]) >= 2 else [])
    assert [w["input_ids"] for w in windows] == expected  # a one-token window predicts nothing: dropped
    assert max(len(w["input_ids"]) for w in windows) == 16 and windows.tokens == sum(map(len, expected))


def test_collate_lm_labels_are_the_inputs_with_padding_ignored():
    batch = collate_lm([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]


def test_preview_of_packaged_text_has_no_labels():
    rows = preview(DataConfig(source="packaged:bbc_news"), rows=3, task="causal_lm")
    assert len(rows) == 3 and all(set(r) == {"text"} and r["text"] for r in rows)
