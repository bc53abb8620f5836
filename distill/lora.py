"""LoRA teacher fine-tuning with peft: which layers to adapt, wrapping a model, merging at export."""

from __future__ import annotations

from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

from distill.config import ConfigError


def default_target_modules(model_type: str) -> tuple[str, ...]:
    """The linear layers peft adapts by default for ``model_type`` (the attention's query and value
    projections for BERT and Llama: ``("query", "value")``, ``("q_proj", "v_proj")``)."""
    try:
        return tuple(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
    except KeyError:
        raise ConfigError.one(
            "lora.target_modules", f"no default for model type {model_type!r}: name the layers to adapt"
        ) from None
