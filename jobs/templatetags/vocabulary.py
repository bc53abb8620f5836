"""``{% vocabulary_script %}``: the words the pages' scripts share with the server, sent once per page.

A ``json_script`` block (``kdweb-vocabulary``, read by ``kdweb/vocabulary.js``) holds the loss terms in the
engine's order with their chart titles, the study variants in their order, and the run statuses with those
that still change; no script keeps a copy.
"""

from __future__ import annotations

from django import template
from django.utils.html import json_script
from django.utils.safestring import SafeString

from distill.config import TERMS
from jobs.models import Run
from jobs.scorecard import VARIANT_ORDER

register = template.Library()

# chart titles of the loss series: the weighted sum, and each term (a term without one shows its name)
LOSS_TITLES = {
    "total": "Total loss (weighted sum)",
    "task": "Task loss (cross-entropy)",
    "output": "Output loss (KL of softened logits)",
    "feature": "Feature loss (hidden states)",
    "attention": "Attention loss",
}
# the statuses a live page keeps following; every other one is final
LIVE_STATUSES = (Run.Status.QUEUED, Run.Status.RUNNING)


def vocabulary() -> dict[str, object]:
    """What the scripts read: terms, titles, variants and statuses."""
    return {
        "terms": list(TERMS),
        "loss_titles": {term: LOSS_TITLES.get(term, term) for term in ("total", *TERMS)},
        "variants": list(VARIANT_ORDER),
        "statuses": list(Run.Status.values),
        "live_statuses": [str(s) for s in LIVE_STATUSES],
    }


@register.simple_tag
def vocabulary_script() -> SafeString:
    return json_script(vocabulary(), "kdweb-vocabulary")
