"""Fixtures of the engine's tests: the tiny teacher's config and architecture."""

from __future__ import annotations

import pytest

from distill.teachers import describe, load_config


@pytest.fixture
def tiny(assets):
    """The tiny BERT teacher's transformers config and the engine's ``Architecture`` of it."""
    t_config = load_config(str(assets["teacher"]))
    return t_config, describe(t_config)
