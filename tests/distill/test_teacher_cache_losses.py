"""The output term from a cached causal-LM teacher: the KL over its top-k tokens and one bucket for the rest,
in the fused chunked LM head, against the full KL (k = V) and against the coarsened distributions written out
with autograd (k < V)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from distill.losses import TopK, bucket_targets, lm_head_losses, top_k

N, D, V, T = 10, 8, 24, 2.0


@pytest.fixture
def lm():
    g = torch.Generator().manual_seed(0)
    head, teacher_head = nn.Linear(D, V), nn.Linear(D + 4, V)
    with torch.no_grad():
        for p in [*head.parameters(), *teacher_head.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g))
    hidden = torch.randn(N, D, generator=g, requires_grad=True)
    teacher_hidden = torch.randn(N, D + 4, generator=g)
    targets = torch.randint(0, V, (N,), generator=g)
    return hidden, head, teacher_hidden, teacher_head, targets


def _grads(loss, hidden, head):
    hidden.grad = head.weight.grad = head.bias.grad = None
    loss.backward()
    return hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()


@pytest.mark.parametrize("chunk_rows", [None, 3])
def test_top_k_of_the_whole_vocabulary_is_the_full_kl(lm, chunk_rows):
    hidden, head, teacher_hidden, teacher_head, targets = lm
    full = lm_head_losses(hidden, head, targets, (0.5, 1.5), teacher_hidden, teacher_head, T, chunk_rows)
    full_grads = _grads(full.weighted, hidden, head)
    cached = top_k(teacher_head(teacher_hidden), V, T)
    assert torch.all(cached.rest == 0)  # nothing left over
    sparse = lm_head_losses(hidden, head, targets, (0.5, 1.5), None, None, T, chunk_rows, teacher_topk=cached)
    assert_close(sparse.output, full.output, atol=1e-5, rtol=1e-5)
    assert_close(sparse.task, full.task)
    for a, b in zip(_grads(sparse.weighted, hidden, head), full_grads, strict=True):
        assert_close(a, b, atol=1e-5, rtol=1e-5)


def _coarsened_kl(student_logits, teacher_logits, k):
    """T²·KL between the teacher's and the student's distributions over k + 1 buckets (the teacher's top k
    tokens, and the rest), per row, averaged: written out directly with autograd."""
    p = F.softmax(teacher_logits / T, -1)
    q = F.softmax(student_logits / T, -1)
    top = p.topk(k, -1).indices
    p_b = torch.cat([p.gather(1, top), 1 - p.gather(1, top).sum(1, keepdim=True)], 1)
    q_b = torch.cat([q.gather(1, top), 1 - q.gather(1, top).sum(1, keepdim=True)], 1)
    return T**2 * (p_b * (p_b.log() - q_b.log())).sum(1).mean()


@pytest.mark.parametrize("k", [1, 5, 16])
def test_the_bucket_kl_and_its_gradient_are_the_coarsened_distributions(lm, k):
    hidden, head, teacher_hidden, teacher_head, targets = lm
    teacher_logits = teacher_head(teacher_hidden).detach()
    reference = _coarsened_kl(head(hidden), teacher_logits, k)
    ref_grads = _grads(reference, hidden, head)
    cached = top_k(teacher_logits, k, T)
    assert_close(cached.rest, 1 - cached.logp.exp().sum(1), atol=1e-6, rtol=1e-5)
    sparse = lm_head_losses(hidden, head, targets, (0.0, 1.0), None, None, T, chunk_rows=4, teacher_topk=cached)
    assert_close(sparse.output, reference.detach(), atol=1e-5, rtol=1e-5)
    for a, b in zip(_grads(sparse.weighted, hidden, head), ref_grads, strict=True):
        assert_close(a, b, atol=1e-5, rtol=1e-4)
    full = lm_head_losses(hidden, head, targets, (0.0, 1.0), teacher_hidden, teacher_head, T)
    assert sparse.output <= full.output + 1e-6  # coarsening never adds information


def test_the_bucket_target_is_a_distribution_that_spreads_the_rest_like_the_student():
    log_q = F.log_softmax(torch.randn(3, 7, generator=torch.Generator().manual_seed(1)), -1)
    teacher = top_k(torch.randn(3, 7, generator=torch.Generator().manual_seed(2)), 2, 1.0)
    _, target = bucket_targets(log_q, teacher)
    assert_close(target.sum(1), torch.ones(3))
    assert_close(target.gather(1, teacher.index), teacher.logp.exp())
    rest = torch.ones_like(target, dtype=torch.bool).scatter_(1, teacher.index, False)
    q = log_q.exp()
    ratio = target[rest].view(3, -1) / q[rest].view(3, -1)  # the same factor r / q_R on every other token
    assert_close(ratio, ratio[:, :1].expand_as(ratio))
    assert isinstance(teacher, TopK)
