"""The causal-LM loss terms against naive full-logits references: the fused chunked LM head (values and
gradients, padding, temperature, uneven chunks), and the feature and attention terms on a Llama with
grouped-query attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.losses import (
    IGNORE_INDEX,
    attention_loss,
    lm_head_losses,
    lm_nll_sum,
    next_token_targets,
)

B, L, D_S, D_T, V = 3, 9, 8, 12, 37


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
    hidden = torch.randn(B, L, D_S, dtype=torch.float64, requires_grad=True)
    teacher_hidden = torch.randn(B, L, D_T, dtype=torch.float64)
    head = nn.Linear(D_S, V, bias=True, dtype=torch.float64)
    teacher_head = nn.Linear(D_T, V, bias=False, dtype=torch.float64)
    labels = torch.randint(V, (B, L))
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


# --- on a tiny Llama with grouped-query attention -----------------------------------------------------


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
        "loss": {"temperature": 2.0},
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
