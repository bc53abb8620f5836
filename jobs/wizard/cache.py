"""The review's teacher-output cache line: whether the run (or the study) reads a cache its team has, builds
one first (about how long, how much disk), or runs its teacher live, and why.

The cache's key needs the teacher's tokenizer and the data (no weights): ``selectors.teacher_cache_plan``
computes it in the web process as the estimate tokenizes an LM's data, once per config, and gives up after a
few seconds (the review then says it is checked when the run starts). The folder is the team's own
(``selectors.team_cache_dir``); the page names no path.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from distill.config import FULL_METHOD, KD_KINDS, RunConfig
from distill.estimate import format_bytes
from distill.teacher_cache import status
from distill.teachers import local_model_dir
from distill.trainer import reads_examples_again
from jobs import selectors
from jobs.wizard.state import Wizard

State = Literal["cached", "build", "live", "unknown"]
NO_TEACHER = "No teacher outputs to cache: this kind of run trains without its teacher."
OFF = "The teacher runs at every step (teacher-output cache: off)."
HUB = "The teacher runs at every step: a hub teacher has no local files to key a cache by."
UNCONVERTED = (
    "Whether the teacher's outputs are cached is checked when the run starts (its first run converts this "
    "packaged teacher)."
)
SLOW = (
    "Whether the teacher's outputs are cached is checked when the run starts (reading the data takes a while; "
    "reload the review to see it)."
)
USE_WITHOUT_CACHE = (
    "No cache holds these teacher outputs, and “use” reads an existing cache only: the run would fail; choose “build”."
)
ONE_EPOCH = (
    "The teacher runs at every step: the run reads its examples once, so a cache would save nothing (a longer "
    "run, or a study, builds one)."
)


class CacheReview(NamedTuple):
    """What the review says of the teacher's outputs: the ``state`` and a sentence (no path)."""

    state: State
    text: str

    @property
    def estimate_mode(self) -> Literal["read", "build"] | None:
        """How ``distill.estimate.estimate`` charges the teacher (``cache=``): read, built first, or live."""
        return {"cached": "read", "build": "build"}.get(self.state)


def cache_review(wiz: Wizard, cfg: RunConfig, train_size: int, study: bool) -> CacheReview:
    """The teacher-output cache of the run the review would launch (of its study's full-method run when it
    launches a study: that one keeps what every run of it reads)."""
    if cfg.kind not in KD_KINDS and not study:
        return CacheReview("live", NO_TEACHER)
    if cfg.loss.teacher_cache == "off":
        return CacheReview("live", OFF)
    if local_model_dir(cfg.teacher.source) is None:  # a page converts no GGUF package: its first run does
        return (
            CacheReview("unknown", UNCONVERTED)
            if cfg.teacher.source.startswith("package:")
            else CacheReview("live", HUB)
        )
    folder = str(selectors.team_cache_dir(wiz.teacher.team_id))
    planned_cfg = cfg.model_copy(update={"kind": FULL_METHOD if study else cfg.kind, "cache_dir": folder})
    try:
        planned = selectors.teacher_cache_plan(planned_cfg)
    except TimeoutError:
        return CacheReview("unknown", SLOW)
    except Exception as exc:  # the teacher or data cannot be read here: the review says so, as the preview does
        return CacheReview("unknown", f"The teacher-output cache cannot be checked here ({type(exc).__name__}).")
    if planned is None:
        return CacheReview("live", OFF)
    manifest = status(planned.plan)
    if manifest is not None:
        readers = "every run of the study reads them" if study else "the run reads them"
        return CacheReview(
            "cached",
            f"The teacher's outputs are cached ({format_bytes(manifest.bytes)}, {manifest.examples:,} examples, "
            f"built by {manifest.built_by} on {manifest.created[:16].replace('T', ' ')}): {readers} and trains "
            "without the teacher in memory.",
        )
    if cfg.loss.teacher_cache == "use":
        return CacheReview("live", USE_WITHOUT_CACHE)
    if study or (train_size and reads_examples_again(cfg, train_size)):
        who = "The study computes" if study else "The run computes"
        return CacheReview(
            "build",
            f"{who} the teacher's outputs once before training and keeps them (≈ {format_bytes(planned.disk_bytes)} "
            "on disk)",
        )
    return CacheReview("live", ONE_EPOCH)


def cache_context(review: CacheReview, caching_text: str | None) -> dict[str, Any]:
    """The review's lines of the cache: the sentence, with the build's time from the estimate."""
    text = review.text
    if review.state == "build":
        text += f", ≈ {caching_text} of teacher passes." if caching_text else "."
    return {"teacher_cache": {"state": review.state, "text": text}}
