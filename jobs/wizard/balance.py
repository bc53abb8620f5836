"""The review's first-steps preview: each loss term's value and weighted share on one real batch, and the
time of a few real training steps, computed by a worker of the chosen queue (``services.balance_preview``)
when the user asks, and kept for that config only (the cost panel calibrates its estimate with the steps).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from distill.balance import DOMINANCE_LIMIT
from distill.config import KD_KINDS, RunConfig
from jobs import selectors, services
from jobs.permissions import require_write
from jobs.wizard.state import Wizard

STATE_KEY = "balance"


def config_digest(cfg: RunConfig) -> str:
    """Which config a stored preview belongs to: any change of choice but the name makes it stale."""
    return hashlib.sha256(cfg.model_dump_json(exclude={"name"}).encode()).hexdigest()


def queue_of(wiz: Wizard) -> str:
    return wiz.state.get("queue") or settings.CELERY_TASK_DEFAULT_QUEUE


def _text(value: float | None, share: bool = False) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.1%}" if share else f"{value:.4g}"


def stored_preview(wiz: Wizard, cfg: RunConfig) -> dict[str, Any] | None:
    """The preview computed for this very config (``services.BalancePreview`` as a dict), if any."""
    stored = wiz.state.get(STATE_KEY) or {}
    return stored.get("preview") if stored.get("digest") == config_digest(cfg) else None


def balance_context(wiz: Wizard, cfg: RunConfig) -> dict[str, Any]:
    """The review's preview panel: the measured step time for every run, the terms' rows for distillation runs,
    once computed for this config."""
    preview = stored_preview(wiz, cfg)
    context: dict[str, Any] = {
        "balance_queue": queue_of(wiz),
        "balance": preview,
        "balance_terms": wiz.kind in KD_KINDS,
    }
    if preview and preview.get("step_s"):
        context["balance_step_text"] = f"{preview['step_s']:.3g} s"
    if preview and preview["terms"] and wiz.kind in KD_KINDS:
        context["balance_rows"] = [
            {
                "term": name,
                "value": _text(term["value"]),
                "weight": f"{term['weight']:g}",
                "share": _text(term["share"], share=True),
                "dominant": term["share"] is not None and term["share"] > DOMINANCE_LIMIT,
                "broken": not math.isfinite(term["value"]),
            }
            for name, term in preview["terms"].items()
        ]
    return context


@login_required
@require_POST
def balance(request: HttpRequest) -> HttpResponse:
    """The review's "Try the first steps" button: a worker of the queue computes the preview (viewers get 403);
    it is stored for this config and the review shows it."""
    wiz = Wizard(request)
    teacher = get_object_or_404(selectors.teacher_list(request.user), pk=wiz.state.get("teacher") or 0)
    require_write(request.user, teacher.team)
    if wiz.teacher is None or wiz.dataset is None or wiz.first_open() != "review":
        return redirect("wizard_step", step=wiz.first_open() if wiz.teacher else "teacher")
    try:
        cfg = services.run_config_build(
            kind=wiz.kind,
            teacher=wiz.teacher,
            dataset=wiz.dataset,
            name=wiz.config.get("name") or wiz.default_name(),
            sections=wiz.sections(),
        )
    except ValidationError:
        return redirect("wizard_step", step="review")  # the review lists what to change
    preview = services.balance_preview(cfg, queue_of(wiz), settings.KDWEB_PREVIEW_TIMEOUT_S)
    wiz.state[STATE_KEY] = {"digest": config_digest(cfg), "preview": preview.as_dict()}
    wiz.save()
    return redirect("wizard_step", step="review")
