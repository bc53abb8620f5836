"""The live view's websocket (jobs.live.consumers.RunConsumer) through the whole ASGI stack of kdweb.asgi.

Real parts only: the origin check and session middleware of ``kdweb.asgi``, the real channels-redis layer on
the test Redis (``REDIS_URL``, under a prefix of this test session so no other suite's events get in), and
PostgreSQL or SQLite rows committed by the test (``transaction=True``: the consumer reads the database from
another thread). Each test drives its sockets inside one ``async_to_sync`` call.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from distill.callbacks import CACHING, Control, TrainState
from distill.teacher_cache import Manifest
from jobs.live import events
from jobs.models import DatasetSpec, MetricPoint, Run
from jobs.worker.progress import RunMonitor
from kdweb.asgi import application
from tests.jobs.conftest import teacher_row

LOCAL_ORIGIN = (b"origin", b"http://localhost")
ARCH = {"model_type": "bert", "layers": 4, "hidden_size": 32, "heads": 4, "labels": ["neg", "pos"]}
PREFIX = f"kdweb-test-{uuid.uuid4().hex[:8]}"
TIMEOUT = 5

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def live_layer(settings):
    """channels-redis on the test Redis, its keys under a prefix of this session (channels resets its layers)."""
    default = django_settings.CHANNEL_LAYERS["default"]  # kdweb's connection settings, and a prefix
    settings.CHANNEL_LAYERS = {"default": {**default, "CONFIG": {**default["CONFIG"], "prefix": PREFIX}}}


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
        progress=0.25,
        step=30,
        total_steps=120,
        eta_s=90.0,
    )


def _points(run: Run, names: tuple[str, ...], steps: range) -> None:
    MetricPoint.objects.bulk_create(
        MetricPoint(run=run, name=name, step=step, value=1.0 / step + i)
        for i, name in enumerate(names)
        for step in steps
    )


def _cookie(user) -> tuple[bytes, bytes]:
    """The session cookie of ``user`` logged in through Django's test client (a real session row)."""
    client = Client()
    client.force_login(user)
    return (
        b"cookie",
        f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}".encode(),
    )


def _socket(run_id: int, user=None, query: str = "", origin: tuple[bytes, bytes] = LOCAL_ORIGIN):
    headers = [origin, (b"host", b"localhost")] + ([_cookie(user)] if user else [])
    return WebsocketCommunicator(application, f"/ws/runs/{run_id}/{query}", headers=headers)


async def _open(run_id: int, user, query: str = "") -> tuple[WebsocketCommunicator, dict, dict]:
    """A connected socket, with the two messages every connection starts with: backfill, then status."""
    communicator = await sync_to_async(_socket)(run_id, user, query)
    connected, code = await communicator.connect(timeout=TIMEOUT)
    assert connected, code
    backfill = await communicator.receive_json_from(timeout=TIMEOUT)
    status = await communicator.receive_json_from(timeout=TIMEOUT)
    return communicator, backfill, status


async def _refusal(communicator: WebsocketCommunicator) -> int | None:
    """The close code of a refused socket (accepted then closed, or closed at the handshake)."""
    connected, code = await communicator.connect(timeout=TIMEOUT)
    if connected:
        message = await communicator.receive_output(timeout=TIMEOUT)
        assert message["type"] == "websocket.close", message
        code = message.get("code")
    assert await communicator.receive_nothing(timeout=0.2)  # no backfill, no status
    await communicator.wait()
    return code


# --- who may watch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["owner", "member", "viewer"])
def test_it_lets_every_member_of_the_team_watch(request, persona, live_run):
    user = request.getfixturevalue(persona)
    _points(live_run, ("loss/task",), range(1, 4))

    @async_to_sync
    async def scenario():
        communicator, backfill, status = await _open(live_run.pk, user)
        await communicator.disconnect()
        return backfill, status

    backfill, status = scenario()
    assert backfill == {
        "type": "backfill",
        "series": {"loss/task": [[1, 1.0], [2, 0.5], [3, 1 / 3]]},
        "last_step": 3,
        "log": [],
        "log_last_id": 0,
    }
    assert status == {
        "type": "status",
        "run_id": live_run.pk,
        "status": "running",
        "progress": 0.25,
        "eta_s": 90.0,
        "step": 30,
        "total_steps": 120,
        "cancel_requested": False,
        "phase": "",
        "phase_progress": 0.0,
    }
    events.check_event(backfill)
    events.check_event(status)


