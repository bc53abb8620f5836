"""The trained module: the student plus the learned projections, and the teacher's forward pass.

Projections live in an ``nn.ModuleDict`` keyed ``s{l}_t{m}`` on the :class:`Distiller`, so ``.to()``,
``state_dict``, checkpoints and the optimizer include them, and export drops them by saving the student.

For causal LMs neither model computes its logits: both run their decoder only (``get_decoder()``), and the
task and output terms come from the final hidden states through the LM heads in chunks
(:func:`~distill.losses.lm_head_losses`), so the (B, L, V) logits of either model never exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from distill.config import LayerPair, LossConfig
from distill.features import tap
from distill.layer_map import has_attention, projection_key
from distill.losses import (
    LmLosses,
    LossOutput,
    TopK,
    attention_loss,
    combine,
    feature_loss,
    lm_head_losses,
    next_token_targets,
    output_kl,
    task_loss,
)


@dataclass
class TeacherOutput:
    """What the losses need from the teacher: the mapped layers' tensors, and its logits (a classifier)
    or its final hidden state (a causal LM, whose head the loss applies chunk by chunk).

    Read from a teacher-output cache (:mod:`distill.teacher_cache`), the attention maps are already reduced to
    the student's head grouping, and a causal LM's output is ``topk``: the top-k at the positions that predict a
    real token, in :func:`~distill.losses.next_token_targets` order."""

    logits: torch.Tensor | None
    hidden: dict[int, torch.Tensor]
    attentions: dict[int, torch.Tensor]
    final_hidden: torch.Tensor | None = None
    head: nn.Linear | None = None
    topk: TopK | None = None


def lm_backbone(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A causal LM's final (normed) hidden states (B, L, d), without its LM head and without a KV cache.

    ``get_decoder`` rather than ``base_model``: a peft-wrapped model's ``base_model`` is the adapter wrapper.
    """
    decoder = model.get_decoder()
    return decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state


def teacher_forward(
    teacher: PreTrainedModel, batch: dict[str, torch.Tensor], pairs: tuple[LayerPair, ...], attentions: bool
) -> TeacherOutput:
    """Run the frozen teacher, keeping only what the mapped pairs use."""
    hidden = [p.teacher for p in pairs]
    maps = [p.teacher for p in pairs if attentions and has_attention(p)]
    return teacher_outputs(teacher, batch, hidden, maps)


@torch.inference_mode()
def teacher_outputs(
    teacher: PreTrainedModel, batch: dict[str, torch.Tensor], hidden: list[int], maps: list[int]
) -> TeacherOutput:
    """Run the frozen teacher, keeping the hidden states of layers ``hidden`` and the attention maps of ``maps``."""
    with tap(teacher, hidden=hidden, attentions=maps) as taps:
        if batch["labels"].dim() == 2:  # next-token labels: a causal LM
            final = lm_backbone(teacher, batch)
            return TeacherOutput(None, taps.hidden, taps.attentions, final, teacher.get_output_embeddings())
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return TeacherOutput(logits, taps.hidden, taps.attentions)


class Distiller(nn.Module):
    """Student + projections. ``forward`` returns the weighted loss with every term unweighted beside it.

    ``pairs`` is empty for runs without feature terms (``kd_logits``, ``no_kd``, teacher fine-tuning).
    A batch whose ``labels`` are (B, L) next-token labels (:func:`~distill.data.collate_lm`) is a causal-LM
    batch; (B,) class ids are a classification batch.
    """

    def __init__(
        self,
        student: PreTrainedModel,
        pairs: tuple[LayerPair, ...],
        teacher_hidden: int,
        loss: LossConfig,
        attentions: bool,
    ):
        super().__init__()
        self.student = student
        self.pairs = pairs
        self.loss = loss
        self.attentions = attentions
        student_hidden = student.config.hidden_size
        self.projections = nn.ModuleDict(
            {
                projection_key(p): nn.Linear(student_hidden, teacher_hidden)
                for p in pairs
                if student_hidden != teacher_hidden
            }
        )

    def forward(
        self, batch: dict[str, torch.Tensor], teacher: TeacherOutput | None, weights: dict[str, float]
    ) -> LossOutput:
        mask = batch["attention_mask"]
        hidden = [p.student for p in self.pairs]
        maps = [p.student for p in self.pairs if self.attentions and has_attention(p)]
        lm: LmLosses | None = None
        with tap(self.student, hidden=hidden, attentions=maps) as taps:
            if batch["labels"].dim() == 2:
                lm = self._lm_losses(batch, teacher, weights)
                terms = {"task": lm.task} | ({"output": lm.output} if teacher is not None else {})
            else:
                logits = self.student(input_ids=batch["input_ids"], attention_mask=mask).logits
                terms = {"task": task_loss(logits, batch["labels"])}
                if teacher is not None:
                    terms["output"] = output_kl(logits, teacher.logits, self.loss.temperature)
        if self.pairs and weights["feature"]:
            terms["feature"] = sum(
                p.feature_weight
                * feature_loss(
                    taps.hidden[p.student],
                    teacher.hidden[p.teacher],
                    mask,
                    self.projections[projection_key(p)] if self.projections else None,
                    self.loss.feature_variant,
                )
                for p in self.pairs
            )
        if maps and weights["attention"]:
            terms["attention"] = sum(
                p.attention_weight
                * attention_loss(
                    taps.attentions[p.student],
                    teacher.attentions[p.teacher],
                    mask,
                    self.loss.attention_variant,
                    self.loss.head_mapping,
                )
                for p in self.pairs
                if has_attention(p)
            )
        if lm is None:
            return combine(terms, weights)
        # the LM terms arrive weighted and fused (their values alone are in ``terms``)
        rest = combine({k: v for k, v in terms.items() if k not in ("task", "output")}, weights)
        return LossOutput(total=lm.weighted + rest.total if rest.terms else lm.weighted, terms=terms)

    def _lm_losses(
        self, batch: dict[str, torch.Tensor], teacher: TeacherOutput | None, weights: dict[str, float]
    ) -> LmLosses:
        keep, targets = next_token_targets(batch["labels"])
        final = lm_backbone(self.student, batch)[:, :-1][keep]  # (N, d): positions that predict a real token
        live = teacher is not None and teacher.final_hidden is not None
        return lm_head_losses(
            final,
            self.student.get_output_embeddings(),
            targets,
            (weights["task"], weights.get("output", 0.0)),
            teacher.final_hidden[:, :-1][keep] if live else None,
            teacher.head if live else None,
            self.loss.temperature,
            teacher_topk=teacher.topk if teacher is not None else None,
        )
