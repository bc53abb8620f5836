"""What a running run survives, with a real worker and real PostgreSQL: its database connections cut, its run
folder gone, a cancel in the finish (evaluation, latency measurement, export). Each ends with every step's points
stored exactly once, and a run that had to stop resumes from its checkpoint.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token

from jobs import services
from jobs.models import MetricPoint, Run
from tests.jobs.conftest import REPO, WorkerProcess, daphne, new_queue, process_env, start_worker, stop_worker
from tests.jobs.wsclient import WebSocket

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = 600  # 50 to 130 steps a second: a few seconds of training, checkpoints every 10 steps
SECTIONS = {
    "latency_repeats": 1,
    "checkpoint_every": 10,
    "eval_every": 25,
    "student": {"layers": 2},
    "optim": {"max_steps": STEPS, "batch_size": 8},
    "data": {"max_length": 24},
}
SERIES = ("loss/total", "loss/task", "loss/output", "loss/feature", "loss/attention", "share/feature", "lr")


@pytest.fixture
def worker(data_dir: Path) -> Iterator[WorkerProcess]:
    """A worker of this test's own, on the test's data folder (where the services look for checkpoints); its
    database connections carry the queue's name as their application_name (PGAPPNAME), so the test finds them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    queue = new_queue()
    worker = start_worker(queue, data_dir, process_env(data_dir, PGAPPNAME=queue))
    try:
        yield worker
    finally:
        stop_worker(worker)


def at_step(worker: WorkerProcess, run: Run, step: int) -> Run:
    run = worker.wait_for(run, until=lambda r: r.is_finished or r.step >= step)
    assert run.status == Run.Status.RUNNING, f"{run.status} at step {run.step}: {run.error}"
    return run


