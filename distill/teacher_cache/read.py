"""Read a cache: the :class:`~distill.distiller.TeacherOutput` of a batch, from its examples' ids.

The shards stay memory-mapped (``safe_open``); a batch reads only its examples' rows and pads them like the
live teacher's output: hidden states (B, L, d) and attention maps (B, g, L, L) with zeros past each example's
length (every loss masks those positions), logits (B, C), and a causal LM's top-k as the (N, k) rows of the
positions that predict a real token, in :func:`~distill.losses.next_token_targets` order. Everything comes back
in float32 on the batch's device, so the losses run as they do on live outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from distill.distiller import TeacherOutput
from distill.losses import TopK
from distill.teacher_cache.build import topk_names
from distill.teacher_cache.key import Keep
from distill.teacher_cache.store import Manifest


class CachedTeacher:
    """A cache opened for reading; call it with a batch (which carries ``index``) for the teacher's outputs."""

    def __init__(self, folder: Path, manifest: Manifest, keep: Keep):
        self.folder, self.manifest, self.keep = folder, manifest, keep
        self.files = [safe_open(str(folder / s.file), framework="pt") for s in manifest.shards]
        lengths, shard, first = [], [], []
        for number, (f, s) in enumerate(zip(self.files, manifest.shards, strict=True)):
            part = f.get_tensor("lengths")
            lengths.append(part)
            shard += [number] * len(part)
            first += [s.start] * len(part)
        self.lengths = torch.cat(lengths)  # (N,)
        self.shard = torch.tensor(shard)
        # where each example's rows begin in its shard's tensors: tokens, squares (attention), LM positions
        starts = torch.tensor(first)
        self.row = torch.arange(len(self.lengths)) - starts
        self.token = self._offsets(self.lengths)
        self.square = self._offsets(self.lengths**2)
        self.position = self._offsets(self.lengths - 1)
        self.slices: dict[tuple[int, str], object] = {}

    def _offsets(self, sizes: torch.Tensor) -> torch.Tensor:
        """Each example's start in its shard's concatenation of per-example ``sizes``."""
        out = torch.empty_like(sizes)
        for number in range(len(self.files)):
            where = self.shard == number
            out[where] = sizes[where].cumsum(0) - sizes[where]
        return out

    def _read(self, shard: int, name: str, start: int, stop: int) -> torch.Tensor:
        key = (shard, name)
        if key not in self.slices:
            self.slices[key] = self.files[shard].get_slice(name)
        return self.slices[key][start:stop]

    def __call__(self, batch: dict[str, torch.Tensor]) -> TeacherOutput:
        mask = batch["attention_mask"]
        ids = batch["index"].tolist()
        real = mask.sum(1).tolist()
        if [int(self.lengths[i]) for i in ids] != real:  # a cache of other examples: never a silent wrong hit
            raise RuntimeError(f"the teacher cache {self.manifest.key} does not hold this batch's examples")
        device, (size, width) = mask.device, mask.shape
        out = TeacherOutput(logits=None, hidden={}, attentions={})
        if self.keep.logits:
            out.logits = torch.cat([self._rows(i, "logits", self.row, 1) for i in ids]).float()
        for m in self.keep.hidden:
            rows = [self._rows(i, f"hidden.{m}", self.token, int(self.lengths[i])) for i in ids]
            hidden = torch.zeros(size, width, rows[0].shape[-1])
            for b, r in enumerate(rows):
                hidden[b, : len(r)] = r
            out.hidden[m] = hidden
        for m, groups in self.keep.attention:
            maps = torch.zeros(size, groups, width, width)
            for b, i in enumerate(ids):
                n = int(self.lengths[i])
                flat = self._rows(i, f"attention.{m}.{groups}", self.square, n * n, scale=groups)
                maps[b, :, :n, :n] = flat.view(groups, n, n)
            out.attentions[m] = maps
        if self.keep.top_k is not None:
            parts = [
                torch.cat([self._rows(i, name, self.position, int(self.lengths[i]) - 1) for i in ids])
                for name in topk_names(self.keep)
            ]
            out.topk = TopK(parts[0].float(), parts[1].long(), parts[2].float())
        return _to(out, device)

    def _rows(self, i: int, name: str, offsets: torch.Tensor, count: int, scale: int = 1) -> torch.Tensor:
        start = int(offsets[i]) * scale
        return self._read(int(self.shard[i]), name, start, start + count * scale)


def _to(out: TeacherOutput, device: torch.device) -> TeacherOutput:
    if device.type == "cpu":
        return out
    move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    return TeacherOutput(
        logits=None if out.logits is None else move(out.logits),
        hidden={k: move(v) for k, v in out.hidden.items()},
        attentions={k: move(v) for k, v in out.attentions.items()},
        topk=None if out.topk is None else TopK(move(out.topk.logp), move(out.topk.index), move(out.topk.rest)),
    )
