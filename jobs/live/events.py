"""The one module that sends live events to the pages (Zulip's event discipline, STYLE §3).

Every message a websocket carries has a schema here (DESIGN §8) and a test in ``tests/web/test_events.py``.
Everything that publishes calls ``run_event_send`` (from a worker, outside a transaction) or
``run_event_send_on_commit`` (from a service that writes in a transaction), never the channel layer itself.

Publishing never breaks training: the database already holds what is published, and a page that missed
messages backfills from it when its socket reconnects. So when Redis cannot be reached the send is logged
at warning and reported as ``False``; the next send tries again.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal, NotRequired, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import RedisError

from distill.callbacks import PHASES

log = logging.getLogger(__name__)

GROUP_MESSAGE_TYPE = "run.event"  # handled by RunConsumer.run_event


class MetricPointPayload(TypedDict):
    name: str
    step: int
    value: float | None  # null for a value that is not finite (JSON has no NaN)


class MetricsEvent(TypedDict):
    type: Literal["metrics"]
    points: list[MetricPointPayload]


class StatusEvent(TypedDict):
    """Also sent to the team's group, for the live runs list: hence ``run_id``."""

    type: Literal["status"]
    run_id: int
    status: str
    progress: float
    eta_s: float | None
    step: NotRequired[int]
    total_steps: NotRequired[int]
    cancel_requested: NotRequired[bool]
    phase: NotRequired[str]  # distill.callbacks.PHASES, or "" before training begins
    phase_progress: NotRequired[float]


class LogEvent(TypedDict):
    """New lines of the run's log, oldest first, with their ids: a page drops the lines it already has
    (those up to its backfill's ``log_last_id``)."""

    type: Literal["log"]
    lines: list[str]
    ids: list[int]


class BackfillEvent(TypedDict):
    """Sent by the consumer to one socket (never to a group): ``series`` is ``name -> [[step, value], ...]``;
    ``log`` is the tail of the run's log (the page replaces its own with it) and ``log_last_id`` the id of its
    newest line (0 for none)."""

    type: Literal["backfill"]
    series: dict[str, list[list[float | None]]]
    last_step: int
    log: list[str]
    log_last_id: int


RunEvent = MetricsEvent | StatusEvent | LogEvent


class EventSchemaError(ValueError):
    """A payload that does not match the schema of its type."""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value(value: Any) -> bool:
    return value is None or _number(value)


def _check_point(point: Any) -> str | None:
    if not isinstance(point, dict) or set(point) != {"name", "step", "value"}:
        return "each point is {name, step, value}"
    if not isinstance(point["name"], str) or not _integer(point["step"]) or not _value(point["value"]):
        return "a point's name is a string, its step an integer and its value a number or null"
    return None


def _check_metrics(payload: dict) -> str | None:
    if not isinstance(payload.get("points"), list):
        return "points must be a list"
    return next((e for e in map(_check_point, payload["points"]) if e), None)


def _check_status(payload: dict) -> str | None:
    from jobs.models import Run

    if not _integer(payload.get("run_id")):
        return "run_id must be an integer"
    if "cancel_requested" in payload and not isinstance(payload["cancel_requested"], bool):
        return "cancel_requested must be a boolean"
    if payload.get("status") not in Run.Status.values:
        return f"status must be one of {Run.Status.values}"
    if not _number(payload.get("progress")) or not 0 <= payload["progress"] <= 1:
        return "progress must be a number from 0 to 1"
    if payload.get("eta_s") is not None and not _number(payload["eta_s"]):
        return "eta_s must be a number or null"
    if any(k in payload and not _integer(payload[k]) for k in ("step", "total_steps")):
        return "step and total_steps must be integers"
    if "phase" in payload and payload["phase"] not in ("", *PHASES):
        return f"phase must be one of {PHASES} or empty"
    share = payload.get("phase_progress", 0.0)
    if not _number(share) or not 0 <= share <= 1:
        return "phase_progress must be a number from 0 to 1"
    return None


def _lines(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(line, str) for line in value)


def _check_log(payload: dict) -> str | None:
    if not _lines(payload.get("lines")):
        return "lines must be a list of strings"
    ids = payload.get("ids")
    if not isinstance(ids, list) or len(ids) != len(payload["lines"]) or not all(map(_integer, ids)):
        return "ids must be a list of integers, one per line"
    return None


def _check_backfill(payload: dict) -> str | None:
    series = payload.get("series")
    if not isinstance(series, dict):
        return "series must be an object"
    for name, points in series.items():
        if not isinstance(points, list) or not all(
            isinstance(p, list) and len(p) == 2 and _integer(p[0]) and _value(p[1]) for p in points
        ):
            return f"series {name!r} must be a list of [step, value]"
    if not _lines(payload.get("log")):
        return "log must be a list of strings"
    if not _integer(payload.get("log_last_id")):
        return "log_last_id must be an integer"
    return None if _integer(payload.get("last_step")) else "last_step must be an integer"


