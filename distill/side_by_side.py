"""Speed of several models measured side by side: one process, the same host, threads, inputs and lengths,
the models timed alternately, round after round, so that drift and foreign load hit them all alike.

Each round times one forward pass of every model at every batch size (the order rotating between rounds);
rounds go on until every median is stable or the time cap is reached. The result carries each model's latency
median and p10-p90, throughput and peak memory, and what the machine did meanwhile: its load average and the
CPU that other processes used, flagged when that was heavy. Ratios (× faster) are only meaningful between the
models of one measurement.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from distill.config import ConfigError
from distill.memory import peak_rss, reset_peak
from distill.metrics import LATENCY_BATCH_SIZES, count_parameters, measure_latency
from distill.teachers import is_causal_lm, load_causal_lm, load_config, resolve_source

# other processes using this many cores on average during the measurement make it "taken under heavy load"
HEAVY_FOREIGN_CORES = 0.5
DEFAULT_SEQ_LEN = 128
Tick = Callable[[str, int], None]


def no_tick(name: str, batch_size: int) -> None:
    """The default ``tick``: nobody watches."""


@dataclass(frozen=True)
class Timing:
    """Latency of one model at one batch size over the rounds: median and p10-p90 in ms, sequences per second
    at the median, and how many passes were timed."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    throughput: float
    samples: int


@dataclass(frozen=True)
class ModelSpeed:
    """One model of a measurement: its name, source, parameters, peak memory (weights plus the activations of
    its largest batch, MB) and its timing per batch (``bs1``, ``bs32``)."""

    name: str
    source: str
    params: int
    peak_mb: float | None
    latency: dict[str, Timing]


@dataclass(frozen=True)
class SideBySide:
    """A measurement of several models side by side, and the conditions it was taken in."""

    models: list[ModelSpeed]
    host: str
    threads: int
    seq_len: int
    rounds: int
    stable: bool
    seconds: float
    cpus: int
    load_before: float
    load_max: float
    foreign_cores: float

    @property
    def heavy_load(self) -> bool:
        """Other processes used at least ``HEAVY_FOREIGN_CORES`` cores on average while this ran."""
        return self.foreign_cores >= HEAVY_FOREIGN_CORES

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"heavy_load": self.heavy_load}


def load_for_timing(source: str) -> PreTrainedModel:
    """A model folder (an export, a teacher source) as it is served: a causal LM or a sequence classifier on
    SDPA attention, in float32, in eval mode. A classifier's head need not match any labels: only its speed
    counts."""
    config = load_config(source)
    if is_causal_lm(config):
        model = load_causal_lm(source, attentions=False)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_source(source), attn_implementation="sdpa", dtype=torch.float32
        )
    return model.eval()


class _ForeignCpu:
    """CPU time the machine spent outside this process since ``start``, in cores (from /proc/stat and our own
    times: immediate, where the load average lags a minute behind)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.start = time.monotonic()
        self.busy, self.own = self._busy(), self._own()
        self.load_before = os.getloadavg()[0]
        self.load_max = self.load_before

    def _busy(self) -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def _own(self) -> float:
        t = self.process.cpu_times()
        return t.user + t.system

    def sample(self) -> None:
        self.load_max = max(self.load_max, os.getloadavg()[0])

    def cores(self) -> float:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return max(0.0, ((self._busy() - self.busy) - (self._own() - self.own)) / elapsed)


def _stable(medians: list[dict[str, float]], tolerance: float, patience: int) -> bool:
    """Every median moved by at most ``tolerance`` (relative) in each of the last ``patience`` rounds."""
    if len(medians) <= patience:
        return False
    recent = medians[-patience - 1 :]
    return all(
        abs(now[key] - before[key]) <= tolerance * now[key] for before, now in itertools.pairwise(recent) for key in now
    )


def _timing(samples_ms: list[float], batch_size: int) -> Timing:
    t = np.asarray(samples_ms)
    median = float(np.median(t))
    return Timing(
        median_ms=median,
        p10_ms=float(np.percentile(t, 10)),
        p90_ms=float(np.percentile(t, 90)),
        throughput=batch_size / (median / 1000.0),
        samples=len(t),
    )


def _peak_mb(model: torch.nn.Module, run: Callable[[], Any]) -> float | None:
    """Weights and buffers plus the resident growth of one ``run()`` (its activations), in MB; None where the
    peak cannot be reset (not Linux)."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    try:
        before = reset_peak()
    except OSError:
        return None
    run()
    return (weights + max(0, peak_rss() - before)) / 1e6