def test_it_refuses_someone_of_another_team_as_if_the_run_did_not_exist(outsider, live_run):
    code = async_to_sync(_refusal)(_socket(live_run.pk, outsider))
    assert code == 4404


def test_it_refuses_an_unknown_run(owner, live_run):
    code = async_to_sync(_refusal)(_socket(live_run.pk + 1000, owner))
    assert code == 4404


def test_it_refuses_someone_not_logged_in(live_run):
    code = async_to_sync(_refusal)(_socket(live_run.pk))
    assert code == 4403


def test_it_refuses_a_page_of_another_site(owner, live_run):
    """A foreign Origin is refused at the handshake (AllowedHostsOriginValidator), even with a valid session."""

    @async_to_sync
    async def scenario():
        communicator = await sync_to_async(_socket)(live_run.pk, owner, origin=(b"origin", b"http://evil.example"))
        connected, _code = await communicator.connect(timeout=TIMEOUT)
        return connected

    assert scenario() is False


def test_it_refuses_a_socket_without_an_origin(owner, live_run):
    @async_to_sync
    async def scenario():
        communicator = WebsocketCommunicator(
            application, f"/ws/runs/{live_run.pk}/", headers=[await sync_to_async(_cookie)(owner)]
        )
        connected, _code = await communicator.connect(timeout=TIMEOUT)
        return connected

    assert scenario() is False


# --- backfill -----------------------------------------------------------------------------------------------


def test_it_downsamples_the_backfill_to_2000_points_per_series_keeping_both_ends(member, live_run):
    names = ("loss/task", "loss/total")
    _points(live_run, names, range(1, 5001))
    _points(live_run, ("val/accuracy",), range(500, 5001, 500))

    @async_to_sync
    async def scenario():
        communicator, backfill, _status = await _open(live_run.pk, member)
        await communicator.disconnect()
        return backfill

    backfill = scenario()
    assert set(backfill["series"]) == {"loss/task", "loss/total", "val/accuracy"}
    for i, name in enumerate(names):
        series = backfill["series"][name]
        assert len(series) == 2000
        assert series[0] == [1, 1.0 + i] and series[-1] == [5000, 1 / 5000 + i]
        steps = [step for step, _ in series]
        assert steps == sorted(set(steps))
    assert len(backfill["series"]["val/accuracy"]) == 10  # short series whole
    assert backfill["last_step"] == 5000


def test_it_sends_only_the_points_from_the_step_a_reconnecting_page_has(member, live_run):
    """From that step on, not after it: the page may hold a step's losses but not yet its validation
    metrics, which the worker stores in a later batch; it drops what it already has."""
    _points(live_run, ("loss/task", "val/accuracy"), range(1, 101))

    @async_to_sync
    async def scenario():
        communicator, backfill, status = await _open(live_run.pk, member, "?after=98")
        await communicator.disconnect()
        empty_communicator, empty, _status = await _open(live_run.pk, member, "?after=101")
        await empty_communicator.disconnect()
        return backfill, status, empty

    backfill, status, empty = scenario()
    assert backfill["series"] == {
        "loss/task": [[98, 1 / 98], [99, 1 / 99], [100, 1 / 100]],
        "val/accuracy": [[98, 1 / 98 + 1], [99, 1 / 99 + 1], [100, 1 / 100 + 1]],
    }
    assert backfill["last_step"] == 100 and status["type"] == "status"
    assert empty == {"type": "backfill", "series": {}, "last_step": 101, "log": [], "log_last_id": 0}


