"""Exactness: every loss term of a step that reads the teacher cache equals the live step's (float32 cache,
1e-5), for a student as wide as the teacher, a narrower one (projections, grouped heads), one whose head count
does not divide the teacher's (head-averaged maps), kd_logits, and a causal LM (top-k = the whole vocabulary);
and the size of the float16 difference."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from distill.config import parse_config
from distill.distiller import teacher_forward
from distill.teacher_cache import ensure
from distill.trainer import build_models, encode_split, load_task_data, task_collate, teacher_cache_plan
from tests.conftest import LABELS, _tokenizer, tiny_bert_config


@pytest.fixture(scope="module")
def sharp_teacher(tmp_path_factory):
    """The tiny BERT teacher with large random weights: peaked attention maps and logits, so the terms are
    far from 0 and a wrong head group or row would show (the default init gives near-uniform maps)."""
    from transformers import BertForSequenceClassification

    folder = tmp_path_factory.mktemp("sharp")
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {k: i for i, k in enumerate(LABELS)}}
    BertForSequenceClassification(tiny_bert_config(len(tokenizer), initializer_range=0.3, **labels)).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return str(folder)


EXACT = {"rel": 1e-5, "abs": 1e-9}


def live_and_cached(config: dict, dtype: str = "float32", rows=(5, 0, 17, 3, 11)) -> tuple[dict, dict]:
    """The unweighted terms of one batch (mixed lengths, out of split order) with the live teacher and from a
    cache the teacher built, with the same dropout."""
    config["loss"] = {**config.get("loss", {}), "teacher_cache_dtype": dtype}
    cfg = parse_config(config)
    data = load_task_data(cfg)
    m = build_models(cfg, data.labels)
    split = encode_split(cfg, data, "train", m.tokenizer)
    collate_fn = partial(task_collate(cfg), pad_token_id=m.tokenizer.pad_token_id)
    cache = ensure(teacher_cache_plan(cfg, m, split), m.teacher, split, collate_fn, batch_size=4)
    batch = collate_fn([split[i] for i in rows])
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1  # padding is exercised
    weights, d = cfg.loss_weights(), m.distiller
    torch.manual_seed(0)
    live = d(batch, teacher_forward(m.teacher, batch, d.pairs, d.attentions), weights).terms
    torch.manual_seed(0)
    cached = d(batch, cache(batch), weights).terms
    return {k: v.item() for k, v in live.items()}, {k: v.item() for k, v in cached.items()}


STUDENTS = {
    "same_width": {"layers": 2},
    "narrower_grouped_heads": {"layers": 2, "hidden_size": 16, "heads": 2, "init": "random"},
    "head_averaged": {"layers": 3, "hidden_size": 24, "heads": 3, "intermediate_size": 48, "init": "random"},
}


@pytest.mark.parametrize("student", list(STUDENTS))
def test_a_cached_kd_feature_step_has_the_live_terms(base_config, sharp_teacher, student):
    base_config["student"] = STUDENTS[student]
    base_config["teacher"]["source"] = sharp_teacher
    live, cached = live_and_cached(base_config)
    assert set(live) == {"task", "output", "feature", "attention"} == set(cached)
    assert min(live.values()) > 1e-3  # terms worth comparing
    for term in live:
        assert cached[term] == pytest.approx(live[term], **EXACT), term


def test_a_cached_kd_logits_step_has_the_live_terms(base_config, sharp_teacher):
    base_config["kind"] = "kd_logits"
    base_config["teacher"]["source"] = sharp_teacher
    live, cached = live_and_cached(base_config)
    assert set(cached) == {"task", "output"}
    for term in live:
        assert cached[term] == pytest.approx(live[term], **EXACT), term


def test_a_cached_causal_lm_step_with_the_whole_vocabulary_has_the_live_terms(lm_config):
    lm_config["student"] = {"layers": 2, "hidden_size": 32, "heads": 2, "init": "random"}
    # the tiny tokenizer's whole vocabulary; attention switched on (an LM's defaults leave it off)
    lm_config["loss"] = {"top_k": 300, "attention": 1.0}
    live, cached = live_and_cached(lm_config, rows=(2, 0, 7, 4))
    assert set(cached) == {"task", "output", "feature", "attention"}
    for term in live:
        assert cached[term] == pytest.approx(live[term], rel=1e-5, abs=1e-5), term


@pytest.mark.parametrize("student", ["same_width", "head_averaged"])
def test_a_float16_cache_moves_the_terms_by_about_1e_5(base_config, student):
    base_config["student"] = STUDENTS[student]
    live, cached = live_and_cached(base_config, "float16")
    # measured: feature terms (~0.5-10) within 1e-5 of their value, attention and output KLs within 1e-5 absolute
    for term in live:
        assert cached[term] == pytest.approx(live[term], rel=2e-5, abs=2e-5), term


def test_a_batch_of_other_examples_is_refused(base_config):
    cfg = parse_config(base_config)
    data = load_task_data(cfg)
    m = build_models(cfg, data.labels)
    split = encode_split(cfg, data, "train", m.tokenizer)
    collate_fn = partial(task_collate(cfg), pad_token_id=m.tokenizer.pad_token_id)
    cache = ensure(teacher_cache_plan(cfg, m, split), m.teacher, split, collate_fn, batch_size=16)
    other = next(j for j in range(len(split)) if len(split[j]["input_ids"]) != len(split[0]["input_ids"]))
    batch = collate_fn([split[0], split[other]])
    batch["index"] = torch.tensor([other, 0])  # ids that do not match the examples
    with pytest.raises(RuntimeError, match="does not hold this batch's examples"):
        cache(batch)
