"""The trained module: the student plus the learned projections, and the teacher's forward pass.

Projections live in an ``nn.ModuleDict`` keyed ``s{l}_t{m}`` on the :class:`Distiller`, so ``.to()``,
``state_dict``, checkpoints and the optimizer include them, and export drops them by saving the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from distill.config import LayerPair, LossConfig
from distill.features import tap
from distill.layer_map import has_attention, projection_key
from distill.losses import LossOutput, attention_loss, combine, feature_loss, output_kl, task_loss


@dataclass
class TeacherOutput:
    """What the losses need from the teacher: logits and the mapped layers' tensors only."""

    logits: torch.Tensor
    hidden: dict[int, torch.Tensor]
    attentions: dict[int, torch.Tensor]


@torch.inference_mode()
def teacher_forward(
    teacher: PreTrainedModel, batch: dict[str, torch.Tensor], pairs: tuple[LayerPair, ...], attentions: bool
) -> TeacherOutput:
    """Run the frozen teacher, keeping only what the mapped pairs use."""
    hidden = [p.teacher for p in pairs]
    maps = [p.teacher for p in pairs if attentions and has_attention(p)]
    with tap(teacher, hidden=hidden, attentions=maps) as taps:
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return TeacherOutput(logits, taps.hidden, taps.attentions)


class Distiller(nn.Module):
    """Student + projections. ``forward`` returns the weighted loss with every term unweighted beside it.

    ``pairs`` is empty for runs without feature terms (``kd_logits``, ``no_kd``, teacher fine-tuning).
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
        with tap(self.student, hidden=hidden, attentions=maps) as taps:
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
        return combine(terms, weights)
