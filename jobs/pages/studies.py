"""Pages that put runs side by side: the studies list, a study's scorecard and any runs compared.

A study page and a comparison of selected runs are the same page (``jobs/study_detail.html``) over the same
scorecard (``scorecard.study_scorecard``); every run shown must be visible to the user (``jobs.permissions``:
other teams' runs answer 404, whether asked for alone or within a list).
"""

from __future__ import annotations

import csv
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from jobs import scorecard, selectors, services
from jobs.models import Run, Study
from jobs.pages.teams import share_panel
from jobs.permissions import get_all_for_user, get_for_user, teams_for_user

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


def _card(runs: list[Run], study: Study | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scorecard of ``runs`` with the speeds of their newest side-by-side measurement, and the
    measurements (``selectors.side_by_side``)."""
    found = selectors.side_by_side(study=study) if study else selectors.side_by_side(runs=runs)
    shown = found["shown"]
    return scorecard.study_scorecard(runs, shown.result if shown else None), found


def _scorecard_page(
    request: HttpRequest, runs: list[Run], *, study: Study | None, can_write: bool, csv_url: str, measure_url: str
) -> HttpResponse:
    card, found = _card(runs, study)
    context: dict[str, Any] = {
        "measurement": found["shown"],
        "measuring": found["latest"] if found["latest"] and found["latest"].status != "succeeded" else None,
        "measure_url": measure_url if can_write else "",
        "study": study,
        "title": study.name if study else f"Comparison of {len(runs)} run{pluralize(len(runs))}",
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
    archived = bool(request.GET.get("archived"))
    context = {"studies": selectors.study_list(request.user, archived=archived), "archived": archived}
    return render(request, "jobs/studies.html", context)


@login_required
@require_GET
def study_detail(request: HttpRequest, study_id: int) -> HttpResponse:
    study, can_write = get_for_user(Study.objects.select_related("team", "created_by"), request.user, study_id)
    csv_url = reverse("study_scorecard_csv", kwargs={"study_id": study.pk})
    measure_url = reverse("study_measure", kwargs={"study_id": study.pk})
    runs = _study_runs(study)
    return _scorecard_page(request, runs, study=study, can_write=can_write, csv_url=csv_url, measure_url=measure_url)


@login_required
@require_GET
def compare(request: HttpRequest) -> HttpResponse:
    runs = compared_runs(request)
    csv_url = f"{reverse('compare_csv')}?{request.GET.urlencode()}"
    measure_url = f"{reverse('compare_measure')}?{request.GET.urlencode()}"
    writable = set(teams_for_user(request.user, write=True).values_list("pk", flat=True))
    can_write = all(run.team_id in writable for run in runs)
    return _scorecard_page(request, runs, study=None, can_write=can_write, csv_url=csv_url, measure_url=measure_url)


# --- side-by-side measurements on demand -----------------------------------------------------------------

MEASURE_QUEUED = "Measuring side by side: the teacher and every student, alternately, on one worker."


def _measure(request: HttpRequest, runs: list[Run], study: Study | None) -> None:
    try:
        services.measurement_request(user=request.user, runs=runs, study=study)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, MEASURE_QUEUED)


@login_required
@require_POST
def study_measure(request: HttpRequest, study_id: int) -> HttpResponse:
    """Measure a study's models side by side again (``services.measurement_request``; members and owners)."""
    study, _ = get_for_user(Study, request.user, study_id)
    _measure(request, _study_runs(study), study)
    return redirect("study_detail", study_id=study.pk)


@login_required
@require_POST
def compare_measure(request: HttpRequest) -> HttpResponse:
    """Measure the compared runs' models side by side (``?runs=`` as the compare page has it)."""
    _measure(request, compared_runs(request), None)
    return redirect(f"{reverse('compare')}?{request.GET.urlencode()}")


# --- the scorecard as CSV ---------------------------------------------------------------------------------

CSV_MEASURES = (
    ("retention", "% of teacher"),
    ("params", "params"),
    ("mb", "MB"),
    ("smaller", "x smaller"),
    ("bs1_ms", "latency bs1 (ms)"),
    ("bs1_p10", "bs1 p10 (ms)"),
    ("bs1_p90", "bs1 p90 (ms)"),
    ("bs32_ms", "latency bs32 (ms)"),
    ("bs32_p10", "bs32 p10 (ms)"),
    ("bs32_p90", "bs32 p90 (ms)"),
    ("faster_bs1", "x faster bs1"),
    ("faster_bs32", "x faster bs32"),
    ("teacher_bs1_ms", "teacher bs1 (ms)"),
    ("teacher_bs32_ms", "teacher bs32 (ms)"),
    ("peak_mb", "peak MB"),
)
# the conditions of the side-by-side measurement that every latency and × faster comes from
CSV_CONDITIONS = ("measured on", "threads", "load average", "other processes (cores)", "heavy load")


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
    seeds a ``mean`` and a ``std`` line per variant; on every line, the conditions of the side-by-side
    measurement its latencies come from (empty: not measured side by side yet)."""
    keys = [*card["metrics"], *(key for key, _ in CSV_MEASURES)]
    header = ["run", "run id", "variant", "seed", "status", "role", "split", *card["metrics"]]
    lines = [header + [label for _, label in CSV_MEASURES] + ["trained on", *CSV_CONDITIONS, "best"]]
    sbs = card["side_by_side"] or {}
    conditions = [
        _text(sbs.get("host") or ""),
        _number(sbs.get("threads")),
        _number(sbs.get("load_max")),
        _number(sbs.get("foreign_cores")),
        ("yes" if sbs["heavy_load"] else "no") if sbs else "",
    ]

    def line(labels: list[Any], item: dict[str, Any], numbers: dict[str, Any]) -> list[str]:
        where = [_text(item.get("host") or ""), *conditions, "yes" if item.get("best") else ""]
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
    card, _ = _card(_study_runs(study), study)
    return _csv_response(card, f"{slugify(study.name) or 'study'}-scorecard.csv")


@login_required
@require_GET
def compare_csv(request: HttpRequest) -> HttpResponse:
    card, _ = _card(compared_runs(request), None)
    return _csv_response(card, "comparison-scorecard.csv")
