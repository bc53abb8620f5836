"""A cache on disk: safetensors shards and a manifest, published atomically, checked, locked.

Layout: ``root/<key>/manifest.json`` and ``root/<key>/shard-00000.safetensors`` ... Each shard holds a
contiguous range of examples, each of its tensors the examples' rows one after the other at their real length
(``lengths`` says where each begins). A cache is written in ``root/<key>.tmp-<pid>`` and renamed into place
once complete, so ``root/<key>`` is whole or absent; a shard whose size or sha256 is not the manifest's makes
the cache invalid, to be rebuilt. A lock file per key (``fcntl.flock``, released by the kernel when a process
dies) lets one process build while the others wait, then read what it built.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from distill.teacher_cache.key import file_sha256

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Shard:
    """One shard file: examples ``start`` to ``stop`` (exclusive), its size and sha256."""

    file: str
    start: int
    stop: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """What a cache holds (``entries`` of ``examples`` examples, stored in ``dtype``), and who built it when.

    ``source`` names the teacher and data as the builder was told (labels, not server paths)."""

    key: str
    base: str
    entries: list[str]
    dtype: str
    examples: int
    shards: list[Shard]
    created: str
    built_by: str
    build_s: float
    source: dict[str, str] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def save(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        data = json.loads((folder / MANIFEST).read_text())
        return cls(**{**data, "shards": [Shard(**s) for s in data["shards"]]})


@contextmanager
def locked(root: Path, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the key's lock: a second process blocks here until the first one leaves (or dies), calling
    ``on_wait`` first when it has to wait."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{key}.lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of the cache in ``folder``, or None when there is none (or it is torn)."""
    try:
        return Manifest.load(folder)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def verified(folder: Path, checksums: bool = True) -> Manifest | None:
    """The cache's manifest when every shard is there with its size (and, with ``checksums``, its sha256);
    None for an absent, partial or corrupted cache."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    for shard in manifest.shards:
        path = folder / shard.file
        try:
            if path.stat().st_size != shard.bytes:
                return None
        except OSError:
            return None
        if checksums and file_sha256(path) != shard.sha256:
            return None
    return manifest


def building_folder(root: Path, key: str) -> Path:
    """A fresh folder to build ``key`` in (this process's own; a leftover of a killed build is removed)."""
    tmp = root / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_shard(folder: Path, number: int, start: int, stop: int, tensors: dict[str, torch.Tensor]) -> Shard:
    """Save one shard's tensors and describe it for the manifest."""
    name = f"shard-{number:05d}.safetensors"
    path = folder / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return Shard(name, start, stop, path.stat().st_size, file_sha256(path))


def publish(tmp: Path, folder: Path) -> None:
    """Move a complete cache into place, replacing an invalid one."""
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def list_caches(root: Path) -> list[Manifest]:
    """The caches under ``root`` whose shards are all there (sizes checked, not checksums), newest first."""
    if not root.is_dir():
        return []
    found = [m for p in root.iterdir() if p.is_dir() and ".tmp-" not in p.name and (m := verified(p, checksums=False))]
    return sorted(found, key=lambda m: m.created, reverse=True)


def remove_cache(root: Path, key: str, on_wait: Callable[[], None] | None = None) -> bool:
    """Delete cache ``key`` (waiting for a build of it to end: ``on_wait`` hears so first, and may raise not to
    wait); False when there is none. The lock file stays: removing it would let a process that waits on it and
    a newcomer both hold "the" lock."""
    folder = root / key
    if not key.isalnum() or not folder.is_dir():
        return False
    with locked(root, key, on_wait):
        shutil.rmtree(folder)
    return True
