"""Cancel, resume and crashes, with real worker processes: a run's stored results are never lost or doubled.

Every scenario compares the stored points of a stopped-and-resumed run with those of an uninterrupted run
of the same configuration and seed, trained by the same kind of worker: equal, value for value, means the
resume continued exactly where training stopped (no gap, no duplicate, no drift of the data order or RNG).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from distill.checkpoint import has_checkpoint
from jobs import services
from jobs.models import MetricPoint, Run
from tests.jobs.browser import chart_steps, chromium_session, in_thread, open_as, session_cookie, total_points_above
from tests.jobs.conftest import (
    REPO,
    WorkerProcess,
    daphne,
    free_port,
    new_queue,
    process_env,
    redis_server,
    start_worker,
    stop_worker,
)

pytestmark = pytest.mark.django_db(transaction=True)

# The worker stores its step once a second, and the tiny model trains 50 to 130 steps a second on one thread:
# a kill or a cancel at a stored step lands up to ~150 steps later, still mid-run.
STEPS = 600


# checkpoints every 10 steps: a worker killed between two of them redoes a few steps after resuming
SECTIONS = {
    "latency_repeats": 1,
    "checkpoint_every": 10,
    "eval_every": 25,
    "student": {"layers": 2},
    "optim": {"max_steps": STEPS, "batch_size": 8},
    "data": {"max_length": 24},
}
HEARTBEAT_S = "0.5"  # the killed worker's run goes stale within seconds, not the default 30 s
STALE_AFTER_S = 3.0


def stored(run: Run) -> list[tuple[str, int, float]]:
    return sorted(MetricPoint.objects.filter(run=run).values_list("name", "step", "value"))


def at_step(worker: WorkerProcess, run: Run, step: int) -> Run:
    return worker.wait_for(run, until=lambda r: r.status == Run.Status.RUNNING and r.step >= step)


def assert_same_points(resumed: Run, reference: Run) -> None:
    """Every series has each step once, with the uninterrupted run's values."""
    assert reference.status == Run.Status.SUCCEEDED, reference.error
    points, expected = stored(resumed), stored(reference)
    assert [(n, s) for n, s, _ in points] == [(n, s) for n, s, _ in expected]  # no gap, no duplicate
    assert points == expected  # and the same numbers: training continued exactly where it stopped
    assert sorted({s for n, s, _ in points if n == "loss/total"}) == list(range(1, resumed.total_steps + 1))


def test_a_cancelled_run_resumes_where_it_stopped(celery_worker_process, owner, tiny_teacher, tiny_dataset):
    worker = celery_worker_process
    reference = worker.wait_for(worker.launch(owner, tiny_teacher, tiny_dataset, SECTIONS, name="reference"))
    assert reference.status == Run.Status.SUCCEEDED, reference.error

    run = at_step(worker, worker.launch(owner, tiny_teacher, tiny_dataset, SECTIONS, name="cancelled"), 15)
    services.run_cancel(user=owner, run=run)
    run = worker.wait_for(run)
    assert run.status == Run.Status.CANCELLED, run.error
    assert 15 <= run.step < STEPS and not run.artifacts.exists()
    assert has_checkpoint(services.run_output_dir(run))

    services.run_resume(user=owner, run=run)
    run = worker.wait_for(run)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert (run.attempts, run.step, run.cancel_requested) == (2, STEPS, False)
    assert_same_points(run, reference)
    log = list(run.log_lines.order_by("id").values_list("text", flat=True))
    assert f"resumed from the checkpoint at step {_stopped_step(log)} / {STEPS}" in log


