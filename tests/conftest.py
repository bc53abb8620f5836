"""Shared fixtures: tiny real transformers models and a tiny real data set, built offline in seconds."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

POSITIVE = ["good", "great", "fine", "superb", "lovely", "moving", "funny", "smart"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "weak", "messy", "silly"]
NEUTRAL = ["the", "a", "film", "movie", "plot", "cast", "was", "is", "very", "quite", "story", "and"]
LABELS = ("neg", "pos")


def _tokenizer() -> BertTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)})


def tiny_bert_config(vocab_size: int, **overrides) -> BertConfig:
    shape = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64)
    return BertConfig(vocab_size=vocab_size, max_position_embeddings=64, **{**shape, **overrides})


def write_model(folder: Path, head: bool, seed: int = 0, **config) -> Path:
    """A tiny random BERT (with or without a 2-label head) and its tokenizer, saved like a real model; ``config``
    overrides its BertConfig (``hidden_dropout_prob=0.0``)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {k: i for i, k in enumerate(LABELS)}}
    config = tiny_bert_config(len(tokenizer), **labels, **config)
    model = BertForSequenceClassification(config) if head else BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_reviews(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """A learnable toy sentiment set: the label is which word list dominates the text."""
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        for i in range(rows):
            label = LABELS[i % 2]
            words = POSITIVE if label == "pos" else NEGATIVE
            text = [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 10))] + rng.sample(words, 2)
            rng.shuffle(text)
            writer.writerow([" ".join(text), label])
    return path


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Paths of a tiny fine-tuned teacher, a tiny backbone (no head) and a toy CSV."""
    root = tmp_path_factory.mktemp("assets")
    return {
        "teacher": write_model(root / "teacher", head=True),
        "backbone": write_model(root / "backbone", head=False),
        "reviews": write_reviews(root / "reviews.csv"),
    }


@pytest.fixture
def base_config(assets, tmp_path) -> dict:
    """A valid kd_feature config for the tiny teacher, as a plain dict tests can edit."""
    return {
        "kind": "kd_feature",
        "seed": 3,
        "teacher": {"source": str(assets["teacher"])},
        "student": {"layers": 2, "layer_map": "uniform"},
        "data": {
            "source": str(assets["reviews"]),
            "text_column": "review",
            "label_column": "sentiment",
            "max_length": 24,
        },
        "optim": {"batch_size": 8, "max_steps": 6, "lr": 1e-3},
        "output_dir": str(tmp_path / "run"),
        "checkpoint_every": 1000,
        "latency_repeats": 2,
        "eval_batch_size": 32,
    }


# --- a tiny causal LM (Llama with grouped-query attention) and text for it ---------------------------

LM_WORDS = NEUTRAL + POSITIVE + NEGATIVE + ["news", "market", "shares", "rose", "fell", "today", "minister", "said"]


def write_documents(path: Path, documents: int = 60, seed: int = 0) -> Path:
    """Documents separated by blank lines, from a seeded word-level Markov chain (learnable, not random)."""
    rng = random.Random(seed)
    follow = {w: rng.sample(LM_WORDS, 3) for w in LM_WORDS}
    blocks = []
    for _ in range(documents):
        word, words = rng.choice(LM_WORDS), []
        for _ in range(rng.randint(20, 60)):
            words.append(word)
            word = rng.choice(follow[word])
        blocks.append(" ".join(words) + ".")
    path.write_text("\n\n".join(blocks) + "\n")
    return path


def lm_tokenizer(corpus: Path, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on ``corpus`` (GPT-2 style, like SmolLM2's), as a fast tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train(
        [str(corpus)], vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )


def tiny_llama_config(vocab_size: int, **overrides):
    """4 blocks of width 64 with 4 query heads sharing 2 key/value heads (grouped-query attention)."""
    from transformers import LlamaConfig

    shape = dict(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128
    )
    return LlamaConfig(
        vocab_size=vocab_size, max_position_embeddings=128, tie_word_embeddings=True, **{**shape, **overrides}
    )


def write_llama(folder: Path, corpus: Path, seed: int = 0, **overrides) -> Path:
    """A tiny random Llama causal LM and its tokenizer, saved like a real model."""
    import torch
    from transformers import LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = lm_tokenizer(corpus)
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer), **overrides)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def lm_assets(tmp_path_factory) -> dict[str, Path]:
    """Paths of a toy text corpus (.txt, documents separated by blank lines) and a tiny Llama teacher."""
    root = tmp_path_factory.mktemp("lm_assets")
    corpus = write_documents(root / "corpus.txt")
    return {"corpus": corpus, "teacher": write_llama(root / "llama", corpus)}


@pytest.fixture
def lm_config(lm_assets, tmp_path) -> dict:
    """A valid causal-LM kd_feature config for the tiny Llama teacher, as a plain dict tests can edit."""
    return {
        "kind": "kd_feature",
        "task": "causal_lm",
        "seed": 3,
        "teacher": {"source": str(lm_assets["teacher"])},
        "student": {"layers": 2},
        "data": {"source": str(lm_assets["corpus"]), "max_length": 32},
        "optim": {"batch_size": 8, "max_steps": 6, "lr": 1e-3},
        "generation": {"samples": 4, "prompt_tokens": 8, "new_tokens": 6},
        "output_dir": str(tmp_path / "run"),
        "checkpoint_every": 1000,
        "latency_repeats": 1,
        "eval_batch_size": 16,
    }
