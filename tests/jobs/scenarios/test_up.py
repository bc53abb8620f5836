"""Smoke test of `make up`'s zero-setup path: the launcher, as the README's command 1 runs it.

No DATABASE_URL and no REDIS_URL: the launcher must bring SQLite (in a fresh KDWEB_DATA_DIR) and an embedded
Redis on a unix socket, migrate, load the demo, serve the pages and run a worker; a job submitted through the
services must be trained by that worker; SIGTERM, SIGINT and the death of a child must each stop the whole
process tree and leave no process behind.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
READY_TIMEOUT_S = 150
RUN_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
SERVICE_VARS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Launched:
    process: subprocess.Popen
    data_dir: Path
    port: int
    log_path: Path
    env: dict[str, str]
    redis_url: str = ""
    password: str = ""
    descendants: list[psutil.Process] = field(default_factory=list)

    def log(self, tail: int = 120) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n--- launcher output (last lines) ---\n{self.log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "kdweb is up: " in text:
                self.redis_url = re.search(r"REDIS_URL=(\S+)", text).group(1)
                login = re.search(r"login: demo / (\S+)", text)
                self.password = login.group(1) if login else ""
                return
            if self.process.poll() is not None:
                self.fail(f"the launcher exited with status {self.process.returncode} before it was ready")
            time.sleep(0.5)
        self.fail(f"the launcher printed no URL within {READY_TIMEOUT_S} s")

    def record_descendants(self) -> list[psutil.Process]:
        self.descendants = psutil.Process(self.process.pid).children(recursive=True)
        return self.descendants

    def stop(self, sig: int) -> int:
        """Send ``sig``, wait for the launcher, return its status; fail if it or any descendant survives."""
        self.record_descendants()
        commands = " | ".join(" ".join(p.cmdline()) for p in self.descendants if alive(p))
        for name in ("redis-server", "daphne", "celery"):
            assert name in commands, f"no {name} among the launcher's processes: {commands}"
        self.process.send_signal(sig)
        return self.wait_stopped(f"after {signal.Signals(sig).name}")

    def wait_stopped(self, when: str) -> int:
        try:
            status = self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill_everything()
            self.fail(f"the launcher did not exit within {STOP_TIMEOUT_S} s {when}")
        left = [p for p in self.descendants if alive(p)]
        if left:
            described = [f"{p.pid} {' '.join(p.cmdline())}" for p in left]
            self.kill_everything()
            self.fail(f"processes left behind {when}: {described}")
        return status

    def kill_everything(self) -> None:
        for p in [*self.descendants, psutil.Process(self.process.pid)]:
            if alive(p):
                p.kill()


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def launch(data_dir: Path, *args: str) -> Launched:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    port = free_port()
    env.update(KDWEB_DATA_DIR=str(data_dir), KDWEB_PORT=str(port), KDWEB_STOP_TIMEOUT="10")
    env.pop("KDWEB_DEMO_PASSWORD", None)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"launcher-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kdweb.launcher", *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Launched(process, data_dir, port, log_path, env)


@pytest.fixture(scope="module")
def up_dir(tmp_path_factory) -> Path:
    """One data folder for the module: the first launch starts from nothing, later ones reuse it."""
    return tmp_path_factory.mktemp("up")


@pytest.fixture
def launched(up_dir):
    started = []

    def _launch(*args: str) -> Launched:
        up = launch(up_dir, *args)
        started.append(up)
        up.wait_ready()
        return up

    yield _launch
    for up in started:  # a failed test must not leave a server behind
        if up.process.poll() is None:
            up.record_descendants()
            up.kill_everything()
            up.process.wait(10)


def session(up: Launched) -> urllib.request.OpenerDirector:
    """An HTTP client logged in as the demo user through the login form (CSRF token and cookie)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{up.url}/login/", timeout=60) as response:
        assert response.status == 200
        form = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token, f"no CSRF token in the login page:\n{form[:2000]}"
    data = urllib.parse.urlencode(
        {"username": "demo", "password": up.password, "csrfmiddlewaretoken": token.group(1)}
    ).encode()
    with opener.open(f"{up.url}/login/", data=data, timeout=60) as response:
        assert response.status == 200
        assert urllib.parse.urlparse(response.url).path != "/login/", "the demo login was refused"
    return opener


SUBMIT = """
import json
from django.contrib.auth import get_user_model
from jobs import services
from jobs.models import Team

user = get_user_model().objects.get(username="demo")
team = Team.objects.get(name="demo")
teacher = services.teacher_register(user=user, team=team, name="tiny-bert", source={teacher!r})
dataset = services.dataset_create(
    user=user, team=team, name="reviews", source={reviews!r}, text_column="review", label_column="sentiment"
)
sections = {{
    "student": {{"layers": 2, "layer_map": "uniform"}},
    "data": {{"max_length": 24}},
    "optim": {{"batch_size": 8, "max_steps": 3, "lr": 1e-3}},
    "checkpoint_every": 1000,
    "latency_repeats": 1,
    "eval_batch_size": 32,
}}
run = services.run_create(
    user=user, teacher=teacher, dataset=dataset, kind="kd_feature", name="smoke", sections=sections
)
print("RUN", run.pk)
"""


