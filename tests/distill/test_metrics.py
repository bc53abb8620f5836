"""Task and efficiency metrics against hand-computed values and tiny real transformers models."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from distill.metrics import (
    Latency,
    classification_metrics,
    compression,
    count_parameters,
    efficiency_report,
    evaluate_classifier,
    measure_latency,
    predict,
    regression_metrics,
    retention,
    speedup,
    weights_bytes,
)

VOCAB = 100


def _tiny_config(num_labels: int = 3) -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
    )


@pytest.fixture(scope="module")
def tiny_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(_tiny_config())


def _batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for size in (3, 2):
        mask = torch.ones(size, 6, dtype=torch.long)
        mask[0, 4:] = 0  # one padded row, so the mask is actually passed through
        out.append(
            {
                "input_ids": torch.randint(VOCAB, (size, 6), generator=g),
                "attention_mask": mask,
                "labels": torch.randint(3, (size,), generator=g),
            }
        )
    return out


# --- task metrics -------------------------------------------------------------------------------------


def test_it_scores_perfect_predictions_as_one():
    for labels, n in (([0, 1, 1, 0], 2), ([0, 1, 2, 2, 1], 3)):
        assert classification_metrics(labels, labels, n) == {"accuracy": 1.0, "f1": 1.0, "mcc": 1.0}


def test_it_scores_a_binary_confusion_matrix():
    # TP=3, FN=1, FP=1, TN=5
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    preds = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    m = classification_metrics(preds, labels, num_labels=2)
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["f1"] == pytest.approx(0.75)  # P = R = 3/4 for class 1 (macro would be 0.7917)
    assert m["mcc"] == pytest.approx((3 * 5 - 1 * 1) / math.sqrt(4 * 4 * 6 * 6))
    assert all(type(v) is float for v in m.values())


def test_it_scores_a_three_class_confusion_matrix():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(preds, labels, num_labels=3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class F1: 0 -> P 1/2 R 1/2; 1 -> P 2/3 R 1; 2 -> P 1 R 1/2
    assert m["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # multiclass MCC: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), p = (2,3,1), t = (2,2,2)
    assert m["mcc"] == pytest.approx((4 * 6 - 12) / math.sqrt((36 - 14) * (36 - 12)))


def test_it_rejects_mismatched_predictions():
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0, 1, 1], 2)


def test_it_computes_regression_correlations():
    m = regression_metrics([1, 2, 3, 4, 5], [1, 4, 9, 16, 25])
    # dx = (-2..2), dy = (-10, -7, -2, 5, 14): cov 60, sxx 10, syy 374
    assert m["pearson"] == pytest.approx(60 / math.sqrt(10 * 374))
    assert m["spearman"] == pytest.approx(1.0)  # monotone
    assert regression_metrics([1, 2, 3], [1, 3, 2]) == pytest.approx({"pearson": 0.5, "spearman": 0.5})


# --- parameters and size ------------------------------------------------------------------------------


def test_it_counts_a_transformers_model_like_torch(tiny_model):
    assert count_parameters(tiny_model) == sum(p.numel() for p in tiny_model.parameters())


def test_it_counts_tied_transformers_weights_once():
    model = BertForMaskedLM(_tiny_config())
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_it_excludes_projections(tiny_model):
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student = tiny_model
            self.projections = nn.ModuleDict({"1": nn.Linear(16, 32), "2": nn.Linear(16, 32)})

    wrapper = Wrapper()
    student = sum(p.numel() for p in tiny_model.parameters())
    assert count_parameters(wrapper) == student
    assert count_parameters(wrapper, exclude_prefixes=()) == student + 2 * (16 * 32 + 32)


def test_it_counts_shared_storage_once():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = self.a  # the same module twice
            self.c = nn.Linear(4, 4, bias=False)
            self.c.weight = nn.Parameter(self.a.weight.detach())  # another Parameter over a's storage

    assert count_parameters(Shared()) == 4 * 4 + 4


def test_it_sums_safetensors_bytes(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert weights_bytes(tmp_path) == os.path.getsize(tmp_path / "model.safetensors") > 0
    with pytest.raises(FileNotFoundError):
        weights_bytes(tmp_path / "missing")


# --- prediction ---------------------------------------------------------------------------------------


def test_it_predicts_and_evaluates(tiny_model):
    batches = _batches()
    tiny_model.train()
    logits, labels = predict(tiny_model, batches)
    assert tiny_model.training
    assert logits.shape == (5, 3) and logits.dtype == np.float32
    assert labels.shape == (5,)
    np.testing.assert_array_equal(labels, torch.cat([b["labels"] for b in batches]).numpy())

    tiny_model.eval()
    with torch.no_grad():
        expected = torch.cat(
            [tiny_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits for b in batches]
        )
    tiny_model.train()
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-6)

    m = evaluate_classifier(tiny_model, batches, num_labels=3)
    assert tiny_model.training
    assert m["accuracy"] == pytest.approx(float((expected.argmax(-1).numpy() == labels).mean()))
    assert m["loss"] == pytest.approx(float(F.cross_entropy(expected, torch.from_numpy(labels))), rel=1e-5)
    assert set(m) == {"accuracy", "f1", "mcc", "loss"}


def test_it_rejects_an_empty_loader(tiny_model):
    with pytest.raises(ValueError):
        predict(tiny_model, [])


# --- latency ------------------------------------------------------------------------------------------


def test_it_measures_latency_and_restores_state(tiny_model):
    previous = torch.get_num_threads()
    threads = 1 if previous != 1 else 2
    tiny_model.train()
    lat = measure_latency(tiny_model, batch_size=2, seq_len=8, vocab_size=VOCAB, repeats=3, warmup=1, threads=threads)
    assert isinstance(lat, Latency)
    assert (lat.batch_size, lat.seq_len, lat.threads) == (2, 8, threads)
    assert lat.median_ms > 0 and lat.p90_ms >= lat.median_ms and lat.throughput > 0
    assert math.isclose(lat.throughput, 2 / (lat.median_ms / 1000))
    assert torch.get_num_threads() == previous
    assert tiny_model.training
    assert lat.as_dict()["median_ms"] == lat.median_ms


def test_it_reports_efficiency(tiny_model):
    report = efficiency_report(tiny_model, vocab_size=VOCAB, seq_len=8, batch_sizes=(1, 4), repeats=2)
    assert report["params"] == count_parameters(tiny_model)
    assert set(report["latency"]) == {"bs1", "bs4"}
    assert report["latency"]["bs4"]["batch_size"] == 4
    assert report["latency"]["bs1"]["threads"] == torch.get_num_threads()


# --- ratios -------------------------------------------------------------------------------------------


def test_it_computes_ratios():
    assert retention(0.85, 0.9) == pytest.approx(0.85 / 0.9)
    assert compression(110_000_000, 22_000_000) == pytest.approx(5.0)
    assert speedup(40.0, 10.0) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        retention(0.5, 0.0)
    with pytest.raises(ValueError):
        compression(100, 0)
    with pytest.raises(ValueError):
        speedup(1.0, 0.0)
