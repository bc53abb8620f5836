"""In a real browser: the live run page (charts, log, status), cancel and resume, and the live runs list.

Debian's Chromium (``tests/jobs/browser.py``) talks to daphne serving kdweb (``asgi_server``); runs are
created through the services and trained by a real Celery worker (conftest's, on one torch thread), on
the tiny teacher and the toy reviews, long enough (500 to 1,500
steps, 4 to 12 s on an idle 2-core machine) to be watched, cancelled and resumed while they train, and
short enough that their series are never downsampled (2,000 points), so pages and database compare 1:1.

What a page holds is read from what the scripts publish for it: ``#charts[data-counts]`` (points per
series, charts.js), ``#run-log .log-line`` (logtail.js), the badges. The database is read outside the
Playwright sessions, or in a thread of its own while one is open (``in_thread``): Playwright's loop in this
thread makes Django refuse ORM calls here. Screenshots land in ``test-artifacts/browser/live-*.png``.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import Page, expect

from distill.checkpoint import has_checkpoint
from jobs import services
from jobs.models import LogLine, MetricPoint, Run
from tests.jobs.browser import (
    BrowserSession,
    chart_steps,
    chromium_session,
    counts,
    in_thread,
    open_as,
    session_cookie,
    total_points_above,
)

pytestmark = pytest.mark.django_db(transaction=True)

# a feature-KD run of the tiny teacher (50-125 steps/s on one thread of a 2-core CPU), evaluated every 100 steps
SECTIONS = {
    "latency_repeats": 1,
    "checkpoint_every": 1000,
    "eval_every": 100,
    "student": {"layers": 2},
    "data": {"max_length": 24},
}
RUN_TIMEOUT_MS = 90_000


def launch(worker, user, teacher, dataset, name: str, steps: int) -> Run:
    return worker.launch(
        user, teacher, dataset, {**SECTIONS, "optim": {"max_steps": steps, "batch_size": 8, "lr": 1e-3}}, name=name
    )


def log_lines(page: Page) -> list[str]:
    return page.locator("#run-log .log-line").all_inner_texts()


def expect_clean(s: BrowserSession) -> None:
    assert not s.watch.page_errors, s.watch.page_errors
    assert not s.watch.console_errors, "\n".join(s.watch.console_errors)
    assert not s.watch.bad_responses, s.watch.bad_responses
    assert not s.watch.foreign_requests(), s.watch.foreign_requests()


def loss_total_steps(run: Run) -> list[int]:
    return sorted(MetricPoint.objects.filter(run=run, name="loss/total").values_list("step", flat=True))


def log_of(run: Run) -> list[str]:
    return list(LogLine.objects.filter(run=run).order_by("id").values_list("text", flat=True))


# Kept by a tab across its own reloads (sessionStorage): every state of the run it showed, as
# [page load, "Badge · cancelling · cancel disabled"], and what the charts held when a live page unloaded
# (it reloads when the run stops).
RECORDER = """
(() => {
  const load = Math.random().toString(36).slice(2);
  let last = null;
  const record = () => {
    const badge = document.querySelector(".page-head .badge");
    if (!badge) return;
    const cancel = document.querySelector('#run-status button[data-action="cancel"]');
    const state = [
      badge.textContent.trim(),
      ...(document.querySelector('#run-status [data-live="cancelling"]') ? ["cancelling"] : []),
      ...(cancel && cancel.disabled ? ["cancel disabled"] : []),
    ].join(" · ");
    if (state === last) return;
    last = state;
    const states = JSON.parse(sessionStorage.getItem("kdweb-states") || "[]");
    sessionStorage.setItem("kdweb-states", JSON.stringify([...states, [load, state]]));
  };
  document.addEventListener("DOMContentLoaded", () => {
    record();
    const options = { subtree: true, childList: true, characterData: true, attributeFilter: ["disabled"] };
    new MutationObserver(record).observe(document.querySelector("main"), options);
  });
  window.addEventListener("beforeunload", () => {
    const charts = document.getElementById("charts");
    const chart = document.querySelector("#charts .chart[data-group='loss/total']");
    if (!window.kdwebLive || !charts) return;
    sessionStorage.setItem("kdweb-unloaded-live", JSON.stringify({
      counts: JSON.parse(charts.dataset.counts || "{}"),
      steps: chart ? Array.from(chart.data[0].x) : [],
    }));
  });
})();
"""


def recorded(page: Page, key: str):
    return json.loads(page.evaluate("key => sessionStorage.getItem(key)", key) or "null")


def states(page: Page) -> list[tuple[str, str]]:
    """(page load, state) of every state the tab showed (RECORDER)."""
    return [tuple(entry) for entry in recorded(page, "kdweb-states") or []]


def badges(page: Page) -> list[str]:
    """The badge texts the tab showed, in order, each once in a row."""
    out: list[str] = []
    for _load, state in states(page):
        badge = state.split(" · ")[0]
        if not out or out[-1] != badge:
            out.append(badge)
    return out


def test_the_run_page_follows_a_run_live_and_a_new_browser_finds_it_complete(
    celery_worker_process, asgi_server, owner, tiny_teacher, tiny_dataset
):
    worker = celery_worker_process
    steps = 1500
    run = launch(worker, owner, tiny_teacher, tiny_dataset, "live-chart", steps)
    cookie = session_cookie(owner)
    path = f"/runs/{run.pk}/"
    started = time.monotonic()
    try:
        # 1. a first browser watches the curves grow while the run trains, then goes away mid-run
        with chromium_session(prefix="live-chart-") as s:
            sockets: list[str] = []
            s.page.on("websocket", lambda ws: sockets.append(ws.url))
            page = open_as(s, asgi_server, cookie, path)
            expect(page.locator("#live-state")).to_have_class(re.compile(r"\bconnected\b"))
            expect(page.locator(".page-head .badge")).to_have_text("Running", timeout=30_000)
            first = total_points_above(page, 0, 30_000)
            second = total_points_above(page, first, 10_000)
            third = total_points_above(page, second, 10_000)
            assert first < second < third <= steps
            expect(page.locator("#run-status .progress")).not_to_have_attribute("aria-valuenow", "0")
            expect(page.locator("#run-status .eta")).to_contain_text("ETA ")
            # every chart of the page: the five loss terms, the weighted shares (stacked), the validation
            # metrics and the learning rate
            held = counts(page)
            assert {f"loss/{t}" for t in ("task", "output", "feature", "attention", "total")} <= set(held)
            assert {f"share/{t}" for t in ("task", "output", "feature", "attention")} <= set(held)
            for group in ("loss/total", "loss/attention", "share", "lr"):
                expect(page.locator(f'#charts .chart.js-plotly-plot[data-group="{group}"]')).to_have_count(1)
            share = page.locator('#charts .chart[data-group="share"]')
            expect(share).to_have_attribute("data-series", "share/task share/output share/feature share/attention")
            assert page.evaluate(
                "() => document.querySelector(\"#charts .chart[data-group='share']\").data.every(t => t.stackgroup)"
            )
            expect(page.locator("#run-log .log-line").first).to_have_text(re.compile(r"^attempt 1 started on "))
            expect(page.locator("#run-log")).to_contain_text(f"training {steps} steps")
            s.shot("growing")

            # the socket drops: "reconnecting…", then the points after the last step the page has, each once
            page.evaluate("() => window.kdwebLive.socket.socket.close()")
            expect(page.locator("#live-state")).to_have_class(re.compile(r"\breconnecting\b"))
            expect(page.locator("#live-state")).to_contain_text("Reconnecting…")
            expect(page.locator("#live-state")).to_have_class(re.compile(r"\bconnected\b"), timeout=10_000)
            assert len(sockets) == 2 and re.search(rf"/ws/runs/{run.pk}/\?after=\d+$", sockets[1]), sockets
            assert int(sockets[1].rsplit("=", 1)[1]) >= third
            closed_at = total_points_above(page, counts(page)["loss/total"], 10_000)
            held = chart_steps(page)
            assert held == list(range(1, len(held) + 1))  # no gap, no duplicate across the reconnect
            expect_clean(s)
        seen_live_s = time.monotonic() - started

        # 2. a new browser, on the same page: the stored curves and the log, then the rest live
        with chromium_session(prefix="live-chart-", keep=True) as s:
            s.page.context.add_init_script(RECORDER)
            page = open_as(s, asgi_server, cookie, path)
            expect(page.locator("#charts .chart").first).to_be_visible()
            assert counts(page)["loss/total"] >= closed_at  # the stored points, at once
            s.shot("reopened")
            expect(page.locator(".page-head .badge")).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
            expect(page.locator("table.metrics")).to_be_visible(timeout=15_000)  # reloaded for the results
            s.shot("finished")
            final_counts = counts(page)
            final_steps = chart_steps(page)
            final_log = log_lines(page)
            unloaded = recorded(page, "kdweb-unloaded-live")
            seen = badges(page)
            expect_clean(s)
    except BaseException:
        print(f"--- worker log ---\n{worker.log()}")
        raise

    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED and run.step == steps, run.error
    stored = loss_total_steps(run)
    assert stored == list(range(1, steps + 1))
    # the page holds every stored point, each once (short runs are not downsampled)
    assert final_counts["loss/total"] == len(stored) == MetricPoint.objects.filter(run=run, name="loss/total").count()
    assert final_steps == stored
    for name in ("loss/task", "share/feature", "lr", "val/accuracy"):
        assert final_counts[name] == MetricPoint.objects.filter(run=run, name=name).count(), name
    # the log tail ends as the run's log does
    log = log_of(run)
    assert final_log == log[-len(final_log) :] and final_log[-1].startswith("succeeded: exported")
    assert "training done: evaluating the trained model and the teacher, measuring latency, exporting" in final_log
    # the second browser also saw the end live, when the run was still going as it opened (it usually is):
    # its charts had every point when the page reloaded for the results
    print(f"\nfirst browser closed {seen_live_s:.1f} s after the launch at {closed_at} points; badges: {seen}")
    if seen and seen[0] == "Running":
        assert unloaded is not None, seen
        assert unloaded["steps"] == stored
        assert unloaded["counts"]["loss/total"] == steps


def test_a_run_is_cancelled_and_resumed_from_its_page(
    celery_worker_process, asgi_server, owner, tiny_teacher, tiny_dataset
):
    worker = celery_worker_process
    steps = 1500
    run = launch(worker, owner, tiny_teacher, tiny_dataset, "cancel-me", steps)
    cookie = session_cookie(owner)
    path = f"/runs/{run.pk}/"
    try:
        with chromium_session(prefix="live-cancel-") as s:
            s.page.context.add_init_script(RECORDER)
            page = open_as(s, asgi_server, cookie, path)
            expect(page.locator(".page-head .badge")).to_have_text("Running", timeout=30_000)
            total_points_above(page, 0, 30_000)
            # a second tab on the same run, to see the cancel arrive live
            other = s.page.context.new_page()
            s.watch.attach(other)
            other.goto(f"{asgi_server}{path}")
            expect(other.locator("#live-state")).to_have_class(re.compile(r"\bconnected\b"))
            other.evaluate("() => { window.__marker = 1; }")
            expect(other.locator('button[data-action="cancel"]')).to_be_enabled()
            expect(other.locator('button[data-action="cancel"]')).to_have_text("Cancel run")
            page.bring_to_front()  # a background tab does not paint: no screenshot

            s.click(page.locator('button[data-action="cancel"]'))
            expect(page.locator("p.flash")).to_have_text(
                "Cancel requested: the run stops at its next step (in its finish, at the next batch), "
                "keeping its checkpoint."
            )
            # "cancelling…", unless the worker was quicker than the page
            s.shot("cancel-requested", page.locator("#run-status"))

            # the worker reads the flag at its next flush (a second at most), stops with a checkpoint: the page reloads
            expect(page.locator(".page-head .badge")).to_have_text("Cancelled", timeout=30_000)
            resume = page.locator('button[data-action="resume"]')
            expect(resume).to_be_visible()
            expect(page.locator('button[data-action="cancel"]')).to_have_count(0)
            expect(page.locator("#live-state")).to_have_count(0)  # not live any more
            stopped_run = in_thread(Run.objects.get, pk=run.pk)
            stopped_at = stopped_run.step
            assert stopped_run.status == Run.Status.CANCELLED and 0 < stopped_at < steps
            assert has_checkpoint(services.run_output_dir(stopped_run))
            expect(page.locator("#run-status")).to_contain_text(f"Cancelled at step {stopped_at} / {steps}")
            assert counts(page)["loss/total"] == stopped_at
            assert chart_steps(page) == list(range(1, stopped_at + 1))
            expect(page.locator("#run-log .log-line").last).to_have_text(
                f"stopped at step {stopped_at} / {steps} with a checkpoint: cancelled"
            )
            # the other tab showed "cancelling…" live (the same page load as before the click), then reloaded
            expect(other.locator(".page-head .badge")).to_have_text("Cancelled")  # set live, then it reloads:
            expect(other.locator("#live-state")).to_have_count(0)  # the reloaded page, before reading its states
            other_states = states(other)
            assert other_states[0][1] == "Running" and other_states[-1][1] == "Cancelled", other_states
            live_load = other_states[0][0]
            assert (live_load, "Running · cancelling · cancel disabled") in other_states, other_states
            assert other_states[-1][0] != live_load and other.evaluate("() => window.__marker") is None
            expect(other.locator('button[data-action="resume"]')).to_be_visible()
            other.close()
            # this tab: the page the cancel redirected to showed "cancelling…" (as rendered), unless the worker
            # had stopped already
            loads = list(dict.fromkeys(load for load, _state in states(page)))
            redirected = next(state for load, state in states(page) if load == loads[1])
            after_click = [state for load, state in states(page) if load != loads[0]]
            assert redirected in ("Running · cancelling · cancel disabled", "Cancelled"), states(page)
            s.shot("cancelled")

            s.click(resume)
            expect(page.locator("p.flash")).to_contain_text("Resumed: the run continues from its last checkpoint")
            expect(page.locator("#live-state")).to_have_count(1)  # live again
            expect(page.locator("#run-log")).to_contain_text(f"resumed from the checkpoint at step {stopped_at}")
            s.shot("resumed")
            expect(page.locator(".page-head .badge")).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
            expect(page.locator("table.metrics")).to_be_visible(timeout=15_000)
            s.shot("succeeded")
            final_steps = chart_steps(page)
            final_counts = counts(page)
            seen = badges(page)
            unloaded = recorded(page, "kdweb-unloaded-live")
            expect(page.locator("#run-log .log-line").last).to_have_text(re.compile(r"^succeeded: exported"))
            expect_clean(s)
    except BaseException:
        print(f"--- worker log ---\n{worker.log()}")
        raise

    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert (run.step, run.attempts, run.cancel_requested) == (steps, 2, False)
    assert loss_total_steps(run) == list(range(1, steps + 1))  # every step once: no gap, no duplicate
    assert final_steps == list(range(1, steps + 1)) and final_counts["loss/total"] == steps
    # live, the resumed page had every point when the run ended (it reloads then)
    assert unloaded is not None and unloaded["steps"] == list(range(1, steps + 1)), unloaded
    # the page went running -> cancelled, then (queued ->) running -> succeeded
    print(f"\ncancelled at step {stopped_at} / {steps}; badges: {seen}; the tab after the click: {after_click}")
    assert seen[0] == "Running" and seen[-1] == "Succeeded", seen
    after_cancel = seen[seen.index("Cancelled") + 1 :]
    assert after_cancel in (["Queued", "Running", "Succeeded"], ["Running", "Succeeded"]), seen
    # and so did the run, as its log tells
    log = log_of(run)
    order = [
        "cancel requested by olivia",
        f"stopping at step {stopped_at}: saving a checkpoint",
        f"stopped at step {stopped_at} / {steps} with a checkpoint: cancelled",
        "resume requested by olivia",
        "attempt 2 started on",
        f"resumed from the checkpoint at step {stopped_at} / {steps}",
        "succeeded: exported",
    ]
    at = [next(i for i, line in enumerate(log) if line.startswith(prefix)) for prefix in order]
    assert at == sorted(at), log


def new_run_cancelled(user, like: Run) -> None:
    """A run saved without a task to any broker (on a queue no worker reads), then cancelled by ``user``."""
    run = Run.objects.create(
        team=like.team,
        name="elsewhere",
        kind=like.kind,
        teacher=like.teacher,
        dataset=like.dataset,
        config=like.config,
        queue="nobody",
        created_by=user,
    )
    services.run_cancel(user=user, run=run)


def test_the_runs_list_updates_statuses_live(celery_worker_process, asgi_server, owner, tiny_teacher, tiny_dataset):
    worker = celery_worker_process
    # the solo worker trains one run at a time: the second waits, queued, behind the first
    first = launch(worker, owner, tiny_teacher, tiny_dataset, "list-first", 800)
    second = launch(worker, owner, tiny_teacher, tiny_dataset, "list-second", 500)
    cookie = session_cookie(owner)
    rows = {r.pk: f'table.runs tbody tr[data-run-id="{r.pk}"]' for r in (first, second)}
    try:
        with chromium_session(prefix="live-list-") as s:
            page = open_as(s, asgi_server, cookie, "/")
            expect(page.locator("#runs-live")).to_have_class(re.compile(r"\bconnected\b"))
            page.evaluate(
                """() => {
                  window.__marker = 1;
                  window.__seen = {};
                  const record = () => {
                    for (const tr of document.querySelectorAll("table.runs tbody tr[data-run-id]")) {
                      const list = (window.__seen[tr.dataset.runId] ||= []);
                      const text = tr.querySelector(".badge").textContent.trim();
                      if (list[list.length - 1] !== text) list.push(text);
                    }
                  };
                  record();
                  new MutationObserver(record).observe(document.querySelector("table.runs tbody"),
                    { subtree: true, childList: true, characterData: true });
                }"""
            )
            second_row = page.locator(rows[second.pk])
            expect(second_row.locator(".badge")).to_have_text("Queued")
            expect(page.locator(rows[first.pk]).locator(".badge")).to_have_text("Running", timeout=30_000)
            expect(page.locator(rows[first.pk]).locator(".progress")).not_to_have_attribute("aria-valuenow", "0")
            s.shot("first-running")
            expect(second_row.locator(".badge")).to_have_text("Running", timeout=RUN_TIMEOUT_MS)
            expect(second_row.locator(".eta")).to_contain_text("ETA ")
            s.shot("second-running")
            expect(second_row.locator(".badge")).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
            expect(second_row.locator(".progress")).to_have_attribute("aria-valuenow", "100")
            # the row came again from the server: its accuracy and host
            expect(second_row.locator('td[data-live="accuracy"]')).to_have_text(re.compile(r"^\d\.\d{3}$"))
            expect(second_row).to_contain_text(f"@ {worker.node}")
            expect(page.locator(rows[first.pk]).locator(".badge")).to_have_text("Succeeded")
            assert page.evaluate("() => window.__marker") == 1  # never reloaded
            seen = page.evaluate("() => window.__seen")
            s.shot("succeeded")

            # a run launched meanwhile is not in the list: its first status event brings a notice
            expect(page.locator("#runs-notice")).to_be_hidden()
            in_thread(new_run_cancelled, owner, second)
            expect(page.locator("#runs-notice")).to_be_visible()
            assert page.evaluate("() => window.__marker") == 1
            s.shot("notice")
            expect_clean(s)
    except BaseException:
        print(f"--- worker log ---\n{worker.log()}")
        raise

    assert seen[str(first.pk)][-2:] == ["Running", "Succeeded"], seen  # it may have started before the page
    assert seen[str(second.pk)] == ["Queued", "Running", "Succeeded"], seen
    for r in (first, second):
        r.refresh_from_db()
        assert r.status == Run.Status.SUCCEEDED, r.error
