"""Which student layer learns from which teacher layer.

Layer 0 is the embedding output and layer ``i`` the output of transformer block ``i`` (the indexing of
transformers' ``hidden_states``), so a 6-layer teacher has layers 0..6. Attention maps exist for blocks
only: a pair that touches layer 0 contributes to the feature term alone.

Strategies: ``uniform`` maps student block i to teacher block round(i * T / S) (TinyBERT's every k-th),
``last`` maps the last blocks only, and a custom list of pairs is taken as given, after validation.
"""

from __future__ import annotations

from distill.config import ConfigError, LayerPair, StudentConfig

OUT_OF_RANGE = "{side} layer {index} out of range 0..{depth}"
DUPLICATE_STUDENT = "student layer {index} is mapped twice"
EMPTY_MAP = "the layer map has no pairs"


def uniform_pairs(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student block i -> teacher block round(i*T/S): 3 of 6 gives (1,2), (2,4), (3,6)."""
    return [(i, int(i * teacher_layers / student_layers + 0.5)) for i in range(1, student_layers + 1)]


def spread_blocks(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student block i -> teacher block to copy, evenly spaced from the first to the last (DistilBERT's
    choice): 3 of 6 gives (1,1), (2,4), (3,6). Each lies within the span of teacher blocks the uniform
    map asks student block i to replace; the first is always kept, as a causal LM without it starts at a
    perplexity of 2×10⁶ instead of 4×10⁴ (SmolLM2, 20 of 30 blocks)."""
    if student_layers == 1:
        return [(1, teacher_layers)]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [(i, 1 + int((i - 1) * step + 0.5)) for i in range(1, student_layers + 1)]


def resolve_layer_map(student: StudentConfig, teacher_layers: int) -> tuple[LayerPair, ...]:
    """The concrete, validated pairs for a student config and a teacher depth."""
    if isinstance(student.layer_map, tuple):
        pairs = student.layer_map
    else:
        raw = (
            uniform_pairs(student.layers, teacher_layers)
            if student.layer_map == "uniform"
            else [(student.layers, teacher_layers)]
        )
        if student.map_embeddings:
            raw.insert(0, (0, 0))
        pairs = tuple(LayerPair(student=s, teacher=t) for s, t in raw)
    errors = layer_map_errors(pairs, student.layers, teacher_layers)
    if errors:
        raise ConfigError(errors)
    return pairs


def layer_map_errors(pairs: tuple[LayerPair, ...], student_layers: int, teacher_layers: int) -> list[tuple[str, str]]:
    """Every problem with ``pairs``, as ``(field, message)``; empty when the map is usable."""
    if not pairs:
        return [("student.layer_map", EMPTY_MAP)]
    errors: list[tuple[str, str]] = []
    seen: set[int] = set()
    for i, pair in enumerate(pairs):
        field = f"student.layer_map[{i}]"
        if pair.student > student_layers:
            errors.append((field, OUT_OF_RANGE.format(side="student", index=pair.student, depth=student_layers)))
        if pair.teacher > teacher_layers:
            errors.append((field, OUT_OF_RANGE.format(side="teacher", index=pair.teacher, depth=teacher_layers)))
        if pair.student in seen:
            errors.append((field, DUPLICATE_STUDENT.format(index=pair.student)))
        seen.add(pair.student)
    return errors


def projection_key(pair: LayerPair) -> str:
    """Name of a pair's projection in the distiller's ModuleDict."""
    return f"s{pair.student}_t{pair.teacher}"


def has_attention(pair: LayerPair) -> bool:
    """Embedding outputs have no attention map."""
    return pair.student > 0 and pair.teacher > 0


def describe(pairs: tuple[LayerPair, ...]) -> str:
    """A small text drawing of the map, for the CLI."""
    lines = []
    for p in pairs:
        name = "embeddings" if p.student == 0 else f"block {p.student}"
        tname = "embeddings" if p.teacher == 0 else f"block {p.teacher}"
        att = f"  attention w={p.attention_weight:g}" if has_attention(p) else ""
        lines.append(f"student {name:>11} <- teacher {tname:<11} feature w={p.feature_weight:g}{att}")
    return "\n".join(lines)
