"""Capture the hidden states and attention maps of chosen layers only.

``output_hidden_states``/``output_attentions`` make transformers keep every layer's tensors; a MiniLM
teacher at batch 32 x 128 holds 25 MB per unused attention map. Forward hooks on the mapped blocks keep
just what the loss needs. The hooks are found through the model's own ``_can_record_outputs`` table
(the classes transformers records outputs from), so any architecture that supports output capturing works.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel


def _recorded(model: PreTrainedModel, key: str) -> tuple[type[nn.Module], int]:
    spec = model._can_record_outputs[key]
    if isinstance(spec, list | tuple):
        spec = spec[0]
    if isinstance(spec, type):
        return spec, 0 if key == "hidden_states" else 1
    return spec.target_class, spec.index


def blocks(model: PreTrainedModel) -> list[nn.Module]:
    """The transformer blocks of a model, in order."""
    cls, _ = _recorded(model, "hidden_states")
    return [m for m in model.modules() if isinstance(m, cls)]


def block_prefixes(model: PreTrainedModel) -> list[str]:
    """State-dict prefixes of the blocks, e.g. ``bert.encoder.layer.3.``."""
    cls, _ = _recorded(model, "hidden_states")
    return [f"{name}." for name, m in model.named_modules() if isinstance(m, cls)]


def _attention_modules(model: PreTrainedModel) -> tuple[list[nn.Module], int]:
    cls, index = _recorded(model, "attentions")
    return [m for m in model.modules() if isinstance(m, cls)], index


def _first(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


@dataclass
class Taps:
    """Tensors captured during one forward pass: layer index -> (B, L, d) or (B, h, L, L)."""

    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    attentions: dict[int, torch.Tensor] = field(default_factory=dict)


@contextmanager
def tap(model: PreTrainedModel, hidden: Iterable[int] = (), attentions: Iterable[int] = ()) -> Iterator[Taps]:
    """Record the outputs of the given layers (0 = embeddings, i = block i) while the context is open.

    Attention maps are returned only by the eager attention implementation; asking for them from a
    model loaded with SDPA raises, instead of silently training without the term.
    """
    taps, handles = Taps(), []
    layer_blocks = blocks(model)
    for layer in set(hidden):
        if layer == 0:  # the embedding output is the first block's input

            def pre(_m, args, kwargs):
                taps.hidden[0] = args[0] if args else kwargs["hidden_states"]

            handles.append(layer_blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
        else:

            def post(_m, _args, output, layer=layer):
                taps.hidden[layer] = _first(output)

            handles.append(layer_blocks[layer - 1].register_forward_hook(post))
    wanted = set(attentions)
    if wanted:
        modules, index = _attention_modules(model)
        for layer in wanted:

            def att(_m, _args, output, layer=layer):
                if output[index] is None:
                    raise RuntimeError("attention maps need attn_implementation='eager'")
                taps.attentions[layer] = output[index]

            handles.append(modules[layer - 1].register_forward_hook(att))
    try:
        yield taps
    finally:
        for h in handles:
            h.remove()
