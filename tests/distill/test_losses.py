"""Each loss term against an independent reference, padding invariance, gradients and head mapping; for causal
LMs the fused chunked LM head (values and gradients, padding, temperature, uneven chunks) against naive full
logits, and the feature and attention terms on a Llama with grouped-query attention."""

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
    IGNORE_INDEX,
    LossOutput,
    attention_kl,
    attention_loss,
    attention_mse,
    combine,
    feature_cosine,
    feature_loss,
    feature_mse,
    group_teacher_heads,
    lm_head_losses,
    lm_nll_sum,
    masked_mean,
    next_token_targets,
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


LM_B, LM_L, D_S, D_T, V = 3, 9, 8, 12, 37  # the causal-LM tests' batch, length, widths and vocabulary


def reference(hidden, head, labels, teacher_hidden, teacher_head, temperature, weights):
    """The plain way: full (B, L, V) logits, F.cross_entropy and F.kl_div over the real next tokens."""
    logits = head(hidden)[:, :-1]
    targets = labels[:, 1:]
    task = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    real = targets != IGNORE_INDEX
    t_logits = teacher_head(teacher_hidden)[:, :-1][real]
    log_p_s = F.log_softmax(logits[real] / temperature, -1)
    log_p_t = F.log_softmax(t_logits / temperature, -1)
    output = temperature**2 * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    return weights[0] * task + weights[1] * output, task, output


@pytest.fixture
def tensors():
    torch.manual_seed(0)
    hidden = torch.randn(LM_B, LM_L, D_S, dtype=torch.float64, requires_grad=True)
    teacher_hidden = torch.randn(LM_B, LM_L, D_T, dtype=torch.float64)
    head = nn.Linear(D_S, V, bias=True, dtype=torch.float64)
    teacher_head = nn.Linear(D_T, V, bias=False, dtype=torch.float64)
    labels = torch.randint(V, (LM_B, LM_L))
    labels[1, 5:] = IGNORE_INDEX  # right padding of different lengths
    labels[2, 8:] = IGNORE_INDEX
    return hidden, head, labels, teacher_hidden, teacher_head


def fused(hidden, head, labels, teacher_hidden, teacher_head, temperature, weights, chunk_rows):
    keep, targets = next_token_targets(labels)
    t = teacher_hidden[:, :-1][keep] if teacher_hidden is not None else None
    return lm_head_losses(hidden[:, :-1][keep], head, targets, weights, t, teacher_head, temperature, chunk_rows)