def test_it_sends_an_empty_backfill_for_a_run_without_points(viewer, live_run):
    @async_to_sync
    async def scenario():
        communicator, backfill, _status = await _open(live_run.pk, viewer)
        await communicator.disconnect()
        return backfill

    assert scenario() == {"type": "backfill", "series": {}, "last_step": 0, "log": [], "log_last_id": 0}


# --- live events ------------------------------------------------------------------------------------------------


def test_it_forwards_live_events_to_every_watcher_of_the_run_and_no_other(owner, viewer, live_run, team):
    other_run = Run.objects.create(
        team=team, name="other", kind=live_run.kind, teacher=live_run.teacher, dataset=live_run.dataset,
        config={}, queue="default",
    )  # fmt: skip
    metrics = {"type": "metrics", "points": [{"name": "loss/task", "step": 31, "value": 0.25}]}
    status = {"type": "status", "run_id": live_run.pk, "status": "running", "progress": 0.5, "eta_s": 12.0}
    log = {"type": "log", "lines": ["step 31: loss 0.25"], "ids": [31]}

    @async_to_sync
    async def scenario():
        first, _, _ = await _open(live_run.pk, owner)
        second, _, _ = await _open(live_run.pk, viewer)
        elsewhere, _, _ = await _open(other_run.pk, owner)
        for payload in (metrics, status, log):
            assert await sync_to_async(events.run_event_send)(live_run.pk, payload) is True
        received = [[await c.receive_json_from(timeout=TIMEOUT) for _ in range(3)] for c in (first, second)]
        nothing_elsewhere = await elsewhere.receive_nothing(timeout=0.3)
        for c in (first, second, elsewhere):
            await c.disconnect()
        return received, nothing_elsewhere

    received, nothing_elsewhere = scenario()
    assert received == [[metrics, status, log]] * 2
    assert nothing_elsewhere


def test_it_leaves_the_group_when_the_socket_closes(member, live_run):
    group_key = f"{PREFIX}:group:{events.run_group(live_run.pk)}"  # channels-redis's sorted set of the group
    r = redis.Redis.from_url(django_settings.REDIS_URL)

    @async_to_sync
    async def scenario():
        communicator, _, _ = await _open(live_run.pk, member)
        members_open = await sync_to_async(r.zcard)(group_key)
        await communicator.disconnect()
        return members_open

    assert scenario() == 1
    assert r.zcard(group_key) == 0


def test_it_publishes_status_when_a_run_fails(member, live_run):
    """services.run_fail publishes its log line and the final status once its transaction commits."""
    from jobs import services

    @async_to_sync
    async def scenario():
        communicator, _, _ = await _open(live_run.pk, member)
        await sync_to_async(services.run_fail)(live_run.pk, "RuntimeError: boom\n\nTraceback ...")
        messages = [await communicator.receive_json_from(timeout=TIMEOUT) for _ in range(2)]
        await communicator.disconnect()
        return messages

    messages = scenario()
    line = live_run.log_lines.get()
    assert messages == [
        {"type": "log", "lines": ["failed: RuntimeError: boom"], "ids": [line.pk]},
        {
            "type": "status",
            "run_id": live_run.pk,
            "status": "failed",
            "progress": 0.25,
            "eta_s": None,
            "step": 30,
            "total_steps": 120,
            "cancel_requested": False,
            "phase": "",
            "phase_progress": 0.0,
        },
    ]