# type -> (required keys, optional keys, check)
SCHEMAS = {
    "metrics": ({"type", "points"}, set(), _check_metrics),
    "status": (
        {"type", "run_id", "status", "progress", "eta_s"},
        {"step", "total_steps", "cancel_requested", "phase", "phase_progress"},
        _check_status,
    ),
    "log": ({"type", "lines", "ids"}, set(), _check_log),
    "backfill": ({"type", "series", "last_step", "log", "log_last_id"}, set(), _check_backfill),
}


def check_event(payload: Any) -> None:
    """Raise ``EventSchemaError`` unless ``payload`` matches the schema of its ``type`` and survives JSON."""
    if not isinstance(payload, dict) or payload.get("type") not in SCHEMAS:
        raise EventSchemaError(f"unknown event type in {payload!r:.200}")
    required, optional, check = SCHEMAS[payload["type"]]
    keys = set(payload)
    if missing := required - keys:
        raise EventSchemaError(f"{payload['type']} event lacks {sorted(missing)}")
    if extra := keys - required - optional:
        raise EventSchemaError(f"{payload['type']} event has unknown keys {sorted(extra)}")
    if error := check(payload):
        raise EventSchemaError(f"{payload['type']} event: {error}")
    try:  # what a page receives is JSON: NaN, infinities and non-JSON objects must not get through
        round_trip = json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise EventSchemaError(f"{payload['type']} event is not JSON: {exc}") from None
    if round_trip != payload:
        raise EventSchemaError(f"{payload['type']} event changes through JSON (tuples?)")


def run_group(run_id: int) -> str:
    """The Channels group of everyone watching run ``run_id``."""
    return f"run-{run_id}"


def team_group(team_id: int) -> str:
    """The Channels group of the runs lists open on team ``team_id``'s runs (status events only)."""
    return f"team-{team_id}"


def _groups(run_id: int, payload: RunEvent, team_id: int | None) -> list[str]:
    groups = [run_group(run_id)]
    if team_id is not None and payload["type"] == "status":
        groups.append(team_group(team_id))
    return groups


async def run_event_publish(run_id: int, payload: RunEvent, *, team_id: int | None = None) -> bool:
    """Validate ``payload`` and send it to the watchers of the run; ``False`` (logged) if Redis is unreachable.

    A status event given the run's ``team_id`` also goes to the team's runs lists. The worker's monitor
    awaits this on an event loop of its own, so one Redis connection serves a whole run (``async_to_sync``
    starts a new loop, and channels-redis a new connection, for every call). A payload that breaks its
    schema is a programming error and raises ``EventSchemaError``.
    """
    check_event(payload)
    layer = get_channel_layer()
    if layer is None:
        return False
    message = {"type": GROUP_MESSAGE_TYPE, "event": payload}
    try:
        for group in _groups(run_id, payload, team_id):
            await layer.group_send(group, message)
    except (RedisError, OSError) as exc:  # ConnectionError, TimeoutError; OSError for a socket path that is gone
        log.warning("live event for run %s not published (%s: %s)", run_id, type(exc).__name__, exc)
        return False
    return True


def run_event_send(run_id: int, payload: RunEvent, *, team_id: int | None = None) -> bool:
    """``run_event_publish`` from synchronous code outside a transaction; services use the on-commit form."""
    return async_to_sync(run_event_publish)(run_id, payload, team_id=team_id)


def run_event_send_on_commit(run_id: int, payload: RunEvent, *, team_id: int | None = None) -> None:
    """``run_event_send`` once the current transaction commits (at once outside one); checked now."""
    check_event(payload)
    transaction.on_commit(lambda: run_event_send(run_id, payload, team_id=team_id))


def status_event(run) -> StatusEvent:
    """The status message of a run as stored (``jobs.models.Run``)."""
    return {
        "type": "status",
        "run_id": run.pk,
        "status": run.status,
        "progress": float(run.progress),
        "eta_s": float(run.eta_s) if run.eta_s is not None else None,
        "step": run.step,
        "total_steps": run.total_steps,
        "cancel_requested": run.cancel_requested,
        "phase": run.phase,
        "phase_progress": float(run.phase_progress),
    }


def share_group(link_id: int) -> str:
    """The Channels group of the public sockets open on share link ``link_id``."""
    return f"share-{link_id}"


def share_link_closed_on_commit(link_id: int) -> None:
    """Once the transaction commits, close the public sockets open on a revoked link (best effort: a socket
    that misses it is refused at its next connect, like every new one)."""

    def send() -> None:
        layer = get_channel_layer()
        try:
            async_to_sync(layer.group_send)(share_group(link_id), {"type": "share.closed"})
        except (RedisError, OSError) as exc:
            log.warning("public sockets of link %s not closed (%s: %s)", link_id, type(exc).__name__, exc)

    transaction.on_commit(send)


def status_send_on_commit(run) -> None:
    """The run's stored status, to its watchers and its team's runs lists, once the transaction commits."""
    run_event_send_on_commit(run.pk, status_event(run), team_id=run.team_id)


def log_event(lines: list[tuple[int, str]]) -> LogEvent:
    """The ``log`` message of stored lines, ``(id, text)`` oldest first."""
    return {"type": "log", "lines": [text for _, text in lines], "ids": [pk for pk, _ in lines]}
