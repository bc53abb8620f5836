"""The teacher-output cache: the frozen teacher's outputs on a training split, computed once and read by every
epoch and every run that needs the same ones (DESIGN §6).

``key`` fingerprints what the outputs are a function of; ``store`` keeps them on disk (atomic, checksummed,
locked shards); ``build`` computes them; ``read`` turns a batch's example ids back into a teacher output; ``plan``
ties these together for the trainer, the CLI and the web.
"""

from distill.teacher_cache.key import CacheKey, Keep
from distill.teacher_cache.plan import (
    CachePlan,
    ConfigCache,
    build_for_config,
    ensure,
    keep_for,
    lookup,
    plan_cache,
    plan_for_config,
    source_labels,
    status,
    wait_and_lookup,
)
from distill.teacher_cache.read import CachedTeacher
from distill.teacher_cache.store import Manifest, list_caches, remove_cache

__all__ = [
    "CacheKey",
    "CachePlan",
    "CachedTeacher",
    "ConfigCache",
    "Keep",
    "Manifest",
    "build_for_config",
    "ensure",
    "keep_for",
    "list_caches",
    "lookup",
    "plan_cache",
    "plan_for_config",
    "remove_cache",
    "source_labels",
    "status",
    "wait_and_lookup",
]
