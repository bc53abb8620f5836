"""In a real browser: log in, upload data, register a teacher, walk the wizard, watch a real worker train.

Debian's Chromium (driven by Playwright, ``tests/jobs/browser.py``) talks to daphne serving kdweb's ASGI
app in a subprocess, as ``make up`` runs it (HTTP, static files and the run page's websocket); the run is
trained by the ``celery_worker_process`` fixture's worker on its own queue. Both read the same test database, so the
test commits its rows (``transaction=True``). Every click and keystroke is a user's: the only ORM call
creates the user and the team before the browser opens; the database is read again after it closes.

Screenshots of every page land in ``test-artifacts/browser/`` (gitignored).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from jobs.models import DatasetSpec, Evaluation, Membership, Run, Team
from tests.jobs.browser import BrowserSession, chromium_session

pytestmark = pytest.mark.django_db(transaction=True)

USERNAME, PASSWORD = "brenda", "browser-pass-4821"
TEACHER_NAME, DATASET_NAME = "tiny-bert-web", "reviews-upload"
RUN_TIMEOUT_S = 120
CHART_GROUPS = ("loss/task", "loss/output", "loss/feature", "loss/attention")


@pytest.fixture
def browser_user(db):
    team = Team.objects.create(name="browser-lab")
    user = get_user_model().objects.create_user(username=USERNAME, password=PASSWORD)
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    return user


RED = "rgb(180, 35, 24)"  # --red of kdweb.css


def border_color(page: Page, selector: str) -> str:
    return page.eval_on_selector(selector, "el => getComputedStyle(el).borderTopColor")


def live_params(page: Page) -> str:
    return page.locator("#student-live .wz-live").get_attribute("data-student-params") or ""


def wait_for_live_params(page: Page, before: str) -> str:
    """Wait until htmx has swapped in a new size box (its parameter count differs from ``before``)."""
    page.wait_for_function(
        "before => document.querySelector('#student-live .wz-live').dataset.studentParams !== before", arg=before
    )
    return live_params(page)


def log_in(s: BrowserSession, base: str) -> None:
    page = s.page
    page.goto(f"{base}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    s.shot("login")
    s.click(page.get_by_role("button", name="Log in"))
    expect(page.locator(".topbar form.logout span")).to_have_text(USERNAME)


def upload_data_set(s: BrowserSession, csv_path) -> None:
    page = s.page
    s.click(page.locator(".topbar nav").get_by_role("link", name="Data sets"))
    expect(page.get_by_role("heading", name="Add a data set")).to_be_visible()
    page.get_by_label("Name").fill(DATASET_NAME)
    page.set_input_files("input[name=upload]", str(csv_path))  # the file chooser: one click for a user
    s.clicks += 1
    page.locator("input[name=text_column]").fill("review")
    page.locator("input[name=label_column]").fill("sentiment")
    s.shot("dataset-upload")
    s.click(page.get_by_role("button", name="Add"))

    expect(page.locator("p.flash")).to_have_text(f"Added data set {DATASET_NAME}.")
    # the name, then the id the CLI takes
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(rf"^{DATASET_NAME} id \d+\s*$"))
    expect(page.locator("p.labels .tag")).to_have_text(["neg", "pos"])
    sizes = dict(
        zip(
            page.locator("table.sizes td:first-child").all_inner_texts(),
            page.locator("table.sizes td.num").all_inner_texts(),
            strict=True,
        )
    )
    assert sizes == {"train": "192", "validation": "24", "test": "24"}, sizes
    preview = page.locator("table.preview tbody tr")
    expect(preview.first).to_be_visible()
    assert preview.count() >= 3
    labels = set(page.locator("table.preview tbody td:last-child").all_inner_texts())
    assert labels <= {"neg", "pos"} and labels, labels
    s.shot("dataset-detail")


def register_teacher(s: BrowserSession, folder) -> None:
    page = s.page
    s.click(page.locator(".topbar nav").get_by_role("link", name="Teachers"))
    expect(page.get_by_role("heading", name="Register a teacher")).to_be_visible()
    page.get_by_label("Name").fill(TEACHER_NAME)
    page.get_by_label("Source").fill(str(folder))
    s.click(page.get_by_role("button", name="Register"))
    expect(page.locator("p.flash")).to_have_text(f"Registered teacher {TEACHER_NAME}.")
    row = page.locator("table.teachers tbody tr", has_text=TEACHER_NAME)
    expect(row).to_contain_text("4 × 32")
    expect(row).to_contain_text("neg, pos")
    s.shot("teachers")


def expect_step(page: Page, title: str) -> None:
    expect(page.locator(".wz-head h2")).to_have_text(title)
    expect(page.locator(".wz-step.current .wz-label")).to_have_text(title)


def next_step(s: BrowserSession, *, extra: bool = False) -> None:
    s.click(s.page.locator(".wz-nav").get_by_role("button", name="Next →"), extra=extra)


def teacher_step(s: BrowserSession) -> None:
    page = s.page
    s.click(page.locator(".topbar nav").get_by_role("link", name="New run"))
    expect_step(page, "Teacher")
    kind = page.locator("label.wz-card", has_text="Distil a student")
    s.click(kind, extra=True)  # already the default
    expect(kind.locator("input")).to_be_checked()
    card = page.locator("label.wz-card", has_text=TEACHER_NAME)
    expect(card).to_contain_text("4 layers × 32 hidden, 4 heads")
    s.click(card)
    expect(card.locator("input")).to_be_checked()
    s.shot("wizard-1-teacher")
    next_step(s)


def student_step(s: BrowserSession) -> None:
    page = s.page
    expect_step(page, "Student")
    expect(page.locator("#id_layers")).to_have_value("2")  # half the teacher's 4 blocks
    two_blocks = live_params(page)
    assert two_blocks.isdigit(), two_blocks

    # the live size box follows the shape as it is typed (htmx, no submit)
    page.locator("#id_layers").fill("3")
    three_blocks = wait_for_live_params(page, two_blocks)
    assert int(three_blocks) > int(two_blocks)

    # a width the heads do not divide: the engine's message appears under the field, live and on submit
    s.click(page.get_by_label("Random: any shape"), extra=True)
    page.locator("#id_hidden_size").fill("30")
    page.locator("#id_heads").fill("4")
    wait_for_live_params(page, three_blocks)
    expect(page.locator("#student-live")).to_contain_text("Fix the highlighted fields")
    expect(page.locator("#field-heads #err-heads")).to_have_text("hidden size 30 is not divisible by 4 heads")
    page.locator("#id_layers").focus()
    assert border_color(page, "#id_heads") == RED  # a live error outlines its field as well
    next_step(s, extra=True)
    expect_step(page, "Student")
    expect(page.locator("#field-heads")).to_have_class(re.compile(r"\bhas-error\b"))
    expect(page.locator("#field-heads .error")).to_have_text("hidden size 30 is not divisible by 4 heads")
    expect(page.locator("#field-hidden_size .error")).to_have_count(0)
    s.shot("wizard-2-student-error")

    # fixed: 2 blocks of the teacher's width, copied from the teacher
    page.locator("#id_hidden_size").fill("")
    page.locator("#id_heads").fill("")
    page.locator("#id_layers").fill("2")
    s.click(page.get_by_label("Copy the teacher's blocks"), extra=True)
    expect(page.locator("#student-live .wz-live")).to_have_attribute("data-student-params", two_blocks)
    expect(page.locator("#err-heads .error")).to_have_count(0)
    page.locator("#id_layers").focus()
    assert border_color(page, "#id_heads") != RED  # the outline went with the error
    expect(page.locator("#student-live")).to_contain_text("2 × 32, 4 heads, feed-forward 64")
    expect(page.locator("#student-live")).to_contain_text(f"{int(two_blocks):,}")
    s.shot("wizard-2-student")
    next_step(s)


def layer_map_step(s: BrowserSession) -> None:
    page = s.page
    expect_step(page, "Layer map")
    uniform = [[0, 0, 1, 1], [1, 2, 1, 1], [2, 4, 1, 1]]
    pairs = page.locator("input[name=pairs]")
    expect(page.locator("input[name=preset][value=uniform]")).to_be_checked()
    assert json.loads(pairs.input_value()) == [p[:2] for p in uniform]  # as the server rendered it
    expect(page.locator("#layermap-svg line.pair")).to_have_count(3)

    # the editor: student block 1 learns from teacher block 1 instead; the map becomes custom
    svg = page.locator("#layermap-svg")
    s.click(svg.locator("g.node.student", has_text="1 · block 1"), extra=True)
    expect(svg.locator("g.node.student.selected")).to_have_count(1)
    s.click(svg.locator("g.node.teacher", has_text="1 · block 1"), extra=True)
    expect(page.locator("input[name=preset][value=custom]")).to_be_checked()
    assert json.loads(pairs.input_value()) == [[0, 0, 1, 1], [1, 1, 1, 1], [2, 4, 1, 1]]
    expect(page.locator("#layermap-rows tr")).to_have_count(3)
    expect(page.locator("#layermap-rows tr").nth(1)).to_contain_text("1")
    s.shot("wizard-3-layer-map-edited")

    # back to the uniform preset, which this run uses
    s.click(page.get_by_label("Uniform: student block i"), extra=True)
    assert json.loads(pairs.input_value()) == uniform
    expect(page.locator("#layermap-svg line.pair")).to_have_count(3)
    s.shot("wizard-3-layer-map")
    next_step(s)


def data_step(s: BrowserSession) -> None:
    page = s.page
    expect_step(page, "Data")
    card = page.locator("label.wz-card", has_text=DATASET_NAME)
    expect(card).to_contain_text("train 192 · validation 24 · test 24 rows")
    expect(card).not_to_contain_text("labels differ")
    s.click(card)
    expect(card.locator("input")).to_be_checked()
    s.click(page.locator(".wz-preview summary").first, extra=True)
    expect(page.locator(".wz-preview table.preview").first).to_be_visible()
    page.get_by_label("Max length").fill("24")
    s.shot("wizard-4-data")
    next_step(s)


def training_step(s: BrowserSession) -> None:
    page = s.page
    expect_step(page, "Losses & optimizer")
    page.get_by_label("Max steps").fill("4")
    page.get_by_label("Batch size").fill("8")
    page.get_by_label("Learning rate").fill("-1")
    next_step(s, extra=True)
    expect_step(page, "Losses & optimizer")
    expect(page.locator("#field-lr")).to_have_class(re.compile(r"\bhas-error\b"))
    expect(page.locator("#field-lr .error")).to_contain_text("greater than 0")
    expect(page.locator(".wz-field-errors .error")).to_have_count(1)  # only the learning rate is wrong
    expect(page.get_by_label("Max steps")).to_have_value("4")  # what was typed is kept
    s.shot("wizard-5-training-error")
    page.get_by_label("Learning rate").fill("0.001")
    s.shot("wizard-5-training")
    next_step(s)


def queue_step(s: BrowserSession, queue: str) -> None:
    page = s.page
    expect_step(page, "Queue")
    option = page.get_by_label(f"{queue} (a worker is listening)")
    expect(option).to_be_visible()
    s.click(option)
    expect(option).to_be_checked()
    s.shot("wizard-6-queue")
    next_step(s)


def review_and_launch(s: BrowserSession, queue: str) -> None:
    page = s.page
    expect_step(page, "Review")
    expect(page.locator(".errors")).to_have_count(0)
    summary = page.locator("table.wz-summary")
    expect(summary).to_contain_text(f"Distil a student from {TEACHER_NAME} (browser-lab)")
    expect(summary).to_contain_text("2 blocks × 32 hidden, 4 heads, feed-forward 64; init teacher")
    expect(summary).to_contain_text("uniform: 0→0, 1→2, 2→4")
    expect(summary).to_contain_text(f"{DATASET_NAME}, max length 24")
    expect(summary).to_contain_text("lr 0.001, 4 steps, batch 8")
    expect(summary).to_contain_text(queue)
    expect(page.locator("pre.config")).to_contain_text("max_steps: 4")
    expect(page.locator(".wz-review-grid")).to_contain_text("Optimizer steps")
    expect(page.get_by_label("Name")).to_have_value(f"{TEACHER_NAME}-2x32-kd_feature")
    s.shot("wizard-7-review")
    baselines = page.get_by_label("Compare with baselines")
    expect(baselines).to_be_checked()  # a study by default: this test launches the single run
    s.click(baselines)
    s.click(page.get_by_role("button", name="Launch"))


def wait_until_finished(s: BrowserSession, timeout: float) -> str:
    """Watch the run page refresh itself (htmx every 2 s, a reload at the end) until the run has stopped."""
    badge = s.page.locator("#run-status .badge")
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = badge.inner_text(timeout=2_000)
        except PlaywrightError:  # mid-swap or mid-reload (a timeout is one too): look again
            text = ""
        if text not in ("", "Queued", "Running"):
            return text
        time.sleep(0.5)
    return text


def check_results(s: BrowserSession) -> None:
    page = s.page
    expect(page.locator("table.metrics")).to_be_visible(timeout=15_000)  # the page reloaded for the results
    expect(page.locator(".page-head .badge")).to_have_text("Succeeded")
    roles = page.locator("table.metrics tbody td:first-child").all_inner_texts()
    assert sorted(roles) == ["student", "teacher"], roles
    expect(page.locator("table.compare tbody tr")).to_have_count(1)
    expect(page.locator("#run-status")).to_contain_text("4 / 4")
    expect(page.locator("#run-status")).not_to_have_attribute("hx-get", re.compile(".*"))  # polling stopped

    for group in CHART_GROUPS:
        chart = page.locator(f'#charts .chart.js-plotly-plot[data-group="{group}"]')
        expect(chart).to_have_count(1)
        expect(chart.locator("svg.main-svg").first).to_be_visible()
        lines = chart.locator(".scatterlayer path")
        expect(lines.first).to_be_attached()
        assert any(d and d.startswith("M") for d in (p.get_attribute("d") for p in lines.all())), group
    assert page.locator("#charts .js-plotly-plot").count() >= len(CHART_GROUPS)
    expect(page.locator("ul.artifacts li")).to_have_count(1)


def test_a_user_uploads_data_walks_the_wizard_and_watches_the_run_succeed(
    celery_worker_process, asgi_server, browser_user, assets
):
    worker = celery_worker_process
    with chromium_session() as s:
        page = s.page
        try:
            log_in(s, asgi_server)
            upload_data_set(s, assets["reviews"])
            register_teacher(s, assets["teacher"])
            teacher_step(s)
            student_step(s)
            layer_map_step(s)
            data_step(s)
            training_step(s)
            queue_step(s, worker.queue)
            review_and_launch(s, worker.queue)
            launched_after = s.needed_clicks

            expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
            # the launch message says where the run waits; live.js drops it once the run has left the queue
            launched = page.locator(
                f'p.flash.queued-notice:has-text("is queued on {worker.queue}"), '
                '#run-status:not([data-status="queued"])'
            )
            expect(launched.first).to_be_attached()
            page.wait_for_load_state("load")
            expect(page.locator("#charts .empty, #charts .chart").first).to_be_visible()  # charts.js ran
            s.shot("run-launched")
            status = wait_until_finished(s, RUN_TIMEOUT_S)
            assert status == "Succeeded", f"the run is {status!r}:\n{page.locator('#run-status').inner_text()}"
            check_results(s)
            s.shot("run-succeeded")
        except BaseException:
            s.shot("failure")
            print(f"--- worker log ---\n{worker.log()}")
            raise

    print(
        f"\nclicks from the login page to the launched run: {launched_after} needed "
        f"(+{s.extra_clicks} to show errors, try the layer-map editor and open a preview)"
    )
    print("screenshots:\n" + "\n".join(str(p) for p in s.shots))

    assert not s.watch.page_errors, s.watch.page_errors
    assert not s.watch.console_errors, "\n".join(s.watch.console_errors)
    assert not s.watch.bad_responses, s.watch.bad_responses
    assert not s.watch.foreign_requests(), s.watch.foreign_requests()
    assert any("/static/plotly/plotly.min.js" in url for url in s.watch.requests)
    assert any("/static/vendor/htmx" in url for url in s.watch.requests)
    assert any("/runs/new/student/live/" in url for url in s.watch.requests)  # htmx really asked

    # what the pages did, as the database has it
    run = Run.objects.get()
    assert (run.status, run.kind, run.queue, run.created_by.username) == (
        "succeeded",
        "kd_feature",
        worker.queue,
        USERNAME,
    )
    assert run.dataset == DatasetSpec.objects.get(name=DATASET_NAME) and run.dataset.upload
    assert run.config["optim"]["lr"] == 0.001 and run.config["data"]["max_length"] == 24
    assert run.config["student"]["layer_map"] == "uniform"
    assert set(Evaluation.objects.filter(run=run).values_list("role", flat=True)) == {"student", "teacher"}
