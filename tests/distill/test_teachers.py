"""Teachers: a causal-LM teacher described from its config, and the teacher dtype of a frozen classifier."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from distill.config import parse_config
from distill.teachers import inspect_teacher


def test_it_describes_a_llama_teacher_with_its_lm_head(lm_assets):
    arch = inspect_teacher(str(lm_assets["teacher"]))
    model = AutoModelForCausalLM.from_pretrained(lm_assets["teacher"])
    assert (arch.model_type, arch.layers, arch.hidden_size, arch.heads, arch.kv_heads) == ("llama", 4, 64, 4, 2)
    assert arch.params == sum(p.numel() for p in model.parameters())  # the tied head counts once
    assert arch.labels == ()


def test_teacher_dtype_applies_to_a_frozen_classifier_not_to_one_being_finetuned(assets, lm_assets):
    from distill.teachers import load_teacher

    cfg = parse_config(
        {
            "kind": "kd_logits",
            "teacher": {"source": str(assets["teacher"]), "dtype": "bfloat16"},
            "student": {"layers": 2},
            "data": {"source": str(assets["reviews"])},
        }
    )
    assert load_teacher(cfg, ("neg", "pos"), attentions=False).dtype == torch.bfloat16
    assert load_teacher(cfg, ("neg", "pos"), attentions=False, trainable=True).dtype == torch.float32
