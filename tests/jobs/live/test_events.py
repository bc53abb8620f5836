"""jobs.live.events, the one module that sends live events: each message type's schema, and sends without Redis.

Each payload is checked against its schema and survives a JSON round trip (Zulip's test_events discipline);
a payload that breaks its schema is refused before it is sent; with Redis unreachable a send reports False
instead of raising, so a worker keeps training.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from django.db import transaction

from jobs.live import events
from jobs.models import Run

METRICS = {"type": "metrics", "points": [{"name": "loss/feature", "step": 120, "value": 0.41}]}
STATUS = {"type": "status", "run_id": 7, "status": "running", "progress": 0.42, "eta_s": 310}
STATUS_FULL = {**STATUS, "eta_s": None, "step": 42, "total_steps": 100, "cancel_requested": True}
STATUS_FULL |= {"phase": "measuring", "phase_progress": 0.25}
LOG = {"type": "log", "lines": ["step 120: loss 0.41", "step 120 · validation accuracy 0.8125"], "ids": [8, 9]}
BACKFILL = {
    "type": "backfill",
    "series": {"loss/task": [[1, 0.7], [2, None]]},
    "last_step": 2,
    "log": ["training 2 steps"],
    "log_last_id": 7,
}


@pytest.fixture
def unreachable_redis(settings):
    """The channel layer pointed at a local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"]},
        }
    }


@pytest.mark.parametrize("payload", [METRICS, STATUS, STATUS_FULL, LOG, BACKFILL], ids=lambda p: p["type"])
def test_it_validates_each_message_type_and_round_trips_it_through_json(payload):
    events.check_event(payload)
    assert json.loads(json.dumps(payload)) == payload


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"type": "metric", "points": []}, "unknown event type"),
        ({"type": "metrics"}, "lacks"),
        ({**STATUS, "colour": "red"}, "unknown keys"),
        ({"type": "metrics", "points": [{"name": "loss/task", "step": "3", "value": 0.1}]}, "integer"),
        ({"type": "metrics", "points": [{"name": "loss/task", "step": 3}]}, "each point"),
        ({"type": "metrics", "points": [{"name": "loss/task", "step": 3, "value": float("nan")}]}, "not JSON"),
        ({**STATUS, "status": "exploded"}, "status must be one of"),
        ({**STATUS, "progress": 1.5}, "progress"),
        ({**STATUS, "eta_s": "soon"}, "eta_s"),
        ({**STATUS, "step": True}, "integers"),
        ({**STATUS, "run_id": "7"}, "run_id must be an integer"),
        ({**STATUS, "cancel_requested": 1}, "cancel_requested must be a boolean"),
        ({**STATUS, "phase": "sleeping"}, "phase must be one of"),
        ({**STATUS, "phase": "measuring", "phase_progress": 2}, "phase_progress must be a number from 0 to 1"),
        ({**LOG, "lines": [b"bytes", "x"]}, "lines must be a list of strings"),
        ({**LOG, "lines": "one line"}, "lines must be a list of strings"),
        ({**LOG, "ids": [8]}, "one per line"),
        ({**LOG, "ids": [8, "9"]}, "ids must be a list of integers"),
        ({**BACKFILL, "series": {"loss/task": [(1, 0.7)]}}, "list of"),
        ({**BACKFILL, "last_step": None}, "last_step"),
        ({**BACKFILL, "log": [None]}, "log must be a list of strings"),
        ({**BACKFILL, "log_last_id": None}, "log_last_id must be an integer"),
    ],
)
def test_it_refuses_a_payload_that_breaks_its_schema(payload, error):
    with pytest.raises(events.EventSchemaError, match=error):
        events.check_event(payload)


def test_it_refuses_to_send_a_bad_payload(unreachable_redis):
    with pytest.raises(events.EventSchemaError):
        events.run_event_send(1, {"type": "status", "status": "running"})


def test_it_names_the_groups_of_a_run_and_of_a_team():
    assert events.run_group(42) == "run-42"
    assert events.team_group(3) == "team-3"


@pytest.mark.parametrize("payload", [METRICS, STATUS, LOG], ids=lambda p: p["type"])
def test_it_returns_false_without_raising_when_redis_is_unreachable(unreachable_redis, payload, caplog):
    started = time.monotonic()

    assert events.run_event_send(7, payload) is False

    assert time.monotonic() - started < 30
    assert "live event for run 7 not published" in caplog.text


@pytest.mark.django_db
def test_it_sends_on_commit_only(unreachable_redis, django_capture_on_commit_callbacks, caplog):
    with django_capture_on_commit_callbacks() as callbacks:
        events.run_event_send_on_commit(7, STATUS)
        assert not caplog.text  # nothing sent inside the transaction
    assert len(callbacks) == 1
    callbacks[0]()
    assert "not published" in caplog.text


@pytest.mark.django_db
def test_it_checks_an_on_commit_payload_at_once(unreachable_redis):
    with pytest.raises(events.EventSchemaError), transaction.atomic():
        events.run_event_send_on_commit(7, {**STATUS, "progress": -1})


def test_it_builds_the_status_of_a_run():
    run = Run(pk=9, status=Run.Status.RUNNING, progress=0.5, eta_s=12.5, step=5, total_steps=10)
    assert events.status_event(run) == {
        "type": "status",
        "run_id": 9,
        "status": "running",
        "progress": 0.5,
        "eta_s": 12.5,
        "step": 5,
        "total_steps": 10,
        "cancel_requested": False,
        "phase": "",
        "phase_progress": 0.0,
    }
    events.check_event(events.status_event(run))
