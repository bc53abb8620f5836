"""Pages that put runs side by side: the studies list, a study's scorecard and any runs compared.

A study page and a comparison of selected runs are the same page (``jobs/study_detail.html``) over the same
scorecard (``scorecard.study_scorecard``); every run shown must be visible to the user (``jobs.permissions``:
other teams' runs answer 404, whether asked for alone or within a list).
"""

from __future__ import annotations

import csv
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET

from jobs import scorecard, selectors
from jobs.models import Run, Study
from jobs.pages.teams import share_panel
from jobs.permissions import get_all_for_user, get_for_user

MAX_COMPARED = 50


def _study_runs(study: Study) -> list[Run]:
    return list(selectors.scorecard_runs(study.runs.all()))


def compared_runs(request: HttpRequest) -> list[Run]:
    """The runs of ``?runs=1,2,3`` (or ``?runs=1&runs=2``, as the runs list's checkboxes send them); 404
    unless every one is visible to the user, or when none (or too many) is given."""
    raw = ",".join(request.GET.getlist("runs")).split(",")
    try:
        pks = [int(part) for part in raw if part.strip()]
    except ValueError:
        raise Http404("Runs are given by their ids: ?runs=1,2,3") from None
    if not pks or len(pks) > MAX_COMPARED:
        raise Http404(f"Compare between 1 and {MAX_COMPARED} runs: ?runs=1,2,3")
    return get_all_for_user(selectors.scorecard_runs(Run.objects.all()), request.user, pks)


def _scorecard_page(
    request: HttpRequest, runs: list[Run], *, study: Study | None, can_write: bool, csv_url: str
) -> HttpResponse:
    card = scorecard.study_scorecard(runs)
    context: dict[str, Any] = {
        "study": study,
        "title": study.name if study else f"Comparison of {len(runs)} runs",
        "card": card,
        "plots": selectors.scorecard_plots(card),
        "csv_url": csv_url,
        "live": any(not run.is_finished for run in runs),
        # a study can be shared by a public link (jobs.pages.teams); a comparison of runs is this user's own view
        **(share_panel(study, can_write) if study else {}),
    }
    return render(request, "jobs/study_detail.html", context)


@login_required
@require_GET
def study_list(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/studies.html", {"studies": selectors.study_list(request.user)})


@login_required
@require_GET
def study_detail(request: HttpRequest, study_id: int) -> HttpResponse:
    study, can_write = get_for_user(Study.objects.select_related("team", "created_by"), request.user, study_id)
    csv_url = reverse("study_scorecard_csv", kwargs={"study_id": study.pk})
    return _scorecard_page(request, _study_runs(study), study=study, can_write=can_write, csv_url=csv_url)


@login_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    runs = compared_runs(request)
    csv_url = f"{reverse('compare_csv')}?{request.GET.urlencode()}"
    return _scorecard_page(request, runs, study=None, can_write=False, csv_url=csv_url)


# --- the scorecard as CSV ---------------------------------------------------------------------------------

CSV_MEASURES = (
    ("retention", "% of teacher"),
    ("params", "params"),
    ("mb", "MB"),
    ("smaller", "x smaller"),
    ("bs1_ms", "latency bs1 (ms)"),
    ("bs32_ms", "latency bs32 (ms)"),
    ("faster_bs1", "x faster bs1"),
    ("faster_bs32", "x faster bs32"),
)


# a cell starting with one of these is a formula to a spreadsheet (=HYPERLINK(...) in a run's name)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(value: Any) -> str:
    """A text cell as data: a leading ``'`` keeps a spreadsheet from reading user text as a formula (OWASP)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else str(value)


def _number(value: float | int | None, key: str = "") -> str:
    if value is None:
        return ""
    if key == "retention":
        return f"{100 * value:.2f}"
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _numbers(item: dict[str, Any]) -> dict[str, Any]:
    """A scorecard row's (or the teacher's) numbers by key: its task metrics and its measures."""
    return {**{key: item.get(key) for key, _ in CSV_MEASURES}, **item["metrics"]}


def scorecard_csv_rows(card: dict[str, Any]) -> list[list[str]]:
    """The scorecard as a table: a header, one line per run, the teacher measurement, and with several
    seeds a ``mean`` and a ``std`` line per variant."""
    keys = [*card["metrics"], *(key for key, _ in CSV_MEASURES)]
    header = ["run", "run id", "variant", "seed", "status", "role", "split", *card["metrics"]]
    lines = [header + [label for _, label in CSV_MEASURES] + ["host", "threads", "best"]]

    def line(labels: list[Any], item: dict[str, Any], numbers: dict[str, Any]) -> list[str]:
        where = [_text(item.get("host") or ""), _number(item.get("threads")), "yes" if item.get("best") else ""]
        return [_text(v) for v in labels] + [_number(numbers.get(k), k) for k in keys] + where

    for row in card["rows"]:
        run = row["run"]
        labels = [run.name, run.pk, row["variant"], row["seed"], run.status, row["role"], row["split"] or ""]
        lines.append(line(labels, row, _numbers(row)))
    if teacher := card["teacher"]:
        run = teacher["run"]
        labels = [f"teacher, measured in run {run.pk}", run.pk, "teacher", "", "", "teacher", teacher["split"]]
        lines.append(line(labels, teacher, _numbers(teacher)))
    for group in card["groups"]:
        seeds = " ".join(map(str, group["seeds"]))
        for stat in ("mean", "std"):
            labels = [
                f"{group['variant']} ({stat} of {group['n']} seeds)",
                "",
                group["variant"],
                seeds,
                "",
                group["role"],
                "",
            ]
            flagged = {**group, "best": group["best"] and stat == "mean"}  # one "best" line per variant
            lines.append(line(labels, flagged, {key: s[stat] for key, s in group["stats"].items()}))
    return lines


def _csv_response(card: dict[str, Any], filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    csv.writer(response).writerows(scorecard_csv_rows(card))
    return response


@login_required
@require_GET
def study_scorecard_csv(request: HttpRequest, study_id: int) -> HttpResponse:
    study, _ = get_for_user(Study, request.user, study_id)
    card = scorecard.study_scorecard(_study_runs(study))
    return _csv_response(card, f"{slugify(study.name) or 'study'}-scorecard.csv")


@login_required
@require_GET
def compare_csv(request: HttpRequest) -> HttpResponse:
    return _csv_response(scorecard.study_scorecard(compared_runs(request)), "comparison-scorecard.csv")
