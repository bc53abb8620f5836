"""In a real browser, on a loaded worker: a three-run study launched through the wizard, trained by the real
Celery worker, then measured side by side (teacher and students alternately in one process) once its runs have
finished; the scorecard's × faster comes from that one measurement, with the same teacher figure on every row,
each latency's p10-p90 and the load flag; "Measure side by side again" measures anew.

A busy process (a pure-Python loop, one core) runs from launch to the end, so the measurement is taken under
foreign load. Screenshots land in ``test-artifacts/browser/side-by-side-*.png``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect

from jobs.models import Measurement, Run, Study
from tests.jobs.browser import BrowserSession, chromium_session, in_thread, open_as, session_cookie
from tests.jobs.scenarios.test_browser import expect_step, next_step
from tests.jobs.scenarios.test_browser_live import expect_clean

pytestmark = pytest.mark.django_db(transaction=True)

MEASURE_TIMEOUT_S = 240
STUDY = "loaded study"


def launch_study(s: BrowserSession, queue: str) -> None:
    """The wizard, as a user walks it: the tiny teacher, a 2-block student, the reviews, 10 steps, this queue,
    baselines on (the default): a study of kd_feature, kd_logits and no_kd."""
    page = s.page
    s.click(page.locator(".topbar nav").get_by_role("link", name="New run"))
    expect_step(page, "Teacher")
    s.click(page.locator("label.wz-card", has_text="tiny-bert"))
    next_step(s)
    expect_step(page, "Student")
    page.locator("#id_layers").fill("2")
    next_step(s)
    expect_step(page, "Layer map")
    next_step(s)
    expect_step(page, "Data")
    s.click(page.locator("label.wz-card", has_text="reviews"))
    page.get_by_label("Max length").fill("24")
    next_step(s)
    expect_step(page, "Losses & optimizer")
    page.get_by_label("Max steps").fill("10")
    page.get_by_label("Batch size").fill("8")
    page.get_by_label("Learning rate").fill("0.001")
    next_step(s)
    expect_step(page, "Queue")
    s.click(page.get_by_label(f"{queue} (a worker is listening)"))
    next_step(s)
    expect_step(page, "Review")
    page.get_by_label("Name").fill(STUDY)
    expect(page.get_by_label("Compare with baselines")).to_be_checked()
    s.click(page.get_by_role("button", name="Launch"))
    expect(page).to_have_url(re.compile(r"/studies/\d+/$"))


def measured(study: Study, worker, count: int = 1) -> Measurement:
    """Wait until the study has ``count`` measurements and the newest has finished; it must have succeeded."""
    deadline = time.monotonic() + MEASURE_TIMEOUT_S
    while time.monotonic() < deadline:
        newest = study.measurements.first()
        if study.measurements.count() >= count and not newest.is_pending:
            assert newest.status == Measurement.Status.SUCCEEDED, newest.error
            return newest
        time.sleep(0.5)
    pytest.fail(f"no finished side-by-side measurement of {study} after {MEASURE_TIMEOUT_S} s\n{worker.log()}")


def test_a_loaded_workers_study_scorecard_is_faster_from_one_side_by_side_measurement(
    celery_worker_process, asgi_server, owner, tiny_teacher, tiny_dataset
):
    worker = celery_worker_process
    cookie = session_cookie(owner)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with chromium_session(prefix="side-by-side-") as s:
            open_as(s, asgi_server, cookie, "/")
            launch_study(s, worker.queue)
            expect_clean(s)

        study = Study.objects.get(name=STUDY)
        runs = list(study.runs.order_by("pk"))
        assert sorted(r.kind for r in runs) == ["kd_feature", "kd_logits", "no_kd"]
        for run in runs:
            assert worker.wait_for(run).status == Run.Status.SUCCEEDED, run.error
        measurement = measured(study, worker)  # queued by the last run's success, measured by the worker
        result = measurement.result
        assert [m["run"] for m in result["models"]] == [None, *sorted(r.pk for r in runs)]
        assert result["heavy_load"], result  # the busy process used a core of its own throughout
        teacher_ms = {b: result["models"][0]["latency"][b]["median_ms"] for b in ("bs1", "bs32")}

        with chromium_session(prefix="side-by-side-") as s:
            page = open_as(s, asgi_server, cookie, f"/studies/{study.pk}/")
            note = page.locator("#measured-on")
            expect(note).to_contain_text(f"side by side on {worker.node} with 1 torch thread at 24 tokens")
            expect(note).to_have_attribute("data-heavy-load", "true")
            expect(page.locator("#heavy-load")).to_contain_text("heavy load from other processes")
            scorecard = page.locator("#scorecard")
            rows = scorecard.locator("tr.run-row")
            expect(rows).to_have_count(3)
            teacher_row = scorecard.locator('tr[data-role="teacher"]')
            for batch in ("bs1", "bs32"):
                cell = teacher_row.locator(f'td.latency[data-batch="{batch}"]')
                assert float(cell.get_attribute("data-median")) == pytest.approx(teacher_ms[batch])
                # the same teacher figure on every row, the one of the measurement
                versus = {rows.nth(n).get_attribute(f"data-teacher-{batch}") for n in range(3)}
                assert len(versus) == 1 and float(versus.pop()) == pytest.approx(teacher_ms[batch])
            for n in range(3):
                row = rows.nth(n)
                for batch in ("bs1", "bs32"):
                    cell = row.locator(f'td.latency[data-batch="{batch}"]')
                    p10, median, p90 = (float(cell.get_attribute(f"data-{k}")) for k in ("p10", "median", "p90"))
                    assert 0 < p10 <= median <= p90
                    expect(cell.locator(".spread")).to_be_visible()  # the spread is shown
                    faster = row.locator(f'td.faster[data-batch="{batch}"]')
                    expect(faster).to_have_text(f"{teacher_ms[batch] / median:.1f}×")
            s.shot("scorecard")

            # on demand: measure again; the page says so while the worker measures, then shows the new one
            s.click(page.locator("#measure-button"))
            expect(page.locator("p.flash.success")).to_contain_text("Measuring side by side")
            again = in_thread(measured, study, worker, count=2)  # the browser's event loop owns this thread
            expect(page.locator("#measuring")).to_have_count(0, timeout=15_000)  # it refreshes itself
            expect(page.locator("#measured-on")).to_contain_text(f"{again.result['rounds']} rounds")
            expect(page.locator("#measure-button")).to_have_text("Measure side by side again")
            s.shot("measured-again")
            expect_clean(s)
    finally:
        busy.kill()
        busy.wait()