def submit_run(up: Launched, assets: dict[str, Path]) -> int:
    """Register the tiny teacher and data and create a run, as another process against the same services."""
    # local files are registered from the demo's import folder, var/imports (the launcher's KDWEB_IMPORT_ROOTS)
    imports = up.data_dir / "imports"
    assert imports.is_dir()
    shutil.copytree(assets["teacher"], imports / "teacher", dirs_exist_ok=True)
    shutil.copy(assets["reviews"], imports / "reviews.csv")
    code = SUBMIT.format(teacher=str(imports / "teacher"), reviews=str(imports / "reviews.csv"))
    env = {**up.env, "REDIS_URL": up.redis_url, "KDWEB_IMPORT_ROOTS": str(imports)}
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    found = re.search(r"^RUN (\d+)$", done.stdout, re.M)
    if done.returncode != 0 or not found:
        up.fail(f"submitting the run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return int(found.group(1))


def run_row(up: Launched, run_id: int) -> tuple[str, str]:
    with sqlite3.connect(f"file:{up.data_dir / 'kdweb.sqlite3'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT status, error FROM jobs_run WHERE id = ?", (run_id,)).fetchone()


def test_zero_setup_serves_trains_and_stops_on_sigterm(launched, assets):
    started = time.monotonic()
    up = launched()
    ready_s = time.monotonic() - started
    assert up.redis_url.startswith(f"unix://{up.data_dir}"), "no embedded Redis on a private socket"
    assert (up.data_dir / "kdweb.sqlite3").exists(), "SQLite is not in KDWEB_DATA_DIR"
    assert up.password == "demo-kdweb"

    client = session(up)
    with client.open(f"{up.url}/", timeout=60) as response:
        assert response.status == 200 and urllib.parse.urlparse(response.url).path == "/"

    run_id = submit_run(up, assets)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    status, error = run_row(up, run_id)
    while status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(1)
        status, error = run_row(up, run_id)
    if status != "succeeded":
        up.fail(f"run {run_id} is {status} after at most {RUN_TIMEOUT_S} s; error: {error}")
    with client.open(f"{up.url}/runs/{run_id}/", timeout=60) as response:
        assert response.status == 200
        assert "smoke" in response.read().decode()

    stop_started = time.monotonic()
    status = up.stop(signal.SIGTERM)
    assert status == 0, f"exit status {status} after SIGTERM\n{up.log()}"
    assert not (up.data_dir / "redis" / "redis.sock").exists(), "the Redis socket was left behind"
    print(f"ready in {ready_s:.1f} s, stopped in {time.monotonic() - stop_started:.1f} s")


def test_restart_reuses_the_data_and_stops_on_sigint(launched):
    up = launched()  # the same data folder: migrate and demo again must be no-ops, the login unchanged
    assert "demo user exists" in up.log(tail=10_000)
    with urllib.request.urlopen(f"{up.url}/login/", timeout=60) as response:
        assert response.status == 200
    client = session(up)
    with client.open(f"{up.url}/admin/auth/user/", timeout=60) as response:  # the demo user administers users
        assert response.status == 200 and urllib.parse.urlparse(response.url).path == "/admin/auth/user/"
    # the local demo prints its mail: an invitation appears in make up's output
    with client.open(f"{up.url}/teams/", timeout=60) as response:
        team_page = re.search(r'href="(/teams/\d+/)">demo</a>', response.read().decode()).group(1)
    with client.open(f"{up.url}{team_page}", timeout=60) as response:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode()).group(1)
    form = {"who": "newcomer@example.org", "role": "member", "csrfmiddlewaretoken": token}
    with client.open(f"{up.url}{team_page}invite/", data=urllib.parse.urlencode(form).encode(), timeout=60) as response:
        assert "Invitation mailed to newcomer@example.org" in response.read().decode()
    printed = up.log(tail=10_000)
    assert "Subject: You are invited to the team demo on kdweb" in printed and "To: newcomer@example.org" in printed
    status = up.stop(signal.SIGINT)
    assert status == 0, f"exit status {status} after SIGINT\n{up.log()}"


def test_a_dead_child_stops_the_rest(launched):
    up = launched("--no-demo")
    worker = next(
        (p for p in up.record_descendants() if "celery" in " ".join(p.cmdline()) and p.ppid() == up.process.pid),
        None,
    )
    assert worker is not None, f"no worker among {[p.cmdline() for p in up.descendants]}"
    worker.kill()
    status = up.wait_stopped("after its worker was killed")
    assert status != 0, "the launcher exited 0 although its worker died"
    assert "worker exited with status SIGKILL" in up.log()