def test_it_publishes_what_the_trainer_callback_stores(member, live_run):
    """RunMonitor.flush writes a batch; the monitor's thread then sends the same batch and the progress to the
    watchers."""
    state = TrainState(step=0, total_steps=120, elapsed_s=0.0)

    @async_to_sync
    async def scenario():
        communicator, _, _ = await _open(live_run.pk, member, "?after=30")
        with RunMonitor(live_run.pk, live_run.team_id, flush_every_s=3600, heartbeat_s=3600) as recorder:
            for step in (31, 32):  # the trainer's ETA: the steps left at 0.5 s, then a finish of 30 s
                state.step, state.elapsed_s, state.eta_s = step, step * 0.5, (120 - step) * 0.5 + 30
                recorder.on_step_end(state, Control(), {"loss/task": 1 / step, "loss/total": float("nan")})
            await sync_to_async(recorder.flush)(state)
            messages = [await communicator.receive_json_from(timeout=TIMEOUT) for _ in range(2)]
        await communicator.disconnect()
        return messages

    metrics, status = scenario()
    assert metrics == {
        "type": "metrics",
        "points": [
            {"name": "loss/task", "step": 31, "value": 1 / 31},
            {"name": "loss/total", "step": 31, "value": None},  # NaN: stored, sent as null
            {"name": "loss/task", "step": 32, "value": 1 / 32},
            {"name": "loss/total", "step": 32, "value": None},
        ],
    }
    assert status == {
        "type": "status",
        "run_id": live_run.pk,
        "status": "running",
        "progress": 32 / 120,
        "eta_s": 16.0 / 32 * 88 + 30,
        "step": 32,
        "total_steps": 120,
        "cancel_requested": False,
        "phase": "training",
        "phase_progress": 32 / 120,
    }
    assert MetricPoint.objects.filter(run=live_run).count() == 4  # stored before it was published


def test_it_keeps_storing_points_when_redis_is_unreachable(settings, live_run, caplog):
    """Without Redis the callback still writes every point and the progress; publishing is only logged."""
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }
    state = TrainState(step=40, total_steps=120, elapsed_s=20.0)
    with RunMonitor(live_run.pk, live_run.team_id, flush_every_s=3600, heartbeat_s=3600) as recorder:
        recorder.on_step_end(state, Control(), {"loss/task": 0.5})
        recorder.flush(state)

    assert list(MetricPoint.objects.filter(run=live_run).values_list("name", "step", "value")) == [
        ("loss/task", 40, 0.5)
    ]
    live_run.refresh_from_db()
    assert live_run.step == 40 and live_run.progress == pytest.approx(1 / 3)
    assert "not published" in caplog.text


def test_the_backfill_carries_the_tail_of_the_log(member, live_run):
    from jobs import services
    from jobs.selectors import LOG_TAIL_LINES

    services.run_log(live_run.pk, *(f"line {i}" for i in range(LOG_TAIL_LINES + 5)))

    @async_to_sync
    async def scenario():
        communicator, backfill, _status = await _open(live_run.pk, member)
        await communicator.disconnect()
        return backfill

    backfill = scenario()
    assert backfill["log"] == [f"line {i}" for i in range(5, LOG_TAIL_LINES + 5)]  # the newest, oldest first
    assert backfill["log_last_id"] == live_run.log_lines.latest("id").pk  # live lines up to it are in the tail


# --- the runs list -------------------------------------------------------------------------------------------


def _list_socket(user=None) -> WebsocketCommunicator:
    headers = [LOCAL_ORIGIN, (b"host", b"localhost")] + ([_cookie(user)] if user else [])
    return WebsocketCommunicator(application, "/ws/runs/", headers=headers)


def test_the_runs_list_hears_the_status_of_its_teams_runs_only(viewer, outsider, live_run, other_team):
    """A status sent with the team id reaches the lists of that team's members, not other teams' lists;
    metrics and log lines stay on the run's own socket."""
    status = events.status_event(live_run)
    metrics = {"type": "metrics", "points": [{"name": "loss/task", "step": 31, "value": 0.25}]}

    @async_to_sync
    async def scenario():
        mine, theirs = await sync_to_async(_list_socket)(viewer), await sync_to_async(_list_socket)(outsider)
        for c in (mine, theirs):
            assert (await c.connect(timeout=TIMEOUT))[0]
        send = sync_to_async(events.run_event_send)
        assert await send(live_run.pk, metrics, team_id=live_run.team_id)
        assert await send(live_run.pk, status, team_id=live_run.team_id)
        received = await mine.receive_json_from(timeout=TIMEOUT)
        nothing_more = await mine.receive_nothing(timeout=0.3)
        nothing_theirs = await theirs.receive_nothing(timeout=0.3)
        for c in (mine, theirs):
            await c.disconnect()
        return received, nothing_more, nothing_theirs

    received, nothing_more, nothing_theirs = scenario()
    assert received == status and received["run_id"] == live_run.pk
    assert nothing_more and nothing_theirs