def watchdog_until_interrupted(env: dict[str, str], run: Run, data_dir) -> Run:
    """Run ``manage.py watchdog`` (periodic, as deployed) until it marks ``run`` interrupted."""
    log_path = data_dir / "watchdog.log"
    with log_path.open("wb") as log:
        watchdog = subprocess.Popen(
            [sys.executable, "manage.py", "watchdog", "--stale-after", "3", "--every", "0.5"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    said = f"run {run.pk}: no heartbeat for 3 s, marked interrupted"  # printed once the change is committed
    try:
        deadline = time.monotonic() + 60
        while said not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        watchdog.terminate()
        watchdog.wait(timeout=10)
    assert said in log_path.read_text(), log_path.read_text()
    run.refresh_from_db()
    assert run.status == Run.Status.INTERRUPTED
    return run


def _stopped_step(log: list[str]) -> int:
    line = next(line for line in log if line.startswith("stopping at step "))
    return int(line.removeprefix("stopping at step ").split(":")[0])


def test_a_killed_worker_leaves_an_interrupted_run_that_resumes_without_loss(
    celery_worker_process, owner, tiny_teacher, tiny_dataset, tmp_path
):
    """SIGKILL twice: once found by the restarted worker at start-up, once by the watchdog's stale check."""
    reference_worker = celery_worker_process
    reference = reference_worker.launch(owner, tiny_teacher, tiny_dataset, SECTIONS, name="reference")

    queue, data_dir = new_queue(), tmp_path
    env = process_env(data_dir, KDWEB_HEARTBEAT_S=HEARTBEAT_S, KDWEB_STALE_AFTER_S=str(STALE_AFTER_S))
    worker = start_worker(queue, data_dir, env)
    try:
        run = at_step(worker, worker.launch(owner, tiny_teacher, tiny_dataset, SECTIONS, name="crashy"), 15)
        worker.kill()  # 1. the host dies mid-run: nothing is cleaned up
        run.refresh_from_db()
        assert run.status == Run.Status.RUNNING  # nobody knows yet
        stale = timedelta(seconds=STALE_AFTER_S + 0.5)
        worker.wait_for(run, timeout=60, until=lambda r: r.heartbeat_at < timezone.now() - stale)

        worker = start_worker(queue, data_dir, env)  # the same node name comes back, its run's heartbeat stale
        run = worker.wait_for(run, timeout=30, until=lambda r: r.status == Run.Status.INTERRUPTED)
        assert f"{worker.node} started again" in run.log_lines.last().text

        services.run_resume(user=owner, run=run)
        run = at_step(worker, run, 300)
        worker.kill()  # 2. and again, later; this time no worker comes back to tell
        run = watchdog_until_interrupted(env, run, data_dir)
        assert 300 <= run.step < STEPS
        assert run.log_lines.last().text.startswith(f"interrupted at step {run.step}: no heartbeat for 3 s")

        worker = start_worker(queue, data_dir, env)
        services.run_resume(user=owner, run=run)
        run = worker.wait_for(run)
    finally:
        stop_worker(worker)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.attempts == 3

    assert_same_points(run, reference_worker.wait_for(reference))


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_warm_shutdown_checkpoints_the_running_run_which_resumes_without_loss(
    celery_worker_process, owner, tiny_teacher, tiny_dataset, tmp_path, pool
):
    """SIGTERM (a deploy, Ctrl-C of ``make up``): the worker marks its run interrupted (it knows the run by
    its task, also when a pool process of its own runs that), the trainer checkpoints at its next step and
    returns, and the worker exits well before a cold shutdown would kill it."""
    reference_worker = celery_worker_process
    reference = reference_worker.launch(owner, tiny_teacher, tiny_dataset, SECTIONS, name="reference")

    queue, data_dir = new_queue(), tmp_path
    env = process_env(data_dir)
    worker = start_worker(queue, data_dir, env, pool=pool)
    try:
        run = at_step(worker, worker.launch(owner, tiny_teacher, tiny_dataset, SECTIONS, name="redeployed"), 15)
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=30) == 0, worker.log()
        run.refresh_from_db()
        assert run.status == Run.Status.INTERRUPTED and 15 <= run.step < STEPS, (run.status, run.step)
        log = list(run.log_lines.order_by("id").values_list("text", flat=True))
        said = f": {worker.node} is shutting down; resume continues from the last checkpoint"
        assert any(line.startswith("interrupted at step ") and line.endswith(said) for line in log), log
        stopped = _stopped_step(log)  # the checkpoint is at the step where it stopped, not an older one

        worker = start_worker(queue, data_dir, env)
        services.run_resume(user=owner, run=run)
        run = worker.wait_for(run)
    finally:
        stop_worker(worker)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert f"resumed from the checkpoint at step {stopped} / {STEPS}" in run.log_lines.values_list("text", flat=True)

    assert_same_points(run, reference_worker.wait_for(reference))


def test_a_second_worker_under_the_same_name_leaves_the_live_ones_run_alone(
    owner, tiny_teacher, tiny_dataset, tmp_path
):
    """A second worker started under the node name of a live one (one more ``make up`` with the same queue on
    the host, overlapping deploys) interrupts the first one's run neither when it starts (the run's heartbeat
    is fresh) nor when it shuts down (it stops the runs of its own tasks only)."""
    queue = new_queue()
    env = process_env(tmp_path, KDWEB_HEARTBEAT_S=HEARTBEAT_S, KDWEB_STALE_AFTER_S=str(STALE_AFTER_S))
    sections = {**SECTIONS, "eval_every": 100_000, "checkpoint_every": 1000, "optim": {"max_steps": 100_000}}
    first = start_worker(queue, tmp_path, env)
    second = None
    try:
        run = at_step(first, first.launch(owner, tiny_teacher, tiny_dataset, sections, name="first's"), 15)
        second = start_worker(queue, tmp_path, env, log_name="second.log")  # ready: it has looked at the runs
        assert second.node == first.node
        run.refresh_from_db()
        assert run.status == Run.Status.RUNNING, second.log()

        second.process.send_signal(signal.SIGTERM)  # its warm shutdown
        assert second.process.wait(timeout=30) == 0, second.log()
        run = at_step(first, run, run.step + 20)  # still running, and training on

        services.run_cancel(user=owner, run=run)
        run = first.wait_for(run)
    finally:
        if second is not None and second.process.poll() is None:
            second.kill()
        stop_worker(first)
    assert run.status == Run.Status.CANCELLED and run.attempts == 1, run.error
    assert not any("interrupted" in line for line in run.log_lines.values_list("text", flat=True))


# --- Redis restarts mid-run ----------------------------------------------------------------------------------


# about 30 s, long enough to watch, lose Redis, get it back and still be training; under the 2,000 points
# a reloaded page's series are downsampled to, so page and database compare point for point
REDIS_STEPS = 1900


def test_a_redis_restart_mid_run_loses_no_point_and_the_open_page_ends_complete(
    owner, tiny_teacher, tiny_dataset, tmp_path
):
    """Broker and channel layer on one Redis (as ``make up`` runs it), killed and restarted mid-run: the run
    completes, the database has every point once, and the page that watched throughout shows them all.

    Inside the browser session the ORM runs in a thread of its own (``in_thread``, see tests/jobs/browser.py).
    """
    port, queue = free_port(), new_queue()
    url = f"redis://127.0.0.1:{port}/0"
    env = process_env(tmp_path, redis_url=url)
    sections = {**SECTIONS, "eval_every": 500, "optim": {"max_steps": REDIS_STEPS, "batch_size": 8}}
    with redis_server(port, tmp_path) as redis_process:
        worker = start_worker(queue, tmp_path, env)
        try:
            # on the default queue: the worker's queue is live on this test's Redis, not on the suite's, which
            # this process's launch checks; the message goes to the worker below (send_to)
            run = services.run_create(
                user=owner, teacher=tiny_teacher, dataset=tiny_dataset, kind="kd_feature", name="redis",
                sections=sections,
            )  # fmt: skip
            cookie = session_cookie(owner)
            with daphne(env, tmp_path / "daphne.log") as base, chromium_session(prefix="redis-restart-") as s:
                page = open_as(s, base, cookie, f"/runs/{run.pk}/")
                # queued only once the page watches: on an idle machine the run could otherwise end while
                # daphne and Chromium start
                send_to(url, run, queue)  # the worker's broker is this test's Redis, not the suite's
                total_points_above(page, 20, timeout_ms=60_000)
                s.shot("live")

                redis_process.kill()  # Redis dies: the worker trains on and stores every point
                redis_process.wait(timeout=10)
                expect(page.locator("#live-state")).to_contain_text("Reconnecting", timeout=20_000)
                s.shot("reconnecting")
                time.sleep(2)
                with redis_server(port, tmp_path):  # back, at the same address
                    back_at = in_thread(lambda: Run.objects.get(pk=run.pk).step)
                    assert back_at < REDIS_STEPS, "the run ended before Redis came back: make it longer"
                    # the page reconnects (after its backoff) and catches up, past the step stored when Redis
                    # came back and without a gap; if the run ends first, the page reloads with its results
                    page.wait_for_function(
                        "n => (window.kdwebLive?.lastStep || 0) > n || !!document.querySelector("
                        "'#run-status[data-status=succeeded]')",
                        arg=back_at,
                        timeout=90_000,
                    )
                    steps = chart_steps(page)
                    assert steps == list(range(1, len(steps) + 1)) and len(steps) > back_at
                    run = in_thread(worker.wait_for, run)
                    assert run.status == Run.Status.SUCCEEDED, f"{run.error}\n{worker.log()}"
                    expect(page.locator("#run-status")).to_have_attribute("data-status", "succeeded", timeout=30_000)
                    assert chart_steps(page) == list(range(1, REDIS_STEPS + 1))
                    s.shot("complete")
        finally:
            stop_worker(worker)
    steps = sorted(MetricPoint.objects.filter(run=run, name="loss/total").values_list("step", flat=True))
    assert steps == list(range(1, REDIS_STEPS + 1))  # no point lost, none twice
    for name in ("loss/task", "loss/output", "loss/feature", "loss/attention", "share/feature", "lr"):
        assert MetricPoint.objects.filter(run=run, name=name).count() == REDIS_STEPS, name


def send_to(broker_url: str, run: Run, queue: str) -> None:
    """Send the run's task to ``queue`` on ``broker_url`` (``run_create`` sent it to the suite's broker)."""
    from jobs.worker.tasks import run_execute
    from kdweb.celery import app

    with app.connection_for_write(broker_url) as connection:
        run_execute.apply_async((run.pk,), queue=queue, connection=connection)
