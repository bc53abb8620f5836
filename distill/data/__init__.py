"""Text data for the engine: sources, the fixed split, encoding, and unlabelled text for causal LMs.

May import ``distill.config`` and ``distill.losses`` (for ``IGNORE_INDEX``); nothing from ``jobs`` or Django.
"""

from distill.data.sources import (
    PACKAGED,
    SPLITS,
    EncodedSplit,
    Split,
    TextClassificationData,
    TextData,
    collate,
    collate_lm,
    encode,
    encode_lm,
    load_data,
    load_text_data,
    preview,
)

__all__ = [
    "PACKAGED",
    "SPLITS",
    "EncodedSplit",
    "Split",
    "TextClassificationData",
    "TextData",
    "collate",
    "collate_lm",
    "encode",
    "encode_lm",
    "load_data",
    "load_text_data",
    "preview",
]
