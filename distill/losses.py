r"""The distillation loss terms: pure functions of student and teacher tensors, and their weighted sum.

Four terms, each returned unweighted so they can be logged and weighted apart (:func:`combine`):

* **task** — cross-entropy against the labels (MSE for regression).
* **output** — Hinton et al. 2015, "Distilling the Knowledge in a Neural Network":
  :math:`T^2 \, \mathrm{KL}(\mathrm{softmax}(z_t/T) \,\|\, \mathrm{softmax}(z_s/T))`; the
  :math:`T^2` keeps gradient magnitudes comparable across temperatures.
* **feature** — TinyBERT (Jiao et al. 2020): hidden states of mapped layers, the student's projected to
  the teacher's width by a learned :math:`W`, compared by :math:`\mathrm{MSE}(h_s W, h_t)` divided by the
  teacher's variance at that layer (scale-free; the default), the plain MSE, or :math:`1 - \cos`.
* **attention** — TinyBERT's MSE between attention maps, or MiniLM's (Wang et al. 2020)
  :math:`\mathrm{KL}(A_t \,\|\, A_s)` per query row. When head counts differ, teacher heads are
  averaged in consecutive groups, or both sides are compared head-averaged.

For causal LMs the task term is next-token cross-entropy and the output term the per-token
:math:`T^2 \, \mathrm{KL}` over the vocabulary, both over the positions whose next token is real
(:func:`next_token_targets`), and both come from one fused, chunked pass through the LM heads
(:func:`lm_head_losses`) that never holds the (B, L, V) logits. From a teacher-output cache, the output
term is the KL over the teacher's top-k tokens and one bucket for the rest (:func:`bucket_targets`).

Every per-token value is averaged over real tokens only (:func:`masked_mean`), and attention rows over
real keys only, so padding never changes a loss. Teacher tensors are detached (and cloned when they are
inference tensors, which autograd refuses to save), so gradients reach the student side alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-12  # floor for student attention probabilities before the log: 0 * log(0) must stay finite
VARIANCE_FLOOR = 1e-12  # a teacher layer constant over the batch (a single real token) must not divide by 0
HEAD_MAPPINGS: tuple[str, ...] = ("group", "mean")


def _target(teacher: Tensor) -> Tensor:
    """A teacher tensor as a constant target that autograd may save for backward."""
    teacher = teacher.detach()
    return teacher.clone() if teacher.is_inference() else teacher


def _pick(table: dict[str, Callable[..., Tensor]], variant: str, what: str) -> Callable[..., Tensor]:
    try:
        return table[variant]
    except KeyError:
        raise ValueError(f"unknown {what} variant {variant!r}; expected one of {sorted(table)}") from None


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    r"""Mean of ``values`` over the positions where ``mask`` is nonzero.

    ``values`` (B, L) per-token values; ``mask`` (B, L), 1 for real tokens and 0 for padding, any dtype
    (any shape matching ``values`` works the same). ``None`` means every position is real.

    .. math:: \frac{\sum_{b,l} m_{bl} v_{bl}}{\max(1, \sum_{b,l} m_{bl})}
    """
    if mask is None:
        return values.mean()
    keep = mask != 0  # a fresh bool tensor, even when the mask is an inference tensor
    # where, not multiply: a NaN or inf at a padded position must not leak into the sum
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    return total / keep.sum().clamp_min(1).to(values.dtype)


def task_loss(logits: Tensor, labels: Tensor, regression: bool = False) -> Tensor:
    r"""Supervised loss: cross-entropy of logits (B, C) against labels (B,) long, or MSE for regression.

    .. math:: -\frac{1}{B} \sum_b \log \mathrm{softmax}(z_b)_{y_b}
        \quad\text{or}\quad \frac{1}{B} \sum_b (z_b - y_b)^2
    """
    if regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def output_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    r"""Soft-target loss (Hinton et al. 2015) between logits (B, C), or (B, L, V) with ``mask`` (B, L).

    Summed over classes, then averaged over the batch, or over real tokens for language models.

    .. math:: T^2 \sum_c p_t^{(c)} (\log p_t^{(c)} - \log p_s^{(c)}),
        \quad p = \mathrm{softmax}(z / T)
    """
    # float32 and log_softmax: half-precision softmax of large logits underflows to log(0)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(_target(teacher_logits).float() / temperature, dim=-1)
    per_item = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return temperature**2 * masked_mean(per_item, mask)


def feature_mse(student_h: Tensor, teacher_h: Tensor, mask: Tensor | None) -> Tensor:
    r"""Mean squared error of hidden states (B, L, d), averaged over d, then over real tokens.

    .. math:: \frac{1}{|\mathcal{M}|} \sum_{(b,l) \in \mathcal{M}} \frac{1}{d}
        \lVert h^s_{bl} - h^t_{bl} \rVert^2
    """
    per_token = (student_h.float() - _target(teacher_h).float()).pow(2).mean(-1)
    return masked_mean(per_token, mask)


def feature_cosine(student_h: Tensor, teacher_h: Tensor, mask: Tensor | None) -> Tensor:
    r"""Cosine distance of hidden states (B, L, d) per token, averaged over real tokens.

    .. math:: \frac{1}{|\mathcal{M}|} \sum_{(b,l) \in \mathcal{M}} 1 - \cos(h^s_{bl}, h^t_{bl})
    """
    per_token = 1.0 - F.cosine_similarity(student_h.float(), _target(teacher_h).float(), dim=-1)
    return masked_mean(per_token, mask)


def teacher_variance(teacher_h: Tensor, mask: Tensor | None) -> Tensor:
    r"""The variance of the teacher's hidden states (B, L, d) over real tokens, per dimension, averaged
    over the d dimensions: the MSE of predicting each dimension's mean.

    .. math:: \frac{1}{d} \sum_j \frac{1}{|\mathcal{M}|} \sum_{(b,l) \in \mathcal{M}} (h^t_{blj} - \mu_j)^2
    """
    t = _target(teacher_h).float()
    keep = torch.ones(t.shape[:-1], dtype=torch.bool, device=t.device) if mask is None else mask != 0
    real = t[keep]  # (N, d)
    return real.var(0, unbiased=False).mean() if len(real) else t.new_zeros(())


def feature_normalized_mse(student_h: Tensor, teacher_h: Tensor, mask: Tensor | None) -> Tensor:
    r""":func:`feature_mse` divided by the teacher's :func:`teacher_variance` at that layer: the part of
    the teacher's variance the student misses (0 = exact, 1 = no better than each dimension's mean).

    Scale-free: a teacher whose residual stream is 10⁴ times larger (SmolLM2's outlier dimensions) gives
    the same value as a unit-scale one, so the term stays comparable to the task and output terms.

    .. math:: \mathrm{MSE}(h^s, h^t) \,/\, \max(\mathrm{Var}(h^t), \epsilon)
    """
    return feature_mse(student_h, teacher_h, mask) / teacher_variance(teacher_h, mask).clamp_min(VARIANCE_FLOOR)


def feature_standardized_mse(student_h: Tensor, teacher_h: Tensor, mask: Tensor | None) -> Tensor:
    r"""Squared error of each dimension divided by the teacher's variance of that dimension over real tokens,
    averaged over dimensions and real tokens.

    Unlike :func:`feature_normalized_mse`, whose one divisor is dominated by a few outlier dimensions
    (SmolLM2's residual stream), every dimension counts alike.

    .. math:: \frac{1}{|\mathcal{M}|} \sum_{(b,l) \in \mathcal{M}} \frac{1}{d} \sum_j
        \frac{(h^s_{blj} - h^t_{blj})^2}{\max(\sigma^2_j, \epsilon)}
    """
    t = _target(teacher_h).float()
    keep = torch.ones(t.shape[:-1], dtype=torch.bool, device=t.device) if mask is None else mask != 0
    variance = t[keep].var(0, unbiased=False).clamp_min(VARIANCE_FLOOR) if keep.any() else t.new_ones(t.shape[-1])
    per_token = ((student_h.float() - t).pow(2) / variance).mean(-1)
    return masked_mean(per_token, mask)


FEATURE_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "normalized_mse": feature_normalized_mse,
    "standardized_mse": feature_standardized_mse,
    "mse": feature_mse,
    "cosine": feature_cosine,
}


def feature_loss(
    student_h: Tensor,
    teacher_h: Tensor,
    mask: Tensor | None,
    projection: nn.Module | None,
    variant: str = "mse",
) -> Tensor:
    r"""Feature term for one layer pair: student (B, L, d_s), teacher (B, L, d_t), mask (B, L).

    ``projection`` maps d_s to d_t (TinyBERT's learned :math:`W`, an ``nn.Linear``); ``None`` when the
    widths already agree.

    .. math:: \mathcal{L}_\text{variant}(h^s W, h^t)
    """
    loss_fn = _pick(FEATURE_LOSSES, variant, "feature")
    if projection is not None:
        student_h = projection(student_h)
    return loss_fn(student_h, teacher_h, mask)


def group_teacher_heads(teacher_att: Tensor, student_heads: int, head_mapping: str) -> tuple[Tensor, bool]:
    r"""Bring teacher attention (B, h_t, L, L) to the student's head count.

    ``"group"`` with h_t divisible by h_s: average consecutive groups of h_t / h_s heads, giving
    (B, h_s, L, L), and ``False``. Otherwise (``"mean"``, or not divisible) the head-average (B, 1, L, L)
    and ``True``: the student's maps must then be head-averaged as well.

    .. math:: \bar A^t_j = \frac{1}{g} \sum_{k=0}^{g-1} A^t_{j g + k}, \quad g = h_t / h_s
    """
    if head_mapping not in HEAD_MAPPINGS:
        raise ValueError(f"unknown head mapping {head_mapping!r}; expected one of {list(HEAD_MAPPINGS)}")
    teacher_heads = teacher_att.shape[1]
    if head_mapping == "group" and teacher_heads % student_heads == 0:
        if teacher_heads == student_heads:
            return teacher_att, False
        group = teacher_heads // student_heads
        # (B, h_t, ...) -> (B, h_s, group, ...): student head j owns teacher heads j*group .. j*group+group-1
        return teacher_att.unflatten(1, (student_heads, group)).mean(2), False
    return teacher_att.mean(1, keepdim=True), True


def _key_mask(mask: Tensor | None) -> Tensor | None:
    """(B, L) token mask -> (B, 1, 1, L) bool mask over the keys of attention maps (B, h, L, L)."""
    return None if mask is None else (mask != 0)[:, None, None, :]


def _over_keys(values: Tensor, mask: Tensor | None, mean: bool) -> Tensor:
    """Per-key values (B, h, L, L) -> (B, L): sum (or mean) over real keys, then mean over heads."""
    keys = _key_mask(mask)
    if keys is None:
        per_row = values.mean(-1) if mean else values.sum(-1)
    else:
        per_row = torch.where(keys, values, torch.zeros_like(values)).sum(-1)
        if mean:
            per_row = per_row / keys.sum(-1).clamp_min(1).to(values.dtype)
    return per_row.mean(1)


def attention_kl(student_att: Tensor, teacher_att: Tensor, mask: Tensor | None) -> Tensor:
    r"""MiniLM's KL between attention probabilities (B, h, L, L), per query row over real keys.

    Averaged over heads, then over real query positions.

    .. math:: \mathrm{KL}(A^t_{bhq} \,\|\, A^s_{bhq}) = \sum_{k \in \mathcal{M}_b} A^t_{bhqk}
        (\log A^t_{bhqk} - \log A^s_{bhqk})
    """
    a_s = student_att.float()
    keys = _key_mask(mask)
    # Zeroing the teacher's padded keys masks them for free (every term below is a multiple of A_t) and
    # yields the non-inference copy autograd needs, instead of a clone plus a masked reduction.
    a_t = _target(teacher_att).float() if keys is None else teacher_att.detach().float().masked_fill(~keys, 0.0)
    # xlogy makes 0 * log 0 = 0; the clamp keeps log finite where the student puts exactly zero
    per_key = torch.xlogy(a_t, a_t) - a_t * a_s.clamp_min(EPS).log()
    return masked_mean(per_key.sum(-1).mean(1), mask)


def attention_mse(student_att: Tensor, teacher_att: Tensor, mask: Tensor | None) -> Tensor:
    r"""TinyBERT's MSE between attention maps (B, h, L, L): mean over real keys, heads, real queries.

    .. math:: \frac{1}{|\mathcal{M}_b|} \sum_{k \in \mathcal{M}_b} (A^s_{bhqk} - A^t_{bhqk})^2
    """
    per_key = (student_att.float() - _target(teacher_att).float()).pow(2)
    return masked_mean(_over_keys(per_key, mask, mean=True), mask)


ATTENTION_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "kl": attention_kl,
    "mse": attention_mse,
}


def attention_loss(
    student_att: Tensor,
    teacher_att: Tensor,
    mask: Tensor | None,
    variant: str = "kl",
    head_mapping: str = "group",
) -> Tensor:
    r"""Attention term for one layer pair: student (B, h_s, L, L), teacher (B, h_t, L, L), mask (B, L).

    Heads are matched by :func:`group_teacher_heads` before the variant compares the maps.

    .. math:: \mathcal{L}_\text{variant}(A^s, \bar A^t)
    """
    loss_fn = _pick(ATTENTION_LOSSES, variant, "attention")
    teacher_att, average_student = group_teacher_heads(teacher_att, student_att.shape[1], head_mapping)
    if average_student:
        student_att = student_att.mean(1, keepdim=True)
    return loss_fn(student_att, teacher_att, mask)


@dataclass
class LossOutput:
    """The weighted total to backpropagate, and each term's unweighted value by name."""

    total: Tensor
    terms: dict[str, Tensor]


def combine(terms: dict[str, Tensor], weights: dict[str, float]) -> LossOutput:
    r"""Weighted sum of the present terms; a term with weight 0 (or none) is left out of the total.

    When nothing contributes, ``total`` is a zero tensor on the terms' device and dtype (with no graph).

    .. math:: \mathcal{L} = \sum_{n} w_n \mathcal{L}_n
    """
    total: Tensor | None = None
    for name, value in terms.items():
        weight = weights.get(name, 0.0)
        if weight == 0:
            continue
        total = weight * value if total is None else total + weight * value
    if total is None:
        like = next(iter(terms.values()), None)
        total = torch.zeros(()) if like is None else like.new_zeros(())
    return LossOutput(total=total, terms=dict(terms))


# --- causal language models ------------------------------------------------------------------------

IGNORE_INDEX = -100  # label of a padded position (the convention of transformers and F.cross_entropy)
LM_CHUNK_ELEMENTS = 1 << 23  # logits per chunk (32 MB in float32): rows per chunk = this // vocabulary


def next_token_targets(labels: Tensor) -> tuple[Tensor, Tensor]:
    r"""Which positions predict a real token, and that token: position :math:`l` predicts
    :math:`y_{l+1}`.

    ``labels`` (B, L) long, ``IGNORE_INDEX`` at padding. Returns ``keep`` (B, L-1) bool, true where
    :math:`y_{l+1}` is real, and ``targets`` (N,) long, the real next tokens in row-major order, N = keep.sum().
    """
    following = labels[:, 1:]
    keep = following != IGNORE_INDEX
    return keep, following[keep]


def _chunk_rows(vocab: int, chunk_rows: int | None) -> int:
    return chunk_rows or max(1, LM_CHUNK_ELEMENTS // vocab)


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """float32 logits of a chunk, computed in the weights' dtype (a bfloat16 teacher stays bfloat16)."""
    z = hidden.to(weight.dtype) @ weight.T
    return (z if bias is None else z + bias).float()


@dataclass
class TopK:
    r"""A causal-LM teacher's k most likely next tokens at N positions, at temperature :math:`T`: their
    log-probabilities ``logp`` (N, k) float, their ids ``index`` (N, k) long, and ``rest`` (N,) the
    probability of all the other tokens together, :math:`r = 1 - \sum_{i \in S} p_i`."""

    logp: Tensor
    index: Tensor
    rest: Tensor

    def rows(self, start: int, stop: int) -> TopK:
        return TopK(self.logp[start:stop], self.index[start:stop], self.rest[start:stop])


@torch.no_grad()
def top_k(logits: Tensor, k: int, temperature: float) -> TopK:
    """The :class:`TopK` of logits (N, V): ``rest`` is summed from the other tokens' probabilities in log space,
    not taken as 1 minus the kept ones (that difference loses every digit when the top k hold nearly all)."""
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)
    logp, index = log_p.topk(min(k, log_p.shape[-1]), dim=-1)
    rest = log_p.scatter(1, index, float("-inf")).logsumexp(-1).exp()
    return TopK(logp, index, rest)


def bucket_targets(log_q: Tensor, teacher: TopK) -> tuple[Tensor, Tensor]:
    r"""The KL from the teacher's top-k distribution to the student's, summed over N rows, and the
    target :math:`\tilde p` whose :math:`q - \tilde p` is its gradient with respect to the student's logits
    :math:`u` (at temperature :math:`T`: :math:`z / T`).

    ``log_q`` (N, V) the student's log-probabilities. Both distributions are coarsened to k + 1 buckets, the
    teacher's top-k tokens :math:`S` and the rest :math:`R` (DistillKit's compressed logits):

    .. math:: \mathrm{KL}_S = \sum_{i \in S} p_i (\log p_i - \log q_i) + r (\log r - \log q_R),
        \qquad q_R = \sum_{j \notin S} q_j

    .. math:: \partial \mathrm{KL}_S / \partial u_j = q_j - \tilde p_j, \qquad
        \tilde p_j = p_j \ (j \in S), \quad \tilde p_j = r \, q_j / q_R \ (j \notin S)

    (the rest's mass spread like the student's own). :math:`\mathrm{KL}_S \le \mathrm{KL}` (coarsening
    loses information), with equality when k = V (then :math:`r = 0`) or when the student's rest is shaped
    like the teacher's.
    """
    log_q_s = log_q.gather(1, teacher.index)  # (N, k)
    log_q_rest = log_q.scatter(1, teacher.index, float("-inf")).logsumexp(-1)  # (N,); -inf when k = V
    p_s, rest = teacher.logp.float().exp(), teacher.rest.float()
    real = rest > 0  # r log q_R is 0 when r is: k = V leaves -inf there
    rest_term = torch.where(real, torch.xlogy(rest, rest) - rest * log_q_rest, torch.zeros_like(rest))
    kl = (p_s * (teacher.logp.float() - log_q_s)).sum() + rest_term.sum()
    ratio = torch.where(real, (rest.clamp_min(EPS).log() - log_q_rest).exp(), torch.zeros_like(rest))  # r / q_R
    target = (log_q.exp() * ratio[:, None]).scatter_(1, teacher.index, p_s)
    return kl, target


@dataclass
class _LmChunks:
    """Sums over the chunks of one LM-head pass, and the summed gradients when asked for."""

    nll: Tensor
    kl: Tensor
    grad_hidden: Tensor | None = None
    grad_weight: Tensor | None = None
    grad_bias: Tensor | None = None


def _lm_head_chunks(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    teacher_hidden: Tensor | None,
    teacher_weight: Tensor | None,
    teacher_bias: Tensor | None,
    temperature: float,
    grad_scales: tuple[float, float] | None,
    chunk_rows: int | None,
    teacher_topk: TopK | None = None,
) -> _LmChunks:
    r"""Token NLL and :math:`T^2`-KL sums over N tokens, one chunk of rows at a time, and (with
    ``grad_scales`` :math:`(a, b)`) the gradients of :math:`a \sum \mathrm{NLL} + b \sum T^2 \mathrm{KL}`
    with respect to ``hidden``, ``weight`` and ``bias``, from the closed forms

    .. math:: \partial \mathrm{NLL} / \partial z = \mathrm{softmax}(z) - \mathrm{onehot}(y), \qquad
        \partial\, T^2 \mathrm{KL}(p_t \| \mathrm{softmax}(z/T)) / \partial z = T (p_s - p_t).

    The teacher is its final hidden states and head, or its cached ``teacher_topk`` (then :math:`p_t` is
    :func:`bucket_targets`' :math:`\tilde p`). Only a chunk's logits (rows × V) exist at any time.
    """
    n, vocab = hidden.shape[0], weight.shape[0]
    rows = _chunk_rows(vocab, chunk_rows)
    nll = hidden.new_zeros((), dtype=torch.float32)
    kl = nll.clone()
    out = _LmChunks(nll, kl)
    if grad_scales is not None:
        out.grad_hidden = torch.zeros_like(hidden, dtype=torch.float32)
        out.grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        out.grad_bias = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
    w32 = weight.float()  # a no-op for float32 students
    for start in range(0, n, rows):
        h = hidden[start : start + rows]
        y = targets[start : start + rows]
        z = _logits(h, w32, None if bias is None else bias.float())  # (rows, V)
        log_p = F.log_softmax(z, dim=-1)
        out.nll += -log_p.gather(1, y[:, None]).sum()
        grad_z = None
        if grad_scales is not None and grad_scales[0]:
            grad_z = log_p.exp_().mul_(grad_scales[0])  # softmax(z), in place of log_p
            grad_z[torch.arange(len(y), device=y.device), y] -= grad_scales[0]
        del log_p
        if teacher_hidden is not None or teacher_topk is not None:
            log_p_s = F.log_softmax(z / temperature, dim=-1)
            if teacher_topk is not None:
                kl, p_t = bucket_targets(log_p_s, teacher_topk.rows(start, start + rows))
            else:
                log_p_t = F.log_softmax(
                    _logits(teacher_hidden[start : start + rows], teacher_weight, teacher_bias) / temperature, dim=-1
                )
                p_t = log_p_t.exp()
                kl = (p_t * (log_p_t - log_p_s)).sum()
                del log_p_t
            out.kl += temperature**2 * kl
            if grad_scales is not None and grad_scales[1]:
                g = log_p_s.exp_().sub_(p_t).mul_(temperature * grad_scales[1])
                grad_z = g if grad_z is None else grad_z.add_(g)
            del log_p_s, p_t
        if grad_z is not None:
            out.grad_hidden[start : start + rows] = grad_z @ w32
            out.grad_weight.addmm_(grad_z.T, h.float())
            if out.grad_bias is not None:
                out.grad_bias += grad_z.sum(0)
    return out


class _FusedLmHeadLoss(torch.autograd.Function):
    """Forward computes the values and the gradients together; backward only scales the gradients."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, teacher_hidden, teacher_weight, teacher_bias, spec):
        temperature, task_weight, output_weight, chunk_rows, teacher_topk = spec
        n = max(1, hidden.shape[0])
        scales = (task_weight / n, output_weight / n)  # the losses are means over the N tokens
        sums = _lm_head_chunks(
            hidden,
            weight,
            bias,
            targets,
            teacher_hidden,
            teacher_weight,
            teacher_bias,
            temperature,
            scales,
            chunk_rows,
            teacher_topk,
        )
        ctx.save_for_backward(sums.grad_hidden, sums.grad_weight, sums.grad_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.has_bias = bias is not None
        nll, kl = sums.nll / n, sums.kl / n
        ctx.mark_non_differentiable(nll, kl)
        return task_weight * nll + output_weight * kl, nll, kl

    @staticmethod
    def backward(ctx, grad_total, _grad_nll, _grad_kl):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_total.float()
        hidden_dtype, weight_dtype = ctx.dtypes
        grad_b = (grad_bias * scale).to(weight_dtype) if ctx.has_bias else None
        grad_w = (grad_weight * scale).to(weight_dtype)
        return (grad_hidden * scale).to(hidden_dtype), grad_w, grad_b, None, None, None, None, None


@dataclass
class LmLosses:
    """The LM head's terms: ``weighted`` = task weight · task + output weight · output, with gradients;
    ``task`` (mean next-token NLL) and ``output`` (mean per-token T²·KL; zero without a teacher) are values."""

    weighted: Tensor
    task: Tensor
    output: Tensor


def lm_head_losses(
    hidden: Tensor,
    head: nn.Linear,
    targets: Tensor,
    weights: tuple[float, float],
    teacher_hidden: Tensor | None = None,
    teacher_head: nn.Linear | None = None,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
    teacher_topk: TopK | None = None,
) -> LmLosses:
    r"""Next-token cross-entropy and output distillation from final hidden states, never holding the
    full (N, V) logits (a fused linear cross-entropy, as in Liger Kernel).

    ``hidden`` (N, d_s): the student's final hidden state at the N positions that predict a real token
    (:func:`next_token_targets`); ``targets`` (N,) those tokens; ``head`` the student's LM head
    (:math:`W \in R^{V \times d_s}`, optional bias); ``teacher_hidden`` (N, d_t) and ``teacher_head`` the
    same for the teacher (``None`` for no output term), or instead ``teacher_topk``, the teacher's cached top-k
    at these N positions (the output term is then :func:`bucket_targets`' KL). ``weights`` = (task weight,
    output weight).

    .. math:: \mathcal{L}_\text{task} = \frac{1}{N} \sum_i -\log \mathrm{softmax}(z_i)_{y_i}, \qquad
        \mathcal{L}_\text{out} = \frac{T^2}{N} \sum_i \mathrm{KL}\big(\mathrm{softmax}(z^t_i/T) \,\|\,
        \mathrm{softmax}(z_i/T)\big), \qquad z_i = W h_i + b

    Rows are processed in chunks of ``chunk_rows`` (default: :data:`LM_CHUNK_ELEMENTS` logits per chunk),
    and each chunk's gradient with respect to its logits comes from the closed forms, is turned into the
    chunk's rows of :math:`\partial / \partial h` and accumulated into :math:`\partial / \partial W` during
    the forward pass; backward only multiplies by the incoming gradient. So the step costs the same
    matrix products as the plain one (logits, then the two gradient products) with memory bounded by a
    chunk. The two terms come out as one weighted sum so there is a single gradient buffer per tensor
    (the weights are known when the loss is computed); their values are returned apart for logging.
    """
    if teacher_hidden is not None and teacher_head is None:
        raise ValueError("teacher_hidden needs teacher_head")
    teacher = (
        (_target(teacher_hidden), teacher_head.weight.detach(), _optional(teacher_head.bias))
        if teacher_hidden is not None
        else (None, None, None)
    )
    with_teacher = teacher_hidden is not None or teacher_topk is not None
    task_weight, output_weight = weights
    spec = (temperature, float(task_weight), float(output_weight) if with_teacher else 0.0, chunk_rows, teacher_topk)
    weighted, task, output = _FusedLmHeadLoss.apply(hidden, head.weight, head.bias, targets, *teacher, spec)
    return LmLosses(weighted, task, output)


def _optional(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.detach()


@torch.no_grad()
def lm_nll_sum(hidden: Tensor, head: nn.Linear, targets: Tensor, chunk_rows: int | None = None) -> Tensor:
    r"""Summed next-token NLL :math:`\sum_i -\log \mathrm{softmax}(W h_i + b)_{y_i}` over N rows, in
    chunks (for evaluation: perplexity is :math:`\exp` of the mean)."""
    sums = _lm_head_chunks(
        hidden, head.weight, head.bias, targets, None, None, None, 1.0, grad_scales=None, chunk_rows=chunk_rows
    )
    return sums.nll
