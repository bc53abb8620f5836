"""What a teacher-output cache is a function of, and its key.

The frozen teacher in eval mode is a pure function of the tokenized example, so its outputs on a split are
fixed by the teacher's files (weights, config, tokenizer) with the dtype it runs in, the examples as token ids,
and what is kept of them. The examples are hashed as token ids rather than named by their source: the source's
content, the split, the caps, ``max_length`` and the tokenizer all end up in the ids, so an edited upload or a
changed split is a miss, never a wrong hit. Files are hashed once per (path, size, mtime): a 500 MB teacher is
read again only when it changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

FORMAT = 1  # bump when the stored layout changes: older caches become misses
HASHES = "file-hashes.json"  # the root's memo of file digests: path -> [size, mtime_ns, sha256]
CHUNK = 1 << 20


@dataclass(frozen=True)
class Keep:
    """What a cache holds per example, as the run's losses read it.

    ``logits``: a classifier's logits; ``hidden``: the teacher layers whose hidden states are kept;
    ``attention``: (teacher layer, head groups) whose maps are kept averaged over consecutive groups of heads
    (the student's head grouping: its head count, or 1 for head-averaged maps); ``top_k``: a causal LM's k and
    temperature (the log-probabilities are at that temperature).
    """

    logits: bool = False
    hidden: tuple[int, ...] = ()
    attention: tuple[tuple[int, int], ...] = ()
    top_k: tuple[int, float] | None = None

    def names(self) -> tuple[str, ...]:
        """The kept tensors' entry names, sorted: ``logits``, ``hidden.3``, ``attention.3.12``, ``topk.64.2.0``."""
        names = ["logits"] if self.logits else []
        names += [f"hidden.{m}" for m in self.hidden]
        names += [f"attention.{m}.{g}" for m, g in self.attention]
        if self.top_k is not None:
            names.append(f"topk.{self.top_k[0]}.{self.top_k[1]!r}")
        return tuple(sorted(set(names)))

    @classmethod
    def union(cls, keeps: Iterable[Keep]) -> Keep:
        """One cache for several runs (a study): everything any of them reads."""
        keeps = list(keeps)
        top = {k.top_k for k in keeps} - {None}
        if len(top) > 1:
            raise ValueError(f"runs keep different top-k settings {sorted(top)}: one cache cannot serve them all")
        return cls(
            logits=any(k.logits for k in keeps),
            hidden=tuple(sorted({m for k in keeps for m in k.hidden})),
            attention=tuple(sorted({a for k in keeps for a in k.attention})),
            top_k=next(iter(top), None),
        )


@dataclass(frozen=True)
class CacheKey:
    """The identity of a cache: ``base`` (teacher and examples) and what is kept, stored in ``dtype``."""

    teacher: str
    teacher_dtype: str
    examples: str
    count: int
    entries: tuple[str, ...]
    dtype: str

    @property
    def base(self) -> str:
        """The digest of what the outputs are computed from: caches with the same base differ only in what
        they keep (a cache that keeps more serves a run that reads less)."""
        return _digest(
            {"format": FORMAT, "teacher": self.teacher, "dtype": self.teacher_dtype, "examples": self.examples}
        )

    @property
    def key(self) -> str:
        """The cache's folder name: 32 hex digits of its base, entries and storage dtype."""
        return _digest({"base": self.base, "entries": self.entries, "dtype": self.dtype})[:32]


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of a file's content."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _load_memo(memo: Path) -> dict[str, list]:
    try:
        return json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or a torn write by a killed process: rehash


def folder_digest(folder: Path, memo_root: Path) -> str:
    """The digest of every file under ``folder`` (names and contents), with file digests memoised in
    ``memo_root/file-hashes.json`` by path, size and mtime."""
    memo_path = memo_root / HASHES
    memo = _load_memo(memo_path)
    changed, parts = False, []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        key = str(path.resolve())
        entry = memo.get(key)
        if entry is None or entry[:2] != [stat.st_size, stat.st_mtime_ns]:
            entry, changed = [stat.st_size, stat.st_mtime_ns, file_sha256(path)], True
            memo[key] = entry
        parts.append((str(path.relative_to(folder)), entry[2]))
    if changed:
        memo_root.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_name(f"{HASHES}.{os.getpid()}")
        tmp.write_text(json.dumps(memo))
        tmp.replace(memo_path)  # concurrent writers: the last one wins, and every entry it has is right
    return _digest(parts)


def examples_digest(examples: Sequence[Sequence[int]]) -> str:
    """The digest of the examples' token ids, in order (each example's length included)."""
    h = hashlib.sha256()
    for ids in examples:
        h.update(len(ids).to_bytes(4, "little"))
        h.update(array("i", ids).tobytes())
    return h.hexdigest()
