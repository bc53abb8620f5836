"""The wizard's entry points: start (continue where the user left off), one URL per step, and reset.

Each step is its own page (``/runs/new/<step>/``) with a plain form, so it works without JavaScript; htmx
adds the live parameter count and ``layermap.js`` the layer-map drawing.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from jobs.wizard import review, steps
from jobs.wizard.state import BY_SLUG, SESSION_KEY, Wizard

HANDLERS = {
    "teacher": steps.teacher_step,
    "student": steps.student_step,
    "layer-map": steps.layer_map_step,
    "data": steps.data_step,
    "training": steps.training_step,
    "queue": steps.queue_step,
    "review": review.review_step,
}


@login_required
@require_GET
def start(request: HttpRequest) -> HttpResponse:
    """``/runs/new/``: continue where the user left off (``?teacher=&kind=`` preselect a fresh start)."""
    wiz = Wizard(request)
    if request.GET.get("teacher") or request.GET.get("kind"):
        request.session.pop(SESSION_KEY, None)
        return redirect(f"{reverse('wizard_step', kwargs={'step': 'teacher'})}?{request.GET.urlencode()}")
    return redirect("wizard_step", step=wiz.first_open() if wiz.teacher else "teacher")


@login_required
def step(request: HttpRequest, step: str) -> HttpResponse:
    if step not in BY_SLUG:
        raise Http404("No such step.")
    if request.method not in ("GET", "HEAD", "POST"):
        return HttpResponse(status=405)
    if step == "review" and request.method == "POST":
        return review.launch(request)
    wiz = Wizard(request)
    if step != "teacher":
        if wiz.teacher is None:
            if wiz.state.get("teacher"):
                messages.error(request, "That teacher is no longer available to you: pick one again.")
            request.session.pop(SESSION_KEY, None)
            return redirect("wizard_step", step="teacher")
        if not wiz.can_visit(step):
            return redirect("wizard_step", step=wiz.first_open())
    return HANDLERS[step](request, wiz)


@login_required
@require_POST
def reset(request: HttpRequest) -> HttpResponse:
    request.session.pop(SESSION_KEY, None)
    return redirect("wizard_step", step="teacher")
