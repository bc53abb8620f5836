"""Fixtures of the web tests: the personas, registered tiny teachers and data, and a real Celery worker.

Personas follow healthchecks' alice/bob/charlie: ``owner``, ``member`` and ``viewer`` belong to team
"alpha" with those roles, ``outsider`` belongs to "beta" only. Nothing kdweb ships is mocked: teachers and
data sets are registered through the services, and runs are trained by a worker process that reads the
test database and the test Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from jobs import services
from jobs.models import DatasetSpec, Membership, Run, Teacher, Team

REPO = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT_S = 60
RUN_TIMEOUT_S = 180
KD_SECTIONS = {"student": {"layers": 2}, "optim": {"max_steps": 4, "batch_size": 8}, "data": {"max_length": 24}}


# --- where files go ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def data_dir(request, settings, tmp_path) -> Path:
    """Uploads, run folders and exports land in a temporary folder (the worker's, for worker tests)."""
    if "celery_worker_process" in request.fixturenames:
        root = request.getfixturevalue("celery_worker_process").data_dir
    else:
        root = tmp_path / "data"
    settings.DATA_DIR = root
    settings.MEDIA_ROOT = root / "media"
    settings.RUNS_DIR = root / "runs"
    return root


# --- personas ---------------------------------------------------------------------------------------


def _user(team: Team, username: str, role: str):
    user = get_user_model().objects.create_user(username=username)  # no password: hashing one is slow
    Membership.objects.create(team=team, user=user, role=role)
    return user


def _persona(username: str, role: str, team: str = "team"):
    """A fixture: the user ``username``, with ``role`` in the team of the fixture named ``team``."""

    def persona(request):
        return _user(request.getfixturevalue(team), username, role)

    return pytest.fixture(persona)


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="alpha")


@pytest.fixture
def other_team(db) -> Team:
    return Team.objects.create(name="beta")


owner = _persona("olivia", Membership.Role.OWNER)
member = _persona("mateo", Membership.Role.MEMBER)
viewer = _persona("vera", Membership.Role.VIEWER)
outsider = _persona("oscar", Membership.Role.OWNER, team="other_team")


@pytest.fixture
def login(client):
    """``login(user)`` logs the test client in as ``user`` and returns the client."""

    def _login(user):
        client.force_login(user)
        return client

    return _login


# --- registered teachers and data -------------------------------------------------------------------


def reviews_dataset(user, team: Team, name: str = "reviews", **source) -> DatasetSpec:
    """The toy reviews (columns review, sentiment) registered through the service: ``source=`` or ``upload=``."""
    return services.dataset_create(
        user=user, team=team, name=name, text_column="review", label_column="sentiment", **source
    )


def teacher_row(team: Team, name: str, architecture: dict) -> Teacher:
    """A Teacher row with a hand-written architecture, for pages that only show it (no model folder)."""
    return Teacher.objects.create(team=team, name=name, source=f"package:{name}", architecture=architecture)


@pytest.fixture
def tiny_teacher(owner, team, assets) -> Teacher:
    """The tiny fine-tuned BERT (4 blocks, width 32, labels neg/pos), registered for team alpha."""
    return services.teacher_register(user=owner, team=team, name="tiny-bert", source=str(assets["teacher"]))


@pytest.fixture
def tiny_backbone(owner, team, assets) -> Teacher:
    """The same shape without a task head: it must be fine-tuned before it can teach."""
    return services.teacher_register(user=owner, team=team, name="tiny-backbone", source=str(assets["backbone"]))


@pytest.fixture
def tiny_dataset(owner, team, assets) -> DatasetSpec:
    """The toy reviews CSV (240 rows, labels neg/pos), registered for team alpha."""
    return reviews_dataset(owner, team, source=str(assets["reviews"]))


@pytest.fixture
def queued_run(owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks) -> Run:
    """A feature-KD run of the tiny teacher on the reviews, queued in team alpha (nothing sent to a broker)."""
    with django_capture_on_commit_callbacks(execute=False):
        return services.run_create(
            user=owner, teacher=tiny_teacher, dataset=tiny_dataset, kind="kd_feature", name="r", sections=KD_SECTIONS
        )


# --- a real Celery worker ---------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """A ``celery worker`` subprocess consuming one queue of its own."""

    queue: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def log(self, tail: int = 200) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def wait_for(self, run: Run, timeout: float = RUN_TIMEOUT_S) -> Run:
        """Poll the database until ``run`` is finished; fail with its error and this worker's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.is_finished:
                return run
            time.sleep(0.5)
        pytest.fail(f"run {run.pk} is still {run.status} after {timeout} s; error: {run.error!r}\n{self.log()}")


def _database_url(db: dict) -> str:
    """A DATABASE_URL (dj-database-url syntax) for ``settings.DATABASES["default"]``."""
    user, password = quote(db.get("USER") or "", safe=""), quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    host = db.get("HOST") or "localhost"
    host = quote(host, safe="") if host.startswith("/") else host  # a socket folder is percent-encoded
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}"


def _consumed(queue: str) -> bool:
    """Whether a running worker consumes ``queue`` (Celery's remote control, over the broker)."""
    from kdweb.celery import app

    replies = app.control.inspect(timeout=1).active_queues() or {}
    return any(q["name"] == queue for queues in replies.values() for q in queues)


@pytest.fixture(scope="module")
def celery_worker_process(django_db_setup, tmp_path_factory):
    """A real worker, started once per module, reading the test database (PostgreSQL only).

    The worker is another process, so it sees only committed data: tests that use it need
    ``@pytest.mark.django_db(transaction=True)``.
    """
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail(
            "the worker tests need PostgreSQL, which a worker process can share with the tests: "
            "set DATABASE_URL, e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/kdweb"
        )
    queue = f"kdweb-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path_factory.mktemp("worker-data")
    log_path = data_dir / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(db),  # the test database, created by django_db_setup
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,  # the broker the tests send to
        "KDWEB_DATA_DIR": str(data_dir),
        "KDWEB_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        *(sys.executable, "-m", "celery", "-A", "kdweb", "worker", "-Q", queue, "-n", f"{queue}@%h"),
        *("--concurrency", "1", "--pool", "solo", "--loglevel", "INFO"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = WorkerProcess(queue, data_dir, log_path, process)
    try:
        _wait_until_ready(worker)
        yield worker
    finally:
        _stop(worker)


def _wait_until_ready(worker: WorkerProcess) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            pytest.fail(f"the worker exited with code {worker.process.returncode}:\n{worker.log()}")
        if _consumed(worker.queue):
            return
        time.sleep(0.5)
    pytest.fail(f"the worker did not consume {worker.queue} within {WORKER_READY_TIMEOUT_S} s:\n{worker.log()}")


def _stop(worker: WorkerProcess) -> None:
    worker.process.send_signal(signal.SIGTERM)  # warm shutdown: finishes the current task, then exits
    try:
        worker.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait(timeout=10)
    _forget_queue(worker.queue)
    assert worker.process.returncode is not None, "the worker did not exit"


def _forget_queue(queue: str) -> None:
    """Drop the queue and its bindings from the broker, so test runs leave nothing behind."""
    from kombu import Exchange, Queue

    from kdweb.celery import app

    with app.connection_for_write() as connection:
        bound = Queue(queue, Exchange(queue), routing_key=queue)(connection.default_channel)
        bound.declare()  # makes the binding known to this channel, so delete removes it too
        bound.delete()
