"""Build a cache: the frozen teacher over the training split, in batches, each example kept at its real length.

Shards are contiguous ranges of examples; within a shard the examples run through the teacher shortest first
(less padding: a batch costs its longest example), then are stored in their split's order. What is stored is
what the losses read, cut to the example's real tokens: a classifier's logits (C,), the kept layers' hidden
states (L, d), the kept attention maps averaged to the student's head groups (g·L·L, flattened), and a causal
LM's top-k at the L - 1 positions that predict a token (:func:`distill.losses.top_k`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel

from distill.distiller import teacher_outputs
from distill.losses import group_teacher_heads, top_k
from distill.metrics import Tick, no_tick
from distill.teacher_cache.key import Keep
from distill.teacher_cache.store import Shard, write_shard

SHARD_EXAMPLES = 256  # a shard is built in memory: 256 examples of 128 tokens with 3 kept 12-head maps are ~300 MB
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
Row = dict[str, torch.Tensor]


def build_units(examples: int, batch_size: int, shard_examples: int = SHARD_EXAMPLES) -> int:
    """The ticks :func:`build_shards` gives: its teacher batches."""
    full, last = divmod(examples, shard_examples)
    return full * math.ceil(shard_examples / batch_size) + math.ceil(last / batch_size)


def cache_bytes(keep: Keep, lengths: Sequence[int], dtype: str, hidden_size: int, labels: int) -> int:
    """The bytes of the tensors a cache keeps for examples of these real ``lengths`` (what :func:`example_rows`
    stores; the shards' headers aside): a page's estimate of the disk a cache takes before it is built."""
    size = DTYPES[dtype].itemsize
    tokens, squares = sum(lengths), sum(n * n for n in lengths)
    total = size * labels * len(lengths) if keep.logits else 0
    total += size * hidden_size * len(keep.hidden) * tokens
    total += size * sum(groups for _, groups in keep.attention) * squares
    if keep.top_k is not None:  # per predicting position: k log-probabilities, k int32 ids, the rest's float32 mass
        total += (keep.top_k[0] * (size + 4) + 4) * sum(max(n - 1, 0) for n in lengths)
    return total


def topk_names(keep: Keep) -> tuple[str, str, str]:
    """The three stored tensors of a causal LM's top-k entry: log-probabilities, token ids, the rest's mass."""
    (name,) = [n for n in keep.names() if n.startswith("topk.")]
    return f"{name}.logp", f"{name}.index", f"{name}.rest"


@torch.inference_mode()  # the LM head below runs outside teacher_outputs: a teacher not frozen must not track it
def example_rows(teacher: PreTrainedModel, batch: dict[str, torch.Tensor], keep: Keep, dtype: torch.dtype) -> list[Row]:
    """For each example of a padded batch, what ``keep`` asks for at its real length, on the CPU in ``dtype``
    (token ids as int32 and the rest's mass in float32 whatever ``dtype``)."""
    out = teacher_outputs(teacher, batch, list(keep.hidden), [m for m, _ in keep.attention])
    lengths = batch["attention_mask"].sum(1).tolist()
    rows: list[Row] = []
    for b, length in enumerate(lengths):
        row: Row = {}
        if keep.logits:
            row["logits"] = out.logits[b]
        for m in keep.hidden:
            row[f"hidden.{m}"] = out.hidden[m][b, :length]
        for m, groups in keep.attention:
            # the reduction attention_loss applies, so the cached maps pass through it unchanged
            reduced, _ = group_teacher_heads(out.attentions[m][b : b + 1], groups, "group" if groups > 1 else "mean")
            row[f"attention.{m}.{groups}"] = reduced[0, :, :length, :length].reshape(-1)
        row = {k: v.to("cpu", dtype) for k, v in row.items()}
        if keep.top_k is not None:
            k, temperature = keep.top_k
            logp, index, rest = topk_names(keep)
            logits = out.head(out.final_hidden[b, : length - 1].to(out.head.weight.dtype))
            targets = top_k(logits, k, temperature)
            row[logp] = targets.logp.to("cpu", dtype)
            row[index] = targets.index.to("cpu", torch.int32)
            row[rest] = targets.rest.to("cpu", torch.float32)
        rows.append(row)
    return rows


def _concatenate(rows: list[Row]) -> dict[str, torch.Tensor]:
    tensors = {k: torch.cat([r[k] for r in rows]) for k in rows[0] if k != "logits"}
    if "logits" in rows[0]:
        tensors["logits"] = torch.stack([r["logits"] for r in rows])
    return tensors


def build_shards(
    teacher: PreTrainedModel,
    split: Dataset,
    keep: Keep,
    collate_fn: Callable[[list[dict]], dict[str, torch.Tensor]],
    folder: Path,
    *,
    dtype: str,
    batch_size: int,
    tick: Tick = no_tick,
    shard_examples: int = SHARD_EXAMPLES,
) -> list[Shard]:
    """Run ``teacher`` (eval mode, on its device) over every example of ``split`` and write the shards into
    ``folder``; ``tick`` after each batch (:func:`build_units` in all)."""
    device = next(teacher.parameters()).device
    lengths = [len(split[i]["input_ids"]) for i in range(len(split))]
    shards = []
    for number, start in enumerate(range(0, len(split), shard_examples)):
        stop = min(len(split), start + shard_examples)
        order = sorted(range(start, stop), key=lambda i: lengths[i])
        rows: dict[int, Row] = {}
        for i in range(0, len(order), batch_size):
            ids = order[i : i + batch_size]
            batch = {k: v.to(device) for k, v in collate_fn([split[j] for j in ids]).items()}
            rows.update(zip(ids, example_rows(teacher, batch, keep, DTYPES[dtype]), strict=True))
            tick()
        tensors = _concatenate([rows[i] for i in range(start, stop)])
        tensors["lengths"] = torch.tensor(lengths[start:stop], dtype=torch.long)
        shards.append(write_shard(folder, number, start, stop, tensors))
    return shards
