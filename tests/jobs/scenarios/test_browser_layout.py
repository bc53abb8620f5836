"""In a real browser, at a desktop window (1,400 × 900) and a phone (390 × 844): the runs list, a run page, a
study page and the wizard's steps fit the window. No page scrolls sideways (a wide table scrolls inside its
own box), the main boxes of a page do not overlap, and at 1,400 px the scorecard and the runs table show every
column. Each page is loaded once per size; screenshots land in ``test-artifacts/browser/layout-<page>-<width>.png``.

The runs are rows made directly (finished, with measurements and curves): nothing trains here.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from jobs.models import Study
from tests.jobs.browser import ARTIFACTS, BrowserSession, chromium_session, open_as, session_cookie
from tests.jobs.conftest import daphne, process_env
from tests.jobs.pages.test_public import finished_run
from tests.jobs.scenarios.test_browser_live import expect_clean

pytestmark = pytest.mark.django_db(transaction=True)

DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
LONG_NAME = "tiny-teacher-2x32-kd_feature-lr0.001-batch8-seed0-a-long-name-people-really-give-their-runs"

# the boxes of a page that sit side by side or one under the other, never on top of each other
BOXES = (
    "main > *, .status-block, dl.facts > div, .table-scroll, .chart, .panel, .wz-group, .wz-card, "
    ".wz-field, .wz-live, .wz-panel, .wz-nav > *"
)
# pairs of boxes (same parent) that overlap by more than a pixel, as "selector-ish name x name"
OVERLAPS_JS = """selector => {
  const seen = [...document.querySelectorAll(selector)].filter(e => {
    const r = e.getBoundingClientRect(); const style = getComputedStyle(e);
    return r.width > 0 && r.height > 0 && style.position !== "fixed" && style.position !== "sticky";
  });
  const name = e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
    + (typeof e.className === "string" && e.className ? "." + e.className.trim().split(/\\s+/).join(".") : "");
  const out = [];
  for (let i = 0; i < seen.length; i++) for (let j = i + 1; j < seen.length; j++) {
    const a = seen[i], b = seen[j];
    if (a.parentElement !== b.parentElement) continue;
    const p = a.getBoundingClientRect(), q = b.getBoundingClientRect();
    const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
    const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
    if (w > 1 && h > 1) out.push(`${name(a)} x ${name(b)}`);
  }
  return out;
}"""
# each wide table that is cut: [id or class, table width, box width]
CUT_TABLES_JS = """() => [...document.querySelectorAll(".table-scroll")]
  .filter(box => box.scrollWidth > box.clientWidth + 1)
  .map(box => [box.firstElementChild.id || box.firstElementChild.className, box.scrollWidth, box.clientWidth])"""


def check_fits(s: BrowserSession, name: str, size: dict[str, int], *, all_columns: bool = False) -> None:
    """The page as loaded at ``size``: no sideways scroll, no overlapping boxes and (``all_columns``, on the
    desktop) no table that hides columns; a screenshot ``layout-<name>-<width>.png``."""
    page = s.page
    width = page.evaluate("() => [document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]")
    where = f"{name} at {size['width']} px"
    s.shot_as(f"layout-{name}-{size['width']}")
    assert width[1] == size["width"] and width[0] <= width[1], f"{where}: the page is {width[0]} px wide"
    assert page.evaluate(OVERLAPS_JS, BOXES) == [], f"{where}: boxes overlap"
    if all_columns and size is DESKTOP:
        assert page.evaluate(CUT_TABLES_JS) == [], f"{where}: a table hides columns"


@pytest.fixture
def layout_rows(owner, team, tiny_teacher, tiny_dataset) -> dict:
    """A study of three finished runs (one with a long name), made as rows; the tiny teacher and data set let
    the wizard walk its steps."""
    study = Study.objects.create(team=team, name="depth and width study", created_by=owner)
    runs = [finished_run(team, LONG_NAME, study=study)]
    runs += [finished_run(team, f"run-{n}", study=study, kind=kind) for n, kind in ((2, "kd_logits"), (3, "no_kd"))]
    return {"study": study, "run": runs[0]}


WIZARD = (("teacher", "Teacher"), ("student", "Student"), ("layer-map", "Layer map"), ("data", "Data"))
WIZARD_LATER = (("training", "Losses & optimizer"), ("queue", "Queue"), ("review", "Review"))


def wizard_next(page: Page, title: str) -> None:
    page.locator(".wz-nav").get_by_role("button", name="Next →").click()
    expect(page.locator(".wz-head h2")).to_have_text(title)


def test_the_pages_fit_a_desktop_and_a_phone(data_dir, owner, layout_rows):
    cookie = session_cookie(owner)
    run, study = layout_rows["run"], layout_rows["study"]
    pages = (
        ("runs", "/", "table.runs"),
        ("run", f"/runs/{run.pk}/", "#charts .js-plotly-plot"),
        ("study", f"/studies/{study.pk}/", "#plot-size.js-plotly-plot"),
    )
    with daphne(process_env(data_dir), data_dir / "daphne.log") as base, chromium_session(prefix="layout-") as s:
        page = s.page
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(size)
            for name, path, landmark in pages:
                open_as(s, base, cookie, path)
                expect(page.locator(landmark).first).to_be_visible()  # the table, or the plots drawn
                check_fits(s, name, size, all_columns=True)

        # the wizard (kd_feature), walked once on the desktop, then each step again on the phone
        page.set_viewport_size(DESKTOP)
        page.goto(f"{base}/runs/new/")
        page.locator("label.wz-card", has_text="tiny-bert").click()
        check_fits(s, "wizard-teacher", DESKTOP)
        for step, title in WIZARD[1:]:
            wizard_next(page, title)
            check_fits(s, f"wizard-{step}", DESKTOP)
        page.locator("label.wz-card", has_text="reviews").click()
        for step, title in WIZARD_LATER:
            wizard_next(page, title)
            check_fits(s, f"wizard-{step}", DESKTOP)
        page.set_viewport_size(PHONE)
        for step, title in WIZARD + WIZARD_LATER:
            page.goto(f"{base}/runs/new/{step}/")
            expect(page.locator(".wz-head h2")).to_have_text(title)
            check_fits(s, f"wizard-{step}", PHONE)

        # fine-tuning: its optimizer step holds the LoRA box, next to the reproducibility box
        page.goto(f"{base}/runs/new/teacher/")
        page.locator("label.wz-card", has_text="Fine-tune").click()
        wizard_next(page, "Data")
        wizard_next(page, "Losses & optimizer")
        expect(page.locator("fieldset.wz-group", has_text="LoRA")).to_be_visible()
        for size in (PHONE, DESKTOP):
            page.set_viewport_size(size)
            page.reload()
            check_fits(s, "wizard-training-lora", size)
        expect_clean(s)
    assert (ARTIFACTS / "layout-run-390.png").is_file() and (ARTIFACTS / "layout-study-1400.png").is_file()
