"""What the wizard draws of the models: the layer-map drawing, the pairs table, and the student's live
parameter count (htmx) with the shape it describes.

The layer map's geometry is set here only: the page's SVG is drawn from it, and ``layermap.js`` reads the
same numbers from the page (``layermap-geometry``) when the user draws.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from distill.config import LayerPair, StudentConfig
from distill.layer_map import has_attention, resolve_layer_map
from distill.students import count_student_parameters, student_config, student_shape
from distill.teachers import Architecture
from jobs import selectors
from jobs.models import Teacher
from jobs.wizard.forms import LAYER_PRESETS, StudentStepForm
from jobs.wizard.state import Wizard, shape

# the drawing's geometry, in SVG units: width, box width and height, row pitch, top and bottom margins
GEOMETRY = {"width": 440, "boxW": 130, "boxH": 26, "row": 34, "top": 34, "bottom": 10}


def layer_map_drawing(student_layers: int, teacher_layers: int, pairs: list, bad_rows: set[int]) -> dict[str, Any]:
    """Boxes for student layers 0..S and teacher layers 0..T (embeddings at the bottom) and a line per pair."""
    g = GEOMETRY
    span = max(student_layers, teacher_layers) * g["row"]

    def y(layer: int, depth: int) -> float:
        return g["top"] + (depth - layer) * span / depth

    def boxes(depth: int, x: int, side: str) -> list[dict[str, Any]]:
        return [
            {"layer": i, "x": x, "y": y(i, depth), "side": side, "label": "embeddings" if i == 0 else f"block {i}"}
            for i in range(depth + 1)
        ]

    tx = g["width"] - g["boxW"] - 2
    lines = []
    for i, pair in enumerate(pairs):
        s, t = int(pair[0]), int(pair[1])
        if 0 <= s <= student_layers and 0 <= t <= teacher_layers:
            lines.append(
                {
                    "x1": 2 + g["boxW"],
                    "y1": y(s, student_layers) + g["boxH"] / 2,
                    "x2": tx,
                    "y2": y(t, teacher_layers) + g["boxH"] / 2,
                    "feature_only": s == 0 or t == 0,
                    "bad": i in bad_rows,
                }
            )
    return {
        "width": g["width"],
        "height": g["top"] + span + g["boxH"] + g["bottom"],
        "box_w": g["boxW"],
        "box_h": g["boxH"],
        "student": boxes(student_layers, 2, "student"),
        "teacher": boxes(teacher_layers, tx, "teacher"),
        "lines": lines,
        "text_x": g["boxW"] / 2,
        "student_x": 2 + g["boxW"] / 2,
        "teacher_x": tx + g["boxW"] / 2,
    }


def pair_rows(pairs: list) -> list[dict[str, Any]]:
    """The pairs table: each readable pair, and whether it carries an attention term."""
    rows = []
    for raw in pairs:
        try:
            pair = LayerPair.model_validate(raw)
        except ValueError:
            continue
        rows.append({"pair": pair, "attention": has_attention(pair)})
    return rows


def preset_pairs(student_layers: int, teacher_layers: int) -> dict[str, list[list[int]]]:
    """The pairs of each preset without the embeddings pair (the page adds it when asked)."""
    out = {}
    for preset in LAYER_PRESETS:
        cfg = StudentConfig(layers=student_layers, layer_map=preset, map_embeddings=False)
        out[preset] = [[p.student, p.teacher] for p in resolve_layer_map(cfg, teacher_layers)]
    return out


# --- the student's size, live ------------------------------------------------------------------------------


def student_parameters(teacher: Teacher, student: dict[str, Any]) -> int:
    """The exact parameter count of a student shape (built on the meta device: milliseconds)."""
    arch = selectors.teacher_architecture(teacher)
    cfg = StudentConfig(**{k: v for k, v in student.items() if v is not None})
    return count_student_parameters(student_config(selectors.teacher_hf_config(teacher), cfg, arch, attentions=False))


def short_count(n: int | None) -> str:
    """``22.7 M``, ``410.5 k``."""
    if n is None:
        return "—"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M"
    return f"{n / 1e3:.1f} k" if n >= 1_000 else str(n)


def describe_architecture(arch: Architecture) -> str:
    return (
        f"{arch.layers} layers × {arch.hidden_size} hidden, {arch.heads} heads, {short_count(arch.params)} parameters"
    )


def student_live_context(teacher: Teacher, arch: Architecture, form: StudentStepForm) -> dict[str, Any]:
    """The live box under the student's shape: its parameter count and compression, or why not."""
    context: dict[str, Any] = {"teacher_params": arch.params, "teacher_params_text": f"{arch.params:,}"}
    if form.is_bound and form.is_valid():
        params = student_parameters(teacher, form.student_dict())
        hidden, heads, intermediate = student_shape(
            StudentConfig(layers=form.cleaned_data["layers"], **shape(form.student_dict())), arch
        )
        context.update(
            student_params=params,
            student_params_text=f"{params:,}",
            compression=arch.params / params,
            percent=min(100.0, 100 * params / arch.params),
            shape=f"{form.cleaned_data['layers']} × {hidden}, {heads} heads, feed-forward {intermediate}",
        )
    return context


@login_required
@require_GET
def student_live(request: HttpRequest) -> HttpResponse:
    """htmx: the student's parameter count and compression for the shape being typed, errors by field."""
    wiz = Wizard(request)
    if wiz.teacher is None:
        return HttpResponse('<p class="help">Pick a teacher first.</p>')
    form = StudentStepForm(request.GET, kind=wiz.kind, teacher=wiz.teacher, arch=wiz.arch)
    context = {"live": student_live_context(wiz.teacher, wiz.arch, form), "form": form, "oob": True}
    return render(request, "jobs/wizard/_student_live.html", context)
