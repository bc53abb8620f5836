"""Runs launched while the broker is down: committed and queued at once (201), sent by ``manage.py watchdog``
once the broker is back, and each trained exactly once.

Everything is real and runs as deployed: the test's own Redis (broker and channel layer) that it kills and
starts again, daphne serving the API, a worker, and the periodic watchdog.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests
from rest_framework.authtoken.models import Token

from jobs import services
from jobs.models import MetricPoint, Run
from jobs.services import WAITING_FOR_BROKER
from tests.jobs.conftest import (
    REPO,
    daphne,
    free_port,
    new_queue,
    process_env,
    redis_server,
    start_worker,
    stop_worker,
)

pytestmark = pytest.mark.django_db(transaction=True)

SECTIONS = {
    "latency_repeats": 1,
    "student": {"layers": 2},
    "optim": {"max_steps": 4, "batch_size": 8},
    "data": {"max_length": 24},
}
WAITING = WAITING_FOR_BROKER.split("(")[0]  # the message's words before the broker's own error


def post(base: str, token: str, path: str, body: dict) -> requests.Response:
    return requests.post(f"{base}{path}", json=body, headers={"Authorization": f"Token {token}"}, timeout=120)


def log_of(run: Run) -> list[str]:
    return list(run.log_lines.order_by("id").values_list("text", flat=True))


def start_watchdog(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``manage.py watchdog`` as ``make up`` and docker-compose run it, only checking more often."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", "watchdog", "--every", "0.5"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_runs_launched_while_the_broker_is_down_run_once_when_it_is_back(
    client, owner, tiny_teacher, tiny_dataset, tmp_path
):
    port, queue = free_port(), new_queue()
    url = f"redis://127.0.0.1:{port}/0"
    # the web side's default queue is the worker's, as `make up` sets it
    env = process_env(tmp_path, redis_url=url, KDWEB_DEFAULT_QUEUE=queue)
    token = Token.objects.create(user=owner).key
    body = {"teacher": tiny_teacher.pk, "dataset": tiny_dataset.pk, "sections": SECTIONS}
    # a run cancelled while queued, to resume during the outage (it goes to the worker's queue then)
    cancelled = services.run_create(
        user=owner, teacher=tiny_teacher, dataset=tiny_dataset, kind="no_kd", name="resumed", sections=SECTIONS
    )
    services.run_cancel(user=owner, run=cancelled)
    Run.objects.filter(pk=cancelled.pk).update(queue=queue)
    watchdog_log = tmp_path / "watchdog.log"
    with redis_server(port, tmp_path) as broker:
        worker = start_worker(queue, tmp_path, env)
        try:
            with daphne(env, tmp_path / "daphne.log") as base:
                broker.kill()  # the broker dies; the web server stays up
                broker.wait(timeout=10)
                single = post(base, token, "/api/v1/runs/", body | {"kind": "kd_feature", "name": "alone"})
                study = post(base, token, "/api/v1/studies/", body | {"name": "outage"})
                resumed = post(base, token, f"/api/v1/runs/{cancelled.pk}/resume/", {})
            assert single.status_code == 201, single.text
            assert study.status_code == 201, study.text
            assert resumed.status_code == 200, resumed.text
            launched = [single.json(), *study.json()["runs"], resumed.json()]
            assert len(launched) == 5
            for answer in launched:
                assert (answer["status"], answer["waiting_for_broker"]) == ("queued", True), answer
            runs = [Run.objects.get(pk=answer["id"]) for answer in launched]
            for run in runs:
                assert run.enqueued_at is None
                assert any(line.startswith(WAITING) for line in log_of(run)), log_of(run)
            client.force_login(owner)
            assert "Waiting for the broker" in client.get(f"/runs/{runs[0].pk}/").content.decode()

            watchdog = start_watchdog(env, watchdog_log)  # it keeps trying while the broker is down
            try:
                time.sleep(2)
                with redis_server(port, tmp_path):  # back, at the same address, and empty
                    runs = [worker.wait_for(run) for run in runs]
                    time.sleep(2)  # a message sent twice would reach the idle worker by now
                    left = redis.Redis(port=port).llen(queue)
            finally:
                watchdog.terminate()
                watchdog.wait(timeout=30)
        finally:
            stop_worker(worker)

    said = watchdog_log.read_text()
    worker_log = worker.log(tail=100_000)
    for run in runs:
        assert run.status == Run.Status.SUCCEEDED, f"{run.error}\n{worker_log}\n{said}"
        assert run.attempts == 1 and run.enqueued_at is not None
        log = log_of(run)
        assert sum(line.startswith("attempt ") for line in log) == 1, log  # claimed once
        assert log.count(f"the broker answers again: sent to the queue {queue}") == 1, log
        assert said.count(f"run {run.pk}: sent to the broker\n") == 1, said
        steps = MetricPoint.objects.filter(run=run, name="loss/total").values_list("step", flat=True)
        assert sorted(steps) == [1, 2, 3, 4]  # each once
    assert left == 0  # no message left over
    assert worker_log.count("Task jobs.run_execute[") == 2 * len(runs), worker_log  # received, succeeded
    assert "not queued any more" not in worker_log
