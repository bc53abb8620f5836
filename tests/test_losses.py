"""Each loss term against an independent reference, padding invariance, gradients and head mapping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from distill.losses import (
    ATTENTION_LOSSES,
    FEATURE_LOSSES,
    LossOutput,
    attention_kl,
    attention_loss,
    attention_mse,
    combine,
    feature_cosine,
    feature_loss,
    feature_mse,
    group_teacher_heads,
    masked_mean,
    output_kl,
    task_loss,
)

B, H, L, D = 2, 3, 6, 8
LENGTHS = [6, 4]  # the second sequence ends in two padded positions


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def token_mask(lengths: list[int], length: int) -> Tensor:
    return (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()


def attention_probs(batch: int, heads: int, length: int, lengths: list[int] | None = None) -> Tensor:
    """Attention as a model makes it: softmax of random scores with -inf on padded keys."""
    scores = torch.randn(batch, heads, length, length)
    if lengths is not None:
        padded_keys = token_mask(lengths, length) == 0
        scores = scores.masked_fill(padded_keys[:, None, None, :], float("-inf"))
    return scores.softmax(-1)


def pad_tokens(x: Tensor, extra: int) -> Tensor:
    """Append ``extra`` positions of large garbage along dim 1."""
    garbage = 10 * torch.randn(x.shape[0], extra, *x.shape[2:])
    return torch.cat([x, garbage], dim=1)


def pad_attention(a: Tensor, extra: int) -> Tensor:
    """Grow (B, h, n, n) to (B, h, n+extra, n+extra): garbage everywhere but real queries x real keys."""
    b, h, n, _ = a.shape
    out = 3 * torch.rand(b, h, n + extra, n + extra)
    out[:, :, :n, :n] = a  # real rows still sum to 1 over the real keys
    return out


def ref_attention_kl(student: Tensor, teacher: Tensor, lengths: list[int]) -> Tensor:
    rows = []
    for b, n in enumerate(lengths):
        s, t = student[b, :, :n, :n], teacher[b, :, :n, :n]
        rows.append(F.kl_div(s.log(), t, reduction="none").sum(-1).mean(0))  # (n,) per real query
    return torch.cat(rows).mean()


def ref_attention_mse(student: Tensor, teacher: Tensor, lengths: list[int]) -> Tensor:
    rows = []
    for b, n in enumerate(lengths):
        s, t = student[b, :, :n, :n], teacher[b, :, :n, :n]
        per_row = torch.stack([F.mse_loss(s[:, q], t[:, q], reduction="none").mean(-1) for q in range(n)], 1)
        rows.append(per_row.mean(0))
    return torch.cat(rows).mean()


REF_ATTENTION = {"kl": ref_attention_kl, "mse": ref_attention_mse}


# --- masked_mean and task ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bool, torch.long, torch.float32])
def test_it_masked_mean_averages_real_tokens_only(dtype: torch.dtype) -> None:
    values = torch.randn(B, L)
    mask = token_mask(LENGTHS, L)
    assert_close(masked_mean(values, mask.to(dtype)), values[mask.bool()].mean())
    assert_close(masked_mean(values, None), values.mean())


def test_it_masked_mean_ignores_nonfinite_padding() -> None:
    values = torch.randn(B, L)
    mask = token_mask(LENGTHS, L)
    values[1, 5] = float("nan")
    values[1, 4] = float("inf")
    assert_close(masked_mean(values, mask), values[mask.bool()].mean())


def test_it_task_loss_is_cross_entropy_or_mse() -> None:
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    expected = -sum(logits[i].log_softmax(-1)[labels[i]] for i in range(4)) / 4
    assert_close(task_loss(logits, labels), expected)

    preds, targets = torch.randn(4, 1), torch.tensor([0.5, -1.0, 2.0, 0.0])
    expected = sum((preds[i, 0] - targets[i]) ** 2 for i in range(4)) / 4
    assert_close(task_loss(preds, targets, regression=True), expected)


# --- output ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.5])
def test_it_output_kl_matches_kl_div_batchmean(temperature: float) -> None:
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    expected = temperature**2 * F.kl_div(
        F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1), reduction="batchmean"
    )
    assert_close(output_kl(s, t, temperature), expected)


def test_it_output_kl_for_language_models_averages_real_tokens() -> None:
    temperature, vocab = 2.0, 7
    s, t = torch.randn(B, L, vocab), torch.randn(B, L, vocab)
    per_token = [
        F.kl_div(F.log_softmax(s[b, i] / temperature, -1), F.softmax(t[b, i] / temperature, -1), reduction="sum")
        for b, n in enumerate(LENGTHS)
        for i in range(n)
    ]
    expected = temperature**2 * torch.stack(per_token).mean()
    assert_close(output_kl(s, t, temperature, token_mask(LENGTHS, L)), expected)


def test_it_output_kl_is_zero_when_student_equals_teacher() -> None:
    logits = torch.randn(4, 5)
    assert_close(output_kl(logits, logits.clone(), 3.0), torch.tensor(0.0))
    lm = torch.randn(B, L, 7)
    assert_close(output_kl(lm, lm.clone(), 2.0, token_mask(LENGTHS, L)), torch.tensor(0.0))


# --- features --------------------------------------------------------------------------------------


def test_it_feature_terms_match_references_on_real_tokens() -> None:
    s, t = torch.randn(B, L, D), torch.randn(B, L, D)
    mask = token_mask(LENGTHS, L)
    real = mask.bool()
    assert_close(feature_mse(s, t, mask), F.mse_loss(s[real], t[real]))
    assert_close(feature_cosine(s, t, mask), (1 - F.cosine_similarity(s[real], t[real], dim=-1)).mean())
    assert_close(feature_mse(s, s.clone(), mask), torch.tensor(0.0))
    assert_close(feature_cosine(s, 2 * s, mask), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_it_feature_loss_projects_then_applies_the_variant() -> None:
    s, t = torch.randn(B, L, 5), torch.randn(B, L, D)
    mask = token_mask(LENGTHS, L)
    projection = nn.Linear(5, D)
    with torch.no_grad():
        projected = s @ projection.weight.T + projection.bias
        for name, fn in FEATURE_LOSSES.items():
            assert_close(feature_loss(s, t, mask, projection, name), fn(projected, t, mask))
        assert_close(feature_loss(t, t, mask, None), torch.tensor(0.0))
    with pytest.raises(ValueError, match="unknown feature variant"):
        feature_loss(t, t, mask, None, "l1")


# --- attention -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["kl", "mse"])
def test_it_attention_terms_match_loop_references(variant: str) -> None:
    s, t = attention_probs(B, H, L, LENGTHS), attention_probs(B, H, L, LENGTHS)
    mask = token_mask(LENGTHS, L)
    assert_close(ATTENTION_LOSSES[variant](s, t, mask), REF_ATTENTION[variant](s, t, LENGTHS))
    s_full, t_full = attention_probs(B, H, L), attention_probs(B, H, L)
    assert_close(ATTENTION_LOSSES[variant](s_full, t_full, None), REF_ATTENTION[variant](s_full, t_full, [L] * B))
    assert_close(ATTENTION_LOSSES[variant](t, t.clone(), mask), torch.tensor(0.0))


def test_it_attention_kl_is_finite_when_probabilities_are_zero() -> None:
    t = torch.zeros(1, 1, 2, 2)
    t[..., 0] = 1.0  # one-hot teacher rows: 0 * log 0 terms
    s = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])  # the student puts exactly zero on a key too
    loss = attention_kl(s, t, None)
    assert torch.isfinite(loss)
    assert_close(loss, torch.tensor(0.5 * math.log(2.0)))  # row 0 matches; row 1 is KL = log 2


# --- padding changes nothing -----------------------------------------------------------------------


def test_it_padding_changes_no_term() -> None:
    n, extra = 4, 3
    real, padded = torch.ones(B, n), token_mask([n] * B, n + extra)

    s_logits, t_logits = torch.randn(B, n, 7), torch.randn(B, n, 7)
    assert_close(
        output_kl(pad_tokens(s_logits, extra), pad_tokens(t_logits, extra), 2.0, padded),
        output_kl(s_logits, t_logits, 2.0, real),
    )

    s_h, t_h = torch.randn(B, n, D), torch.randn(B, n, D)
    for fn in FEATURE_LOSSES.values():
        assert_close(fn(pad_tokens(s_h, extra), pad_tokens(t_h, extra), padded), fn(s_h, t_h, None))

    s_att, t_att = attention_probs(B, H, n), attention_probs(B, H, n)
    for fn in ATTENTION_LOSSES.values():
        assert_close(fn(pad_attention(s_att, extra), pad_attention(t_att, extra), padded), fn(s_att, t_att, None))


def test_it_padding_from_masked_scores_changes_no_attention_term() -> None:
    # the model's way: -inf scores on padded keys, so padded keys get probability 0
    n, extra = 4, 2
    scores_s, scores_t = torch.randn(B, H, n + extra, n + extra), torch.randn(B, H, n + extra, n + extra)
    padded = token_mask([n] * B, n + extra)
    keys = (padded == 0)[:, None, None, :]
    s = scores_s.masked_fill(keys, float("-inf")).softmax(-1)
    t = scores_t.masked_fill(keys, float("-inf")).softmax(-1)
    s_real = scores_s[..., :n, :n].softmax(-1)
    t_real = scores_t[..., :n, :n].softmax(-1)
    for fn in ATTENTION_LOSSES.values():
        assert_close(fn(s, t, padded), fn(s_real, t_real, None))


# --- gradients and inference-mode teachers ---------------------------------------------------------


def test_it_gradients_reach_projection_and_student_with_inference_teacher() -> None:
    mask = token_mask(LENGTHS, L)
    with torch.inference_mode():
        t_h = torch.randn(B, L, D)
        t_att = attention_probs(B, 12, L, LENGTHS)
        t_logits = torch.randn(B, L, 7)
        inference_mask = token_mask(LENGTHS, L)
    assert t_h.is_inference() and t_att.is_inference() and inference_mask.is_inference()

    projection = nn.Linear(5, D)
    s_h = torch.randn(B, L, 5, requires_grad=True)
    s_att = attention_probs(B, 4, L).requires_grad_()  # padded keys hold probability too: must not matter
    s_logits = torch.randn(B, L, 7, requires_grad=True)

    for feature_variant in FEATURE_LOSSES:
        for attention_variant in ATTENTION_LOSSES:
            for head_mapping in ("group", "mean"):
                projection.zero_grad()
                s_h.grad = s_att.grad = s_logits.grad = None
                terms = {
                    "feature": feature_loss(s_h, t_h, mask, projection, feature_variant),
                    "attention": attention_loss(s_att, t_att, inference_mask, attention_variant, head_mapping),
                    "output": output_kl(s_logits, t_logits, 2.0, mask),
                }
                combine(terms, {"feature": 1.0, "attention": 1.0, "output": 1.0}).total.backward()
                assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
                assert s_h.grad is not None and s_logits.grad is not None and s_att.grad is not None
                for grad in (s_h.grad, s_logits.grad, s_att.grad):
                    assert torch.isfinite(grad).all() and grad[0].abs().sum() > 0
                # padded positions (queries and keys of the second sequence) get no gradient
                assert s_h.grad[1, 4:].abs().sum() == 0 and s_logits.grad[1, 4:].abs().sum() == 0
                assert s_att.grad[1, :, 4:].abs().sum() == 0 and s_att.grad[1, :, :, 4:].abs().sum() == 0


def test_it_task_loss_backpropagates() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    task_loss(logits, torch.tensor([0, 1, 2, 0])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# --- head mapping ----------------------------------------------------------------------------------


def test_it_groups_twelve_teacher_heads_into_four() -> None:
    t = attention_probs(B, 12, L, LENGTHS)
    grouped, average_student = group_teacher_heads(t, 4, "group")
    expected = torch.zeros(B, 4, L, L)
    for j in range(4):
        for k in range(3):
            expected[:, j] += t[:, 3 * j + k] / 3
    assert not average_student
    assert_close(grouped, expected)

    s = attention_probs(B, 4, L, LENGTHS)
    for variant, reference in REF_ATTENTION.items():
        assert_close(attention_loss(s, t, token_mask(LENGTHS, L), variant, "group"), reference(s, expected, LENGTHS))


@pytest.mark.parametrize(("student_heads", "head_mapping"), [(5, "group"), (4, "mean"), (12, "mean")])
def test_it_compares_head_averaged_maps_when_not_grouping(student_heads: int, head_mapping: str) -> None:
    t = attention_probs(B, 12, L, LENGTHS)
    s = attention_probs(B, student_heads, L, LENGTHS)
    averaged, average_student = group_teacher_heads(t, student_heads, head_mapping)
    assert average_student and averaged.shape == (B, 1, L, L)
    s_mean, t_mean = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    for variant, reference in REF_ATTENTION.items():
        assert_close(
            attention_loss(s, t, token_mask(LENGTHS, L), variant, head_mapping),
            reference(s_mean, t_mean, LENGTHS),
        )


def test_it_keeps_equal_head_counts_and_rejects_unknown_names() -> None:
    t = attention_probs(B, H, L)
    same, average_student = group_teacher_heads(t, H, "group")
    assert same is t and not average_student
    with pytest.raises(ValueError, match="unknown head mapping"):
        group_teacher_heads(t, H, "first")
    with pytest.raises(ValueError, match="unknown attention variant"):
        attention_loss(t, t, None, "js")
    assert attention_mse is ATTENTION_LOSSES["mse"] and attention_kl is ATTENTION_LOSSES["kl"]


# --- combine ---------------------------------------------------------------------------------------


def test_it_combines_weighted_terms_and_keeps_them_unweighted() -> None:
    terms = {"task": torch.tensor(1.5), "output": torch.tensor(2.0), "feature": torch.tensor(3.0)}
    out = combine(terms, {"task": 1.0, "output": 0.5, "feature": 0.0, "attention": 2.0})
    assert isinstance(out, LossOutput)
    assert_close(out.total, torch.tensor(1.5 + 0.5 * 2.0))
    assert out.terms.keys() == terms.keys()
    for name, value in terms.items():
        assert_close(out.terms[name], value)


def test_it_combine_with_nothing_contributing_is_a_zero_like_the_terms() -> None:
    terms = {"task": torch.tensor(1.5, dtype=torch.float64)}
    out = combine(terms, {"task": 0.0, "output": 1.0})
    assert out.total.item() == 0.0 and out.total.dtype == torch.float64
    assert out.terms == terms
    assert combine({}, {"task": 1.0}).total.item() == 0.0


def test_it_combine_total_backpropagates_to_each_weighted_term() -> None:
    x = torch.tensor(2.0, requires_grad=True)
    y = torch.tensor(3.0, requires_grad=True)
    combine({"task": x * x, "feature": y}, {"task": 0.5, "feature": 3.0}).total.backward()
    assert_close(x.grad, torch.tensor(2.0))
    assert_close(y.grad, torch.tensor(3.0))
