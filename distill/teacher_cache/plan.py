"""Which cache a run reads, and getting it: look it up, or build it once while other processes wait.

The front ends call :func:`plan_for_config` (what a config's cache is, from the config, tokenizer and data;
no weights), :func:`status` (is it there: size, who built it, when) and :func:`build_for_config` (build it,
e.g. as a study's first task); the trainer calls :func:`plan_cache`, :func:`lookup` and :func:`ensure` with the
split and models it has already built.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel

from distill.config import KD_KINDS, LayerPair, RunConfig
from distill.layer_map import has_attention
from distill.metrics import Tick, no_tick
from distill.teacher_cache.build import build_shards, build_units, cache_bytes
from distill.teacher_cache.key import CacheKey, Keep, examples_digest, folder_digest
from distill.teacher_cache.read import CachedTeacher
from distill.teacher_cache.store import (
    Manifest,
    building_folder,
    list_caches,
    locked,
    publish,
    read_manifest,
    verified,
)


@dataclass(frozen=True)
class CachePlan:
    """A run's cache: where caches live (``root``), its key, and what it keeps."""

    root: Path
    key: CacheKey
    keep: Keep

    @property
    def folder(self) -> Path:
        return self.root / self.key.key


def keep_for(
    cfg: RunConfig, pairs: tuple[LayerPair, ...], attentions: bool, student_heads: int, teacher_heads: int
) -> Keep:
    """What a run's losses read from the teacher: the pairs' hidden states, their attention maps in the student's
    head grouping (``loss.head_mapping``; a count that does not divide falls back to the head average, as
    :func:`~distill.losses.group_teacher_heads` does), and the logits, or a causal LM's top-k."""
    groups = student_heads if cfg.loss.head_mapping == "group" and teacher_heads % student_heads == 0 else 1
    lm = cfg.task == "causal_lm"
    return Keep(
        logits=not lm,
        hidden=tuple(sorted({p.teacher for p in pairs})),
        attention=tuple(sorted({(p.teacher, groups) for p in pairs if attentions and has_attention(p)})),
        top_k=(cfg.loss.top_k, cfg.loss.temperature) if lm else None,
    )


def _examples(split: Dataset) -> list[list[int]]:
    return [split[i]["input_ids"] for i in range(len(split))]


def plan_cache(cfg: RunConfig, split: Dataset, keep: Keep) -> CachePlan | None:
    """The cache of a distillation run over ``split`` (its encoded training split), or None when the run reads
    none: ``loss.teacher_cache: off``, a kind without a teacher, or a hub-id teacher (no files to fingerprint)."""
    from distill.teachers import resolve_source

    if cfg.kind not in KD_KINDS or cfg.loss.teacher_cache == "off":
        return None
    folder = Path(resolve_source(cfg.teacher.source))
    if not folder.is_dir():
        return None
    root = cfg.teacher_cache_dir
    key = CacheKey(
        teacher=folder_digest(folder, root),
        teacher_dtype=cfg.teacher.dtype,
        examples=examples_digest(_examples(split)),
        count=len(split),
        entries=keep.names(),
        dtype=cfg.loss.teacher_cache_dtype,
    )
    return CachePlan(root, key, keep)


def _serves(manifest: Manifest, plan: CachePlan) -> bool:
    return (
        manifest.base == plan.key.base
        and manifest.dtype == plan.key.dtype
        and set(plan.key.entries) <= set(manifest.entries)
    )


def status(plan: CachePlan) -> Manifest | None:
    """The manifest of a complete cache that serves ``plan`` (its own, or one keeping more of the same teacher
    outputs), without reading the shards' checksums: for a page that says whether it is cached."""
    own = verified(plan.folder, checksums=False)
    if own is not None and _serves(own, plan):
        return own
    return next((m for m in list_caches(plan.root) if _serves(m, plan)), None)


def lookup(plan: CachePlan) -> CachedTeacher | None:
    """The cache that serves ``plan``, opened, with every shard's checksum verified; None when there is none,
    or it is partial or corrupted (the next :func:`ensure` rebuilds it)."""
    candidates = [plan.key.key] + [m.key for m in list_caches(plan.root) if m.key != plan.key.key and _serves(m, plan)]
    for key in candidates:
        manifest = verified(plan.root / key)
        if manifest is not None and _serves(manifest, plan):
            return CachedTeacher(plan.root / key, manifest, plan.keep)
    return None


def wait_and_lookup(plan: CachePlan, on_wait: Callable[[], None] | None = None) -> CachedTeacher | None:
    """:func:`lookup` once no process is building this cache (``on_wait`` hears that one is)."""
    with locked(plan.root, plan.key.key, on_wait):
        return lookup(plan)


