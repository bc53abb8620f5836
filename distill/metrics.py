"""Task and efficiency metrics: what a student keeps of its teacher's quality, and what it saves.

Task metrics wrap scikit-learn and scipy so every report (GLUE-style accuracy/F1/MCC, Pearson/Spearman)
uses the reference definitions; for causal LMs, perplexity on held-out text and a continuation task
scored by sacrebleu's BLEU, rouge-score's ROUGE-L and jiwer's CER. Efficiency metrics count the
parameters a deployed student carries, the bytes of its exported weights and its CPU forward latency;
the ratios at the bottom turn a teacher/student pair into the numbers a comparison table shows
(retention, ×smaller, ×faster).

The loops that take long (evaluation batches, generation batches, timed passes) call their ``tick`` after
each unit of work: the trainer reports progress through it, and stops a run by raising from it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

INPUT_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
Tick = Callable[[], None]


def no_tick() -> None:
    """The default ``tick``: nobody watches."""


def classification_metrics(
    predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray, num_labels: int
) -> dict[str, float]:
    """Accuracy, F1 and Matthews correlation of predicted class ids against gold ones.

    F1 is the positive class's (class 1) for binary tasks, as GLUE reports it, and macro-averaged
    over the classes present otherwise.
    """
    y_pred, y_true = np.asarray(predictions), np.asarray(labels)
    if y_pred.shape != y_true.shape or y_true.size == 0:
        raise ValueError(f"need equal, non-empty predictions and labels, got {y_pred.shape} and {y_true.shape}")
    average = "binary" if num_labels == 2 else "macro"
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # zero_division=0: a class never predicted scores 0 instead of warning on every small eval set
        "f1": float(f1_score(y_true, y_pred, average=average, zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
    }


def regression_metrics(
    predictions: Sequence[float] | np.ndarray, targets: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Pearson and Spearman correlation of predicted against gold scores (STS-B style)."""
    x, y = np.asarray(predictions, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64).ravel()
    return {
        "pearson": float(stats.pearsonr(x, y).statistic),
        "spearman": float(stats.spearmanr(x, y).statistic),
    }


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    device: torch.device | str = "cpu",
    tick: Tick = no_tick,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a sequence classifier over ``loader``: ``(logits (N, C) float32, labels (N,))``.

    Batches are dicts with ``input_ids``, ``attention_mask`` (and optionally ``token_type_ids``) and
    ``labels``; the model runs in eval mode and gets its previous mode back afterwards.
    """
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in loader:
            inputs = {k: batch[k].to(device) for k in INPUT_KEYS if k in batch}
            logits.append(model(**inputs).logits.float().cpu())
            labels.append(batch["labels"].cpu())
            tick()
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError("the loader yielded no batches")
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def evaluate_classifier(
    model: torch.nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    num_labels: int,
    device: torch.device | str = "cpu",
    tick: Tick = no_tick,
) -> dict[str, float]:
    """:func:`classification_metrics` of the argmax predictions, plus ``loss``: the mean cross-entropy."""
    logits, labels = predict(model, loader, device, tick)
    metrics = classification_metrics(logits.argmax(axis=-1), labels, num_labels)
    metrics["loss"] = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long()))
    return metrics


@torch.inference_mode()
def evaluate_lm(
    model: torch.nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    device: torch.device | str = "cpu",
    tick: Tick = no_tick,
) -> dict[str, float]:
    """``nll``: mean next-token negative log-likelihood over the real tokens of ``loader`` (batches from
    :func:`~distill.data.collate_lm`), and ``perplexity`` = exp(nll). The LM head runs in chunks, so an
    evaluation batch never holds its (B, L, V) logits."""
    from distill.distiller import lm_backbone
    from distill.losses import lm_nll_sum, next_token_targets

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            keep, targets = next_token_targets(batch["labels"])
            hidden = lm_backbone(model, batch)[:, :-1][keep]
            total += float(lm_nll_sum(hidden, model.get_output_embeddings(), targets))
            tokens += len(targets)
            tick()
    finally:
        model.train(was_training)
    if not tokens:
        raise ValueError("the loader yielded no token to predict")
    nll = total / tokens
    return {"perplexity": math.exp(nll), "nll": nll}


def continuation_samples(
    texts: Iterable[str], tokenizer: Any, prompt_tokens: int, new_tokens: int, samples: int
) -> tuple[list[list[int]], list[str]]:
    """Prompts (the first ``prompt_tokens`` token ids of a text) and references (its next ``new_tokens``
    tokens, decoded), from the first ``samples`` texts long enough for both."""
    prompts, references = [], []
    for text in texts:
        ids = tokenizer(text, verbose=False)["input_ids"]
        reference = tokenizer.decode(ids[prompt_tokens : prompt_tokens + new_tokens], skip_special_tokens=True)
        if len(ids) < prompt_tokens + new_tokens or not reference.strip():
            continue
        prompts.append(ids[:prompt_tokens])
        references.append(reference)
        if len(prompts) == samples:
            break
    return prompts, references


def text_similarity(hypotheses: Sequence[str], references: Sequence[str], metrics: Iterable[str]) -> dict[str, float]:
    """Corpus BLEU (sacrebleu, 0-100), mean ROUGE-L F-measure (rouge-score, 0-1) and CER (jiwer,
    character edits / reference characters) of ``hypotheses`` against ``references``."""
    import jiwer
    import sacrebleu
    from rouge_score import rouge_scorer

    out: dict[str, float] = {}
    wanted = set(metrics)
    if "bleu" in wanted:
        out["bleu"] = float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
    if "rouge_l" in wanted:
        scorer = rouge_scorer.RougeScorer(["rougeL"])
        scores = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references, strict=True)]
        out["rouge_l"] = float(np.mean(scores))
    if "cer" in wanted:
        out["cer"] = float(jiwer.cer(list(references), list(hypotheses)))
    return out


@torch.inference_mode()
def generation_metrics(
    model: Any,
    tokenizer: Any,
    texts: Iterable[str],
    *,
    prompt_tokens: int,
    new_tokens: int,
    samples: int,
    metrics: Iterable[str],
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    tick: Tick = no_tick,
) -> dict[str, float]:
    """Greedy continuations of held-out texts scored by :func:`text_similarity`.

    Every prompt has exactly ``prompt_tokens`` tokens, so batches need no padding; exactly
    ``new_tokens`` tokens are generated (end-of-text suppressed) so every hypothesis is as long as its
    reference.
    """
    prompts, references = continuation_samples(texts, tokenizer, prompt_tokens, new_tokens, samples)
    if not prompts:
        raise ValueError(f"no held-out text has {prompt_tokens} + {new_tokens} tokens for the continuation task")
    was_training = model.training
    model.eval()
    hypotheses: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            ids = torch.tensor(prompts[i : i + batch_size], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            hypotheses += tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
            tick()
    finally:
        model.train(was_training)
    return text_similarity(hypotheses, references, metrics)


def count_parameters(model: torch.nn.Module, exclude_prefixes: tuple[str, ...] = ("projections.",)) -> int:
    """Unique parameters of ``model`` (tied weights once), leaving out names under ``exclude_prefixes``.

    The default drops the learned KD projections, which are trained alongside the student but not
    exported with it.
    """
    seen: set[int] = set()
    total = 0
    # remove_duplicate=False: a weight shared with a projection must still count under its student name
    for name, param in model.named_parameters(remove_duplicate=False):
        if name.startswith(exclude_prefixes) or param.data_ptr() in seen:
            continue
        seen.add(param.data_ptr())  # by storage, so separate Parameter objects over one tensor count once
        total += param.numel()
    return total


def weights_bytes(folder: str | Path) -> int:
    """Total size of the ``*.safetensors`` files (all shards) in an exported model folder."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        # a silent 0 would read as "infinitely small" in a size comparison
        raise FileNotFoundError(f"no .safetensors files in {folder}")
    return sum(f.stat().st_size for f in files)