def test_the_runs_list_refuses_someone_not_logged_in(live_run):
    assert async_to_sync(_refusal)(_list_socket()) == 4403


def test_points_not_published_while_redis_is_down_go_out_once_it_is_back(settings, member, live_run, caplog):
    """The worker keeps what it could not publish and sends it with the next batch: an open page's chart
    stays complete through a Redis restart, without waiting for a reconnect."""
    live_layers = settings.CHANNEL_LAYERS
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}
    }
    state = TrainState(step=40, total_steps=120, elapsed_s=20.0)

    @async_to_sync
    async def scenario():
        with RunMonitor(live_run.pk, live_run.team_id, flush_every_s=3600, heartbeat_s=3600) as monitor:
            monitor.on_step_end(state, Control(), {"loss/task": 0.5})
            await sync_to_async(monitor.flush)(state)  # stored; the monitor's send fails
            deadline = time.monotonic() + TIMEOUT
            while "not published" not in caplog.text and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            settings.CHANNEL_LAYERS = live_layers  # Redis is back
            communicator, _, _ = await _open(live_run.pk, member, "?after=40")
            state.step = 41
            monitor.on_step_end(state, Control(), {"loss/task": 0.25})
            await sync_to_async(monitor.flush)(state)
            metrics = await communicator.receive_json_from(timeout=TIMEOUT)
        await communicator.disconnect()
        return metrics, monitor

    metrics, monitor = scenario()
    assert metrics["points"] == [
        {"name": "loss/task", "step": 40, "value": 0.5},
        {"name": "loss/task", "step": 41, "value": 0.25},
    ]
    assert monitor.unpublished == []


@pytest.mark.django_db(transaction=True)
def test_the_monitors_thread_stores_what_the_training_thread_only_appends(live_run):
    """A step end costs the trainer an append: storing and publishing happen on the monitor's own thread
    (nothing here calls ``flush``)."""
    state = TrainState(step=0, total_steps=120, elapsed_s=0.0)
    with RunMonitor(live_run.pk, live_run.team_id, flush_every_s=0.05, heartbeat_s=60) as monitor:
        for step in (31, 32):
            state.step, state.elapsed_s = step, step * 0.5
            monitor.on_step_end(state, Control(), {"loss/task": 1 / step})
        deadline = time.monotonic() + 10
        while MetricPoint.objects.filter(run=live_run).count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(MetricPoint.objects.filter(run=live_run).values_list("step", "value")) == [(31, 1 / 31), (32, 1 / 32)]
    live_run.refresh_from_db()
    assert (live_run.step, monitor.buffer) == (32, [])


@pytest.mark.django_db(transaction=True)
def test_a_cancel_stops_the_teacher_cache_build_at_its_next_batch(live_run):
    """Caching the teacher's outputs comes before the first step: a cancel ends it at its next batch, not after
    the whole build; the log says so, and names the cache a run reads by its key (no path)."""
    state, control = TrainState(total_steps=120), Control()
    manifest = Manifest("ab" * 16, "base", ["logits"], "float16", 192, [], "2026-01-02T03:04:05+00:00", "kd run", 1.0)
    with RunMonitor(live_run.pk, live_run.team_id, flush_every_s=3600, heartbeat_s=3600) as monitor:
        monitor.on_phase(state, control, CACHING, 1, 10)
        assert not control.should_stop
        monitor.stop_requested.set()  # as the monitor's thread does when it reads the cancel
        monitor.on_phase(state, control, CACHING, 2, 10)
        assert control.should_stop
        monitor.on_teacher_cache(state, Control(), manifest)
        monitor.flush(state)
    lines = list(live_run.log_lines.values_list("text", flat=True))
    assert "stopping while caching the teacher's outputs: a resume starts the cache again" in lines
    assert (
        "teacher outputs from the cache abababababab (0 B, 192 examples, built by kd run at 2026-01-02T03:04:05+00:00)"
        in lines
    )
