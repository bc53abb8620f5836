"""The words the scripts share with the server (``{% vocabulary_script %}``): every page sends them once, from
the engine's and the models' own lists."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from distill.config import TERMS
from jobs.models import Run
from jobs.scorecard import VARIANT_ORDER

pytestmark = pytest.mark.django_db


def test_every_page_sends_the_terms_titles_variants_and_statuses(login, owner):
    html = login(owner).get(reverse("runs")).content.decode()
    blocks = re.findall(r'<script id="kdweb-vocabulary" type="application/json">(.*?)</script>', html)
    assert len(blocks) == 1
    words = json.loads(blocks[0])
    assert words["terms"] == list(TERMS)
    assert list(words["loss_titles"]) == ["total", *TERMS]
    assert words["loss_titles"]["attention"] == "Attention loss"
    assert words["variants"] == list(VARIANT_ORDER)
    assert words["statuses"] == list(Run.Status.values) and words["live_statuses"] == ["queued", "running"]