def terminate_backends(application_name: str) -> int:
    """``pg_terminate_backend`` on every connection of that name, as a database restart or failover does."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


def assert_every_step_once(run: Run) -> None:
    """Each series has one point per step, 1 .. total, and the validation one every 25 steps."""
    for name in SERIES:
        steps = list(MetricPoint.objects.filter(run=run, name=name).order_by("step").values_list("step", flat=True))
        assert steps == list(range(1, run.total_steps + 1)), name
    val = list(MetricPoint.objects.filter(run=run, name="val/accuracy").order_by("step").values_list("step", flat=True))
    assert val == list(range(25, run.total_steps + 1, 25))


def log_of(run: Run) -> list[str]:
    return list(run.log_lines.order_by("id").values_list("text", flat=True))


def test_a_run_survives_its_database_connections_cut_twice(worker, owner, tiny_teacher, tiny_dataset):
    run = at_step(worker, worker.launch(owner, tiny_teacher, tiny_dataset, SECTIONS, name="cut"), 50)
    assert terminate_backends(worker.queue) >= 1  # the training thread's and the monitor's connections
    run = at_step(worker, run, 300)
    assert terminate_backends(worker.queue) >= 1
    run = worker.wait_for(run)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert run.attempts == 1  # the same attempt went on: no resume was needed
    assert "database connection lost" in worker.log(tail=2000)  # it did reconnect
    assert_every_step_once(run)


def test_a_run_folder_gone_fails_clearly_and_resumes_once_it_is_back(worker, owner, tiny_teacher, tiny_dataset):
    run = at_step(worker, worker.launch(owner, tiny_teacher, tiny_dataset, SECTIONS, name="folder"), 50)
    folder = services.run_output_dir(run)
    away = folder.with_name(f"{folder.name}.away")
    os.killpg(worker.process.pid, signal.SIGSTOP)  # still, so the trainer cannot recreate the folder in between
    try:
        folder.rename(away)  # the disk it was on is gone, and a file stands at its path
        folder.write_text("not a folder")
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)
    run = worker.wait_for(run)
    assert run.status == Run.Status.FAILED and run.step < STEPS
    assert run.error.splitlines()[0] == (
        f"the run folder {folder} cannot be written (Not a directory: {folder / 'checkpoint.tmp'}); "
        "fix that, then resume the run: it continues from its last checkpoint"
    )
    assert log_of(run)[-1].startswith(f"failed: the run folder {folder} cannot be written")

    folder.unlink()  # fixed: the folder is back, with its checkpoint
    away.rename(folder)
    services.run_resume(user=owner, run=run)
    run = worker.wait_for(run)
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert (run.attempts, run.error) == (2, "")
    assert any(line.startswith("resumed from the checkpoint at step ") for line in log_of(run))
    assert_every_step_once(run)


def kdweb(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdweb_client", *args],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
    )


def finish_status_events(server: str, run: Run, user, seconds: float) -> list[dict]:
    """The status events a page of ``run`` receives within ``seconds``, after its greeting."""
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    @async_to_sync
    async def listen() -> list[dict]:
        socket = await WebSocket.connect(server, f"/ws/runs/{run.pk}/", cookie)
        received: list[dict] = []
        try:
            async with asyncio.timeout(seconds):
                while True:
                    received.append(await socket.receive())
        except TimeoutError:
            return [m for m in received[2:] if m["type"] == "status"]  # past the backfill and the status
        finally:
            await socket.close()

    return listen()


# A finish of ~10-30 s (1,000 timed passes at two batch sizes for student and teacher) after 20 quick steps
LONG_FINISH = {**SECTIONS, "latency_repeats": 1000, "optim": {"max_steps": 20, "batch_size": 8}}
LONG_FINISH["data"] = {"max_length": 64}


def test_a_cancel_in_the_finish_stops_it_and_a_resume_redoes_only_the_finish(
    worker, owner, tiny_teacher, tiny_dataset, data_dir
):
    with daphne(process_env(data_dir), data_dir / "daphne.log") as url:
        env = {**os.environ, "KDWEB_URL": url, "KDWEB_TOKEN": Token.objects.create(user=owner).key}
        run = worker.launch(owner, tiny_teacher, tiny_dataset, LONG_FINISH, name="long finish")
        run = worker.wait_for(run, until=lambda r: r.phase == "measuring" or r.is_finished)
        assert run.status == Run.Status.RUNNING and run.step == 20, run.status
        # the finish reports its phase, share and the time it still takes, stored and sent live
        assert run.progress == 1 and run.eta_s > 0, (run.progress, run.eta_s)
        seen = finish_status_events(url, run, owner, seconds=3)
        assert len(seen) >= 2 and all(e["phase"] == "measuring" and e["eta_s"] > 0 for e in seen), seen
        shares = [e["phase_progress"] for e in seen]
        assert shares == sorted(shares) and shares[0] < shares[-1] < 1, shares
        cancelled = kdweb("cancel", str(run.pk), env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"run {run.pk}: cancel requested; it is running" in cancelled.stderr

        run = worker.wait_for(run)
        assert run.status == Run.Status.CANCELLED, run.error
        # stopped within the measurement, not after it: nothing exported, the final checkpoint kept
        assert run.phase == "measuring" and run.phase_progress < 1
        assert not run.artifacts.exists() and not (services.run_output_dir(run) / "export").exists()
        log = log_of(run)
        assert "stopping while measuring: the final checkpoint stays, a resume redoes the finish" in log
        assert log[-1] == "stopped while measuring, after training: cancelled; resume redoes the finish"

        resumed = kdweb("resume", str(run.pk), "--watch", env=env)  # the worker is free for it
        assert resumed.returncode == 0, f"{resumed.stderr}\n{worker.log()}"
        assert re.search(r"running · measuring \d+% · ETA \d\d:\d\d", resumed.stderr), resumed.stderr
        assert f"run {run.pk} succeeded at step 20 / 20" in resumed.stderr
    run.refresh_from_db()
    assert run.attempts == 2 and run.artifacts.count() == 1
    assert set(run.evaluations.values_list("role", flat=True)) == {"student", "teacher"}
    log = log_of(run)
    assert "resumed from the checkpoint at step 20 / 20" in log  # the finish again, no step trained twice
    steps = list(MetricPoint.objects.filter(run=run, name="loss/total").order_by("step").values_list("step", flat=True))
    assert steps == list(range(1, 21))