@dataclass(frozen=True)
class Latency:
    """Forward-pass latency of one input shape; ``throughput`` is sequences per second at the median."""

    batch_size: int
    seq_len: int
    threads: int
    median_ms: float
    p90_ms: float
    throughput: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure_latency(
    model: torch.nn.Module,
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    forward_kwargs: dict[str, Any] | None = None,
    tick: Tick = no_tick,
) -> Latency:
    """Time ``repeats`` forward passes on seeded random ``input_ids`` with a full attention mask.

    Runs under inference mode with the model in eval mode; ``threads`` sets torch's intra-op thread
    count for the measurement only. Training mode and thread count are restored afterwards.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    device = next(model.parameters()).device
    # seeded so teacher and student see the same inputs; token content barely matters for timing
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(vocab_size, (batch_size, seq_len), generator=generator).to(device)
    attention_mask = torch.ones_like(input_ids)
    was_training, previous_threads = model.training, torch.get_num_threads()
    model.eval()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        times_ms = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(input_ids=input_ids, attention_mask=attention_mask, **(forward_kwargs or {}))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # kernels are async: wait before stopping the clock
                if i >= warmup:
                    times_ms.append((time.perf_counter() - start) * 1000.0)
                tick()
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    median_ms = float(np.median(times_ms))
    return Latency(
        batch_size=batch_size,
        seq_len=seq_len,
        threads=used_threads,
        median_ms=median_ms,
        p90_ms=float(np.percentile(times_ms, 90)),
        throughput=batch_size / (median_ms / 1000.0),
    )


LATENCY_BATCH_SIZES = (1, 32)


def latency_warmup(repeats: int) -> int:
    """As many warm-up passes as timed ones, up to 3: a single timed pass of a big model stays cheap."""
    return min(3, repeats)


def efficiency_report(
    model: torch.nn.Module,
    vocab_size: int,
    seq_len: int = 128,
    batch_sizes: Sequence[int] = LATENCY_BATCH_SIZES,
    repeats: int = 20,
    causal_lm: bool = False,
    tick: Tick = no_tick,
) -> dict[str, Any]:
    """Parameter count and latency per batch size: ``{"params": n, "latency": {"bs1": {...}, ...}}``.

    A causal LM is timed as the prefill of generation: the whole sequence through the blocks and the
    LM head for the last position only (``logits_to_keep=1``), which is what serving a prompt costs;
    (B, L, V) logits would dominate time and memory without being used.
    """
    kwargs = {"logits_to_keep": 1} if causal_lm else None
    return {
        "params": count_parameters(model),
        "latency": {
            f"bs{bs}": measure_latency(
                model,
                bs,
                seq_len,
                vocab_size,
                repeats=repeats,
                warmup=latency_warmup(repeats),
                forward_kwargs=kwargs,
                tick=tick,
            ).as_dict()
            for bs in batch_sizes
        },
    }


def _ratio(numerator: float, denominator: float, name: str) -> float:
    if denominator == 0:
        raise ValueError(f"{name} is 0: the ratio is undefined")
    return float(numerator) / float(denominator)


def retention(student: float, teacher: float) -> float:
    """Share of the teacher's score the student keeps (student / teacher)."""
    return _ratio(student, teacher, "teacher score")


def compression(teacher_params: int, student_params: int) -> float:
    """How many times smaller the student is (teacher / student parameters)."""
    return _ratio(teacher_params, student_params, "student parameter count")


def speedup(teacher_ms: float, student_ms: float) -> float:
    """How many times faster the student is (teacher / student latency)."""
    return _ratio(teacher_ms, student_ms, "student latency")