def measure_side_by_side(
    sources: Sequence[tuple[str, str]],
    *,
    seq_len: int | None = None,
    batch_sizes: Sequence[int] = LATENCY_BATCH_SIZES,
    threads: int | None = None,
    warmup: int = 2,
    min_rounds: int = 5,
    max_rounds: int = 200,
    time_cap_s: float = 120.0,
    tolerance: float = 0.02,
    patience: int = 3,
    tick: Tick = no_tick,
) -> SideBySide:
    """Load every ``(name, source)`` and time them alternately in this process (see the module's docstring).

    All models get the same seeded inputs of ``seq_len`` tokens (default: ``DEFAULT_SEQ_LEN``, or fewer if a
    model has fewer positions; ids below the smallest vocabulary) at each batch size, with ``threads`` torch
    threads (default: the current count); a causal LM is timed as the prefill of generation
    (``logits_to_keep=1``, as ``distill.metrics.efficiency_report`` does). Rounds stop after ``min_rounds``
    once the medians are stable (``tolerance``, ``patience``), at ``max_rounds``, or when ``time_cap_s`` has
    passed. ``tick(name, batch_size)`` follows each timed pass.
    """
    if len(sources) < 2:
        raise ConfigError.one("models", f"need at least two models to compare, got {len(sources)}")
    if len({name for name, _ in sources}) < len(sources):
        raise ConfigError.one("models", "each model needs a name of its own")
    if threads is not None and threads < 1:
        raise ConfigError.one("threads", f"must be at least 1, got {threads}")
    if min_rounds < 1 or max_rounds < min_rounds or warmup < 0 or not batch_sizes:
        raise ValueError(f"need 1 <= min_rounds <= max_rounds and warmup >= 0, got {min_rounds}, {max_rounds}")
    models = {name: load_for_timing(source) for name, source in sources}
    lms = {is_causal_lm(m.config) for m in models.values()}
    if len(lms) > 1:
        raise ConfigError.one("models", "cannot compare causal LMs with classifiers: give models of one task")
    kwargs = {"logits_to_keep": 1} if lms.pop() else None
    vocab = min(m.config.vocab_size for m in models.values())
    positions = min(getattr(m.config, "max_position_embeddings", None) or DEFAULT_SEQ_LEN for m in models.values())
    if seq_len is None:
        seq_len = min(DEFAULT_SEQ_LEN, positions)
    elif seq_len < 1:
        raise ConfigError.one("seq_len", f"must be at least 1, got {seq_len}")
    elif seq_len > positions:
        raise ConfigError.one("seq_len", f"{seq_len} tokens is more than the models' {positions} positions")
    threads = threads or torch.get_num_threads()

    def timed(name: str, bs: int, repeats: int = 1, warm: int = 0) -> float:
        lat = measure_latency(models[name], bs, seq_len, vocab, repeats, warm, threads, kwargs)
        return lat.median_ms

    names = list(models)
    for bs in batch_sizes:
        for name in names:
            timed(name, bs, warm=warmup)
    foreign = _ForeignCpu()
    times: dict[tuple[str, int], list[float]] = {(n, bs): [] for n in names for bs in batch_sizes}
    medians: list[dict[str, float]] = []
    rounds, stable = 0, False
    while rounds < max_rounds:
        order = names[rounds % len(names) :] + names[: rounds % len(names)]  # nobody always goes first
        for bs in batch_sizes:
            for name in order:
                times[name, bs].append(timed(name, bs))
                tick(name, bs)
        rounds += 1
        foreign.sample()
        medians.append({f"{n}/{bs}": float(np.median(t)) for (n, bs), t in times.items()})
        stable = rounds >= min_rounds and _stable(medians, tolerance, patience)
        if stable or (rounds >= min_rounds and time.monotonic() - foreign.start >= time_cap_s):
            break
    seconds, foreign_cores = time.monotonic() - foreign.start, foreign.cores()
    largest = max(batch_sizes)
    speeds = []
    for name, source in sources:
        latency = {f"bs{bs}": _timing(times[name, bs], bs) for bs in batch_sizes}
        peak = _peak_mb(models[name], lambda name=name: timed(name, largest))
        speeds.append(ModelSpeed(name, source, count_parameters(models[name]), peak, latency))
    return SideBySide(
        models=speeds,
        host=socket.gethostname(),
        threads=threads,
        seq_len=seq_len,
        rounds=rounds,
        stable=stable,
        seconds=seconds,
        cpus=psutil.cpu_count() or 1,
        load_before=foreign.load_before,
        load_max=foreign.load_max,
        foreign_cores=foreign_cores,
    )