def ensure(
    plan: CachePlan,
    teacher: PreTrainedModel,
    split: Dataset,
    collate_fn: Callable[[list[dict]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    tick: Tick = no_tick,
    built_by: str = "",
    source: dict[str, str] | None = None,
) -> CachedTeacher:
    """The cache of ``plan``, built first when there is none: one process builds under the key's lock, the others
    wait for it and read what it built. ``tick`` after each teacher batch (:func:`build_units` of them)."""
    found = lookup(plan)
    if found is not None:
        return found
    with locked(plan.root, plan.key.key):
        found = lookup(plan)  # built by another process while this one waited
        if found is not None:
            return found
        started = time.perf_counter()
        tmp = building_folder(plan.root, plan.key.key)
        try:
            shards = build_shards(
                teacher, split, plan.keep, collate_fn, tmp, dtype=plan.key.dtype, batch_size=batch_size, tick=tick
            )
            Manifest(
                key=plan.key.key,
                base=plan.key.base,
                entries=list(plan.key.entries),
                dtype=plan.key.dtype,
                examples=len(split),
                shards=shards,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                built_by=built_by or socket.gethostname(),
                build_s=time.perf_counter() - started,
                source=source or {},
            ).save(tmp)
            publish(tmp, plan.folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        manifest = read_manifest(plan.folder)
    return CachedTeacher(plan.folder, manifest, plan.keep)


def source_labels(cfg: RunConfig) -> dict[str, str]:
    """The teacher and data of a config as a listing shows them: sources by name, a folder or file by its last
    part (no server paths)."""

    def label(source: str) -> str:
        return source if source.startswith(("package:", "packaged:", "hf:")) else Path(source).name

    return {"teacher": label(cfg.teacher.source), "data": label(cfg.data.source)}


@dataclass
class ConfigCache:
    """A config's cache plan with what building it needs: the encoded training split and its batch builder."""

    plan: CachePlan
    split: Dataset
    collate_fn: Callable[[list[dict]], dict[str, torch.Tensor]]
    labels: tuple[str, ...]
    disk_bytes: int  # what the cache takes once built (:func:`~distill.teacher_cache.build.cache_bytes`)


def plan_for_config(cfg: RunConfig) -> ConfigCache | None:
    """The cache plan of a config from its teacher's config and tokenizer and its data (no weights loaded);
    None when the run reads no cache (:func:`plan_cache`)."""
    from distill.students import student_config, validate_against
    from distill.teachers import describe, load_config, load_tokenizer
    from distill.trainer import encode_split, load_task_data, task_collate

    if cfg.kind not in KD_KINDS or cfg.loss.teacher_cache == "off":
        return None
    t_config = load_config(cfg.teacher.source)
    arch = describe(t_config)
    pairs = validate_against(cfg, arch) if cfg.needs_features else ()
    heads = student_config(t_config, cfg.student, arch, attentions=cfg.needs_attentions).num_attention_heads
    tokenizer = load_tokenizer(cfg.teacher.source)
    data = load_task_data(cfg)
    split = encode_split(cfg, data, "train", tokenizer)
    plan = plan_cache(cfg, split, keep_for(cfg, pairs, cfg.needs_attentions, heads, arch.heads))
    if plan is None:
        return None
    lengths = [len(ids) for ids in _examples(split)]
    disk = cache_bytes(plan.keep, lengths, plan.key.dtype, arch.hidden_size, len(data.labels))
    collate = partial(task_collate(cfg), pad_token_id=tokenizer.pad_token_id)
    return ConfigCache(plan, split, collate, data.labels, disk)


def build_for_config(
    cfg: RunConfig,
    tick: Tick = no_tick,
    built_by: str = "",
    on_units: Callable[[int], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Manifest | None:
    """Build (or find) a config's cache, loading its teacher only when it must be built; None when the config
    reads no cache. ``on_units`` hears the number of ticks to come before the first one. A process that finds
    another one building the cache waits for it (``on_wait`` hears so), without loading a teacher of its own,
    and reads its cache."""
    from distill.teachers import load_teacher

    planned = plan_for_config(cfg)
    if planned is None:
        return None
    found = lookup(planned.plan) or wait_and_lookup(planned.plan, on_wait)
    if found is not None:
        return found.manifest
    if on_units is not None:
        on_units(build_units(len(planned.split), cfg.optim.batch_size))
    teacher = load_teacher(cfg, planned.labels, attentions=bool(planned.plan.keep.attention)).eval()
    cached = ensure(
        planned.plan,
        teacher,
        planned.split,
        planned.collate_fn,
        batch_size=cfg.optim.batch_size,
        tick=tick,
        built_by=built_by,
        source=source_labels(cfg),
    )
    return cached.manifest
