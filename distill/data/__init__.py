"""Text data for the engine: sources read into one table, the fixed split, encoding, and causal LM text.

May import ``distill.config`` and ``distill.losses`` (for ``IGNORE_INDEX``); nothing from ``jobs`` or Django.
"""

from distill.data.encoding import EncodedSplit, collate, encode
from distill.data.lm_text import TextData, TokenWindows, collate_lm, encode_lm, load_text_data
from distill.data.packaged import PACKAGED
from distill.data.splitting import SPLIT_SEED, Split, TextClassificationData, load_data, preview
from distill.data.table import SPLITS, RawSet

__all__ = [
    "PACKAGED",
    "SPLITS",
    "SPLIT_SEED",
    "EncodedSplit",
    "RawSet",
    "Split",
    "TextClassificationData",
    "TextData",
    "TokenWindows",
    "collate",
    "collate_lm",
    "encode",
    "encode_lm",
    "load_data",
    "load_text_data",
    "preview",
]
