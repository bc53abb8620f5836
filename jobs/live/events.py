"""The one module that sends live events to the pages (Zulip's event discipline, STYLE §3).

Every message a websocket carries has a schema here (DESIGN §8) and a test in ``tests/jobs/live/test_events.py``.
Everything that publishes calls ``run_event_send`` (from a worker, outside a transaction) or
``run_event_send_on_commit`` (from a service that writes in a transaction), never the channel layer itself.

Publishing never breaks training: the database already holds what is published, and a page that missed
messages backfills from it when its socket reconnects. So when Redis cannot be reached the send is logged
at warning and reported as ``False``; the next send tries again.
"""

import json
import logging
import typing
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import RedisError

from distill.callbacks import PHASES
from jobs.live.schema import OneOf, OnePer, Range, fields_mismatch, keys_mismatch
from jobs.models import Run

# No ``from __future__ import annotations`` here: TypedDict reads ``NotRequired`` from real annotations only.

log = logging.getLogger(__name__)

GROUP_MESSAGE_TYPE = "run.event"  # handled by RunConsumer.run_event


# --- the schemas: one TypedDict per message type (DESIGN §8) ---------------------------------------------------

Fraction = Annotated[float, Range(0, 1)]
StepValue = tuple[int, float | None]  # a JSON array [step, value]; value null when not finite (JSON has no NaN)


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
    status: Annotated[str, OneOf(tuple(Run.Status.values))]
    progress: Fraction
    eta_s: float | None
    step: NotRequired[int]
    total_steps: NotRequired[int]
    cancel_requested: NotRequired[bool]
    phase: NotRequired[Annotated[str, OneOf(("", *PHASES))]]  # distill.callbacks.PHASES, "" before training
    phase_progress: NotRequired[Fraction]


class LogEvent(TypedDict):
    """New lines of the run's log, oldest first, with their ids: a page drops the lines it already has
    (those up to its backfill's ``log_last_id``)."""

    type: Literal["log"]
    lines: list[str]
    ids: Annotated[list[int], OnePer("lines")]


class BackfillEvent(TypedDict):
    """Sent by the consumer to one socket (never to a group): ``series`` is ``name -> [[step, value], ...]``;
    ``log`` is the tail of the run's log (the page replaces its own with it) and ``log_last_id`` the id of its
    newest line (0 for none)."""

    type: Literal["backfill"]
    series: dict[str, list[StepValue]]
    last_step: int
    log: list[str]
    log_last_id: int


RunEvent = MetricsEvent | StatusEvent | LogEvent
SCHEMAS: dict[str, type] = {
    typing.get_args(typing.get_type_hints(schema)["type"])[0]: schema
    for schema in (MetricsEvent, StatusEvent, LogEvent, BackfillEvent)
}


class EventSchemaError(ValueError):
    """A payload that does not match the schema of its type."""


def check_event(payload: Any) -> None:
    """Raise ``EventSchemaError`` unless ``payload`` matches the schema of its ``type`` and survives JSON."""
    if not isinstance(payload, dict) or payload.get("type") not in SCHEMAS:
        raise EventSchemaError(f"unknown event type in {payload!r:.200}")
    kind, schema = payload["type"], SCHEMAS[payload["type"]]
    if error := keys_mismatch(payload, schema, f"{kind} event"):
        raise EventSchemaError(error)
    if error := fields_mismatch(payload, schema, ""):
        raise EventSchemaError(f"{kind} event: {error}")
    try:  # what a page receives is JSON: NaN, infinities and non-JSON objects must not get through
        round_trip = json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise EventSchemaError(f"{kind} event is not JSON: {exc}") from None
    if round_trip != payload:
        raise EventSchemaError(f"{kind} event changes through JSON (tuples?)")


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
