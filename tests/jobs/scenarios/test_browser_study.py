"""In a real browser: a study of three tiny runs trained by the real worker, its scorecard and plots, and two
of its runs compared from the runs list.

The study is launched through the service the wizard calls (``services.study_create``; the wizard's part is
``test_studies.py``), on the tiny teacher and the toy reviews, and trained by conftest's Celery worker. The
plots publish what they drew (``study_charts.js``: ``data-points``, ``data-teacher``, ``data-traces``).
Screenshots land in ``test-artifacts/browser/study-*.png``.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from jobs import services
from jobs.models import Run
from tests.jobs.browser import chromium_session, open_as, session_cookie
from tests.jobs.conftest import daphne, process_env, teacher_row
from tests.jobs.pages.test_public import finished_run
from tests.jobs.pages.test_runs import ARCH
from tests.jobs.scenarios.test_browser_live import expect_clean
from tests.jobs.scenarios.test_browser_side_by_side import measured

pytestmark = pytest.mark.django_db(transaction=True)

SECTIONS = {
    "latency_repeats": 1,
    "checkpoint_every": 1000,
    "eval_every": 10,
    "student": {"layers": 2},
    "data": {"max_length": 24},
    "optim": {"max_steps": 30, "batch_size": 8, "lr": 1e-3},
}


def test_a_study_of_three_runs_shows_its_scorecard_and_plots(
    celery_worker_process, asgi_server, owner, tiny_teacher, tiny_dataset
):
    worker = celery_worker_process
    study = services.study_create(
        user=owner,
        teacher=tiny_teacher,
        dataset=tiny_dataset,
        name="tiny study",
        sections=SECTIONS,
        seeds=[0],
        queue=worker.queue,
    )
    runs = list(study.runs.order_by("pk"))
    assert sorted(r.kind for r in runs) == ["kd_feature", "kd_logits", "no_kd"]
    for run in runs:
        assert worker.wait_for(run).status == Run.Status.SUCCEEDED, run.error
    measured(study, worker)
    cookie = session_cookie(owner)

    with chromium_session(prefix="study-") as s:
        page = open_as(s, asgi_server, cookie, f"/studies/{study.pk}/")
        expect(page.locator("h1")).to_have_text(re.compile(r"^tiny study id \d+\s*$"))  # name, then its id
        scorecard = page.locator("#scorecard")
        expect(scorecard.locator("tr.run-row")).to_have_count(3)
        expect(scorecard.locator('tr[data-role="teacher"]')).to_have_count(1)
        expect(scorecard.locator("tr.run-row.best")).to_have_count(1)
        expect(scorecard.locator("tr.run-row a[download]")).to_have_count(3)  # each student's zip
        # speed comes from the side-by-side measurement the last run's success queued
        expect(page.locator("#measured-on")).to_contain_text(f"side by side on {worker.node} with 1 torch thread")
        size = page.locator("#plot-size.js-plotly-plot")
        expect(size).to_have_attribute("data-points", "3")
        expect(size).to_have_attribute("data-teacher", "1")
        expect(page.locator("#plot-val")).to_have_attribute("data-traces", "3")
        expect(page.locator('#plot-losses .chart[data-term="loss/total"]')).to_have_attribute("data-traces", "3")
        expect(page.locator("#config-diff")).to_contain_text("kind")
        s.shot("scorecard")
        s.shot("size-plot", size)
        expect_clean(s)

        # any runs: tick two in the runs list and compare them on the same page
        page.goto(f"{asgi_server}/")
        for run in runs[:2]:
            page.locator(f'input[name="runs"][value="{run.pk}"]').check()
        page.get_by_role("button", name="Compare selected").click()
        expect(page).to_have_url(re.compile(r"/compare/\?runs=\d+&runs=\d+$"))
        expect(page.locator("h1")).to_have_text("Comparison of 2 runs")
        expect(page.locator("#scorecard tr.run-row")).to_have_count(2)
        expect(page.locator("#plot-size")).to_have_attribute("data-points", "2")
        s.shot("compare")
        expect_clean(s)


EVIL = '<a href="https://evil.example">x</a>'
# every link in the page, HTML or SVG (Plotly draws its pseudo-HTML links as <a xlink:href> in its SVG)
LINKS_JS = "[...document.querySelectorAll('a')].map(a => a.getAttribute('href') || a.getAttribute('xlink:href'))"


def test_run_and_teacher_names_in_the_plots_are_text_not_markup(data_dir, owner, team):
    teacher_row(team, EVIL, ARCH)  # the runs below take this team's first teacher
    runs = [finished_run(team, EVIL), finished_run(team, "plain")]
    runs[1].evaluations.filter(role="student").update(params=2000)  # apart from the first on the size plot
    cookie = session_cookie(owner)
    with daphne(process_env(data_dir), data_dir / "daphne.log") as base, chromium_session(prefix="escape-") as s:
        page = open_as(s, base, cookie, f"/compare/?runs={runs[0].pk},{runs[1].pk}")
        expect(page.locator("#plot-size.js-plotly-plot")).to_have_attribute("data-teacher", "1")
        loss_plot = page.locator('#plot-losses .chart[data-term="loss/total"]')
        expect(loss_plot).to_have_attribute("data-traces", "2")
        expect(loss_plot.locator(".legendtext").first).to_have_text(EVIL)  # shown as typed
        points = page.locator("#plot-size .point")
        for n, name in enumerate([EVIL, "plain", EVIL]):  # the runs, then the teacher's star
            points.nth(n).hover(force=True)  # Plotly listens on the drag layer above the points
            expect(page.locator("#plot-size .hoverlayer")).to_contain_text(name)  # shown as typed
        assert not [href for href in page.evaluate(LINKS_JS) if href and "evil" in href]
        s.shot("compare-evil-names")
        expect_clean(s)