@pytest.mark.parametrize("chunk_rows", [1, 4, 5, 1000])  # 19 real positions: uneven chunks and a single one
@pytest.mark.parametrize(("temperature", "weights"), [(1.0, (1.0, 1.0)), (2.0, (0.7, 1.3)), (3.5, (0.0, 2.0))])
def test_fused_lm_head_matches_full_logits(tensors, chunk_rows, temperature, weights):
    hidden, head, labels, teacher_hidden, teacher_head = tensors
    out = fused(hidden, head, labels, teacher_hidden, teacher_head, temperature, weights, chunk_rows)
    total, task, output = reference(hidden, head, labels, teacher_hidden, teacher_head, temperature, weights)
    assert out.task.item() == pytest.approx(task.item(), rel=1e-6)
    assert out.output.item() == pytest.approx(output.item(), rel=1e-5)
    assert out.weighted.item() == pytest.approx(total.item(), rel=1e-5)
    params = [hidden, head.weight, head.bias]
    got = torch.autograd.grad(out.weighted, params)
    want = torch.autograd.grad(total, params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    # padded positions get no gradient at all
    assert not got[0][1, 5:].any() and not got[0][2, 8:].any()


def test_fused_lm_head_scales_its_gradient_by_the_incoming_one(tensors):
    hidden, head, labels, teacher_hidden, teacher_head = tensors
    out = fused(hidden, head, labels, teacher_hidden, teacher_head, 2.0, (1.0, 0.5), 4)
    once = torch.autograd.grad(out.weighted, [hidden, head.weight], retain_graph=True)
    scaled = torch.autograd.grad(out.weighted * 0.25, [hidden, head.weight])  # e.g. gradient accumulation
    for a, b in zip(once, scaled, strict=True):
        torch.testing.assert_close(b, 0.25 * a)


def test_without_a_teacher_it_is_next_token_cross_entropy(tensors):
    hidden, head, labels, *_ = tensors
    out = fused(hidden, head, labels, None, None, 2.0, (1.0, 1.0), 3)
    logits = head(hidden)[:, :-1]
    task = F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
    assert out.output.item() == 0.0 and out.task.item() == pytest.approx(task.item(), rel=1e-6)
    torch.testing.assert_close(torch.autograd.grad(out.weighted, hidden)[0], torch.autograd.grad(task, hidden)[0])


def test_it_handles_a_batch_without_a_real_next_token(tensors):
    hidden, head, labels, teacher_hidden, teacher_head = tensors
    labels[:, 1:] = IGNORE_INDEX
    out = fused(hidden, head, labels, teacher_hidden, teacher_head, 2.0, (1.0, 1.0), 4)
    assert out.task.item() == out.output.item() == 0.0
    assert not torch.autograd.grad(out.weighted, hidden)[0].any()


def test_it_computes_a_bfloat16_teacher_head_in_bfloat16(tensors):
    hidden, head, labels, teacher_hidden, teacher_head = tensors
    exact = fused(hidden, head, labels, teacher_hidden, teacher_head, 2.0, (1.0, 1.0), 4)
    half = fused(hidden, head, labels, teacher_hidden.bfloat16(), teacher_head.bfloat16(), 2.0, (1.0, 1.0), 4)
    assert half.output.item() == pytest.approx(exact.output.item(), rel=0.05)


def test_next_token_targets_shift_and_skip_padding():
    labels = torch.tensor([[5, 6, 7, 8], [1, 2, IGNORE_INDEX, IGNORE_INDEX]])
    keep, targets = next_token_targets(labels)
    assert keep.tolist() == [[True, True, True], [True, False, False]]
    assert targets.tolist() == [6, 7, 8, 2]


def test_nll_sum_is_the_summed_cross_entropy(tensors):
    hidden, head, labels, *_ = tensors
    keep, targets = next_token_targets(labels)
    want = F.cross_entropy(head(hidden)[:, :-1][keep], targets, reduction="sum")
    assert lm_nll_sum(hidden[:, :-1][keep], head, targets, chunk_rows=2).item() == pytest.approx(want.item(), rel=1e-6)


@pytest.fixture
def llama_pair(lm_assets):
    from distill.config import parse_config
    from distill.trainer import build_models

    cfg = {
        "kind": "kd_feature",
        "task": "causal_lm",
        "teacher": {"source": str(lm_assets["teacher"])},
        "student": {"layers": 2, "hidden_size": 32, "heads": 2, "init": "random"},
        "data": {"source": str(lm_assets["corpus"]), "max_length": 16},
        "loss": {"temperature": 2.0, "attention": 1.0},  # on: an LM's defaults leave the attention term off
    }
    return build_models(parse_config(cfg), ())


def batch(tokenizer):
    from distill.data import collate_lm

    texts = ["the market rose today and shares fell", "news"]
    return collate_lm([{"input_ids": tokenizer(t)["input_ids"]} for t in texts], tokenizer.pad_token_id)


def test_llama_gqa_attention_maps_have_the_query_heads_and_a_finite_kl(llama_pair):
    from distill.distiller import teacher_forward

    m = llama_pair
    b = batch(m.tokenizer)
    assert b["attention_mask"][1].sum() < b["attention_mask"].shape[1]  # the second row is padded
    t_out = teacher_forward(m.teacher, b, m.distiller.pairs, attentions=True)
    assert m.teacher.config.num_key_value_heads == 2
    for att in t_out.attentions.values():
        assert att.shape == (2, 4, b["input_ids"].shape[1], b["input_ids"].shape[1])  # 4 query heads, not 2
        assert torch.triu(att[0], diagonal=1).abs().max() == 0  # causal
    loss = m.distiller(b, t_out, {"task": 1.0, "output": 1.0, "feature": 1.0, "attention": 1.0})
    assert set(loss.terms) == {"task", "output", "feature", "attention"}
    assert all(torch.isfinite(v) for v in loss.terms.values())
    loss.total.backward()
    grads = [p.grad for p in m.distiller.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # padding changes nothing: the padded row alone gives the same attention term as within the batch
    student_maps = {}
    from distill.features import tap

    with tap(m.distiller.student, attentions=[2]) as taps:
        m.distiller.student(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        student_maps = dict(taps.attentions)
    n = int(b["attention_mask"][1].sum())
    padded = attention_loss(student_maps[2][1:], t_out.attentions[4][1:], b["attention_mask"][1:])
    alone = attention_loss(student_maps[2][1:, :, :n, :n], t_out.attentions[4][1:, :, :n, :n], None)
    assert padded.item() == pytest.approx(alone.item(), rel=1e-5)


def test_the_distiller_lm_terms_equal_the_full_logits_reference(llama_pair):
    from distill.distiller import teacher_forward

    m = llama_pair
    b = batch(m.tokenizer)
    t_out = teacher_forward(m.teacher, b, (), attentions=False)
    weights = {"task": 0.5, "output": 2.0, "feature": 0.0, "attention": 0.0}
    m.distiller.pairs = ()
    loss = m.distiller(b, t_out, weights)
    s_logits = m.distiller.student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    with torch.no_grad():
        t_logits = m.teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    targets = b["labels"][:, 1:]
    real = targets != IGNORE_INDEX
    task = F.cross_entropy(s_logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    output = 4.0 * F.kl_div(
        F.log_softmax(s_logits[:, :-1][real] / 2, -1),
        F.log_softmax(t_logits[:, :-1][real] / 2, -1),
        log_target=True,
        reduction="batchmean",
    )
    assert loss.terms["task"].item() == pytest.approx(task.item(), rel=1e-5)
    assert loss.terms["output"].item() == pytest.approx(output.item(), rel=1e-5)
    assert loss.total.item() == pytest.approx((0.5 * task + 2.0 * output).item(), rel=1e-5)
    # the student's head is tied to its embeddings: both uses reach the one weight
    student = m.distiller.student
    assert student.get_output_embeddings().weight is student.get_input_embeddings().weight
    got = torch.autograd.grad(loss.total, student.get_input_embeddings().weight)[0]
    want = torch.autograd.grad(0.5 * task + 2.0 * output, student.get_input_embeddings().weight)[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
