"""The live view of a run: ``/ws/runs/<id>/`` (``jobs.live.routing``), behind the origin check and the session.

On connect the consumer asks ``jobs.permissions.get_for_user`` (the run page's own check) whether the user
may see the run: every member of its team may watch, viewers included. It then joins the group
``run-<id>`` *before* reading the database, so no point published meanwhile is missed, and sends:

1. a ``backfill`` of the stored series, downsampled (``selectors.run_backfill``); ``?after=<step>`` (a page
   reconnecting) limits it to the points from that step on (the page has the earlier ones);
2. the run's current ``status``;

then forwards every ``run.event`` group message (``jobs.live.events``) as it comes. A live point may also be in
the backfill (published while it was read): the page drops points at or before the last step it has.

``/ws/public/<token>/`` (``PublicRunConsumer``) is the same live view for the holder of a share link of a run
(``permissions.shared_object``: 4404 for a link unknown, revoked or expired), without a session and without
the run's log (its lines name users and hosts).

``/ws/runs/`` (``RunListConsumer``) serves the runs list: the status events of every run of the user's teams,
as they change (the groups ``team-<id>``); the page already shows the rest.

Storms: a link posted in a chat opens a run's page in a hundred browsers at once, and a backfill takes
~100 ms to build and ~0.5 MB to send. So every socket is accepted first, before the database is read (a
handshake left waiting is reset by daphne after 5 s), and the backfills are built off the event loop and
off the one thread of ``database_sync_to_async``, ``BACKFILL_THREADS`` at a time. Sockets of the same run
(and ``?after=``) that ask while a build waits for its turn share it: they joined the group before it
reads the database, so it misses nothing they would have had; a build that has started is not shared.

Refusals: the socket is accepted and closed at once with code 4403 (not logged in) or 4404 (no run of the
user's teams has this id, which is what the page answers too), before anything is sent or a group joined.
Accepting first is deliberate: a refused handshake reaches a browser as code 1006, indistinguishable from a
network failure, so the page would keep reconnecting; with 4403/4404 it stops and says why. A foreign
``Origin`` is refused earlier, at the handshake, by ``AllowedHostsOriginValidator`` (``kdweb.asgi``).
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import PermissionDenied
from django.db import close_old_connections, connection
from django.http import Http404
from django.utils import timezone

from jobs import selectors
from jobs.live import events
from jobs.models import Run, ShareLink
from jobs.permissions import get_for_user, shared_object, teams_for_user

CLOSE_NOT_LOGGED_IN = 4403
CLOSE_NOT_FOUND = 4404
BACKFILL_THREADS = 2  # builds at once: mostly PostgreSQL and numpy, on a machine of a few cores


@database_sync_to_async
def _visible_run(user, run_id: int) -> Run:
    run, _can_write = get_for_user(Run, user, run_id)
    return run


class _Greeting:
    """One build of the two messages a run's socket starts with, awaited by every socket that shares it."""

    started = False  # set by the building thread before it reads anything
    texts: asyncio.Future  # (backfill, status) as JSON text


_builders = ThreadPoolExecutor(BACKFILL_THREADS, thread_name_prefix="backfill")
_waiting: dict[tuple, _Greeting] = {}  # (event loop, run id, after_step, public) -> the build not yet started


def _build(greeting: _Greeting, run_id: int, after_step: int | None, public: bool) -> tuple[str, str]:
    greeting.started = True  # from now on a socket that joins the run's group needs a build of its own
    close_old_connections()
    try:
        run = Run.objects.get(pk=run_id)  # fresh: status and progress move while the socket opens
        backfill = selectors.run_backfill(run, after_step=after_step)
        if public:  # the log's lines name users and hosts
            backfill = {**backfill, "log": [], "log_last_id": 0}
        return json.dumps(backfill), json.dumps(events.status_event(run))
    finally:
        connection.close()  # a builder holds no connection between storms (nor past a test's database)


async def _greeting(run_id: int, after_step: int | None, public: bool) -> tuple[str, str]:
    """The backfill and status texts of a socket that has joined the run's group: a build that has not
    started yet if one waits, else a new one."""
    loop = asyncio.get_running_loop()
    key = (loop, run_id, after_step, public)
    greeting = _waiting.get(key)
    if greeting is None or greeting.started:
        greeting = _waiting[key] = _Greeting()
        greeting.texts = loop.run_in_executor(_builders, _build, greeting, run_id, after_step, public)
        greeting.texts.add_done_callback(lambda _: _waiting.pop(key) if _waiting.get(key) is greeting else None)
    return await asyncio.shield(greeting.texts)  # a socket that goes away does not cancel the others' build


def _after_step(query_string: bytes) -> int | None:
    """The ``after`` query parameter (the last step the page has), or None when absent or not a number."""
    values = parse_qs(query_string.decode("latin-1")).get("after") or [""]
    try:
        return int(values[0])
    except ValueError:
        return None


class EventConsumer(AsyncJsonWebsocketConsumer):
    """Joins groups, forwards their ``run.event`` messages (``jobs.live.events``) as they are, and refuses with a
    close code the page understands."""

    joined: tuple[str, ...] = ()

    async def join(self, groups: list[str]) -> None:
        self.joined = tuple(groups)
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)

    async def greet(self, run_id: int, public: bool = False) -> None:
        """Send the backfill and the status; the socket must have joined the run's group already."""
        after_step = _after_step(self.scope.get("query_string", b""))
        for text in await _greeting(run_id, after_step, public):
            await self.send(text_data=text)

    async def disconnect(self, code: int) -> None:
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Pages send nothing: what a run page lacks is said once, by ``?after=`` when it (re)connects."""

    async def run_event(self, message: dict) -> None:
        await self.send_json(message["event"])


class RunConsumer(EventConsumer):
    async def connect(self) -> None:
        await self.accept()  # before the database is read: see "Storms" above
        run_id = self.scope["url_route"]["kwargs"]["run_id"]
        try:
            await _visible_run(self.scope["user"], run_id)
        except PermissionDenied:
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        except Http404:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.join([events.run_group(run_id)])
        await self.greet(run_id)


@database_sync_to_async
def _team_ids(user) -> list[int]:
    return list(teams_for_user(user).values_list("pk", flat=True))


class RunListConsumer(EventConsumer):
    """Status changes of the runs of the user's teams (``team-<id>`` groups), for the live runs list."""

    async def connect(self) -> None:
        await self.accept()
        if not self.scope["user"].is_authenticated:
            await self.close(code=CLOSE_NOT_LOGGED_IN)
            return
        await self.join([events.team_group(t) for t in await _team_ids(self.scope["user"])])


@database_sync_to_async
def _shared_link(token: str) -> ShareLink:
    return shared_object(token)


class PublicRunConsumer(EventConsumer):
    """The live view of a run shared by a public link: the run page's messages minus its log.

    It also joins the link's own group: revoking the link (``events.share_link_closed_on_commit``) closes
    the sockets open on it, and a message past the link's expiry closes it too."""

    expires_at: datetime | None = None

    async def connect(self) -> None:
        await self.accept()
        try:
            link = await _shared_link(self.scope["url_route"]["kwargs"]["token"])
        except Http404:
            link = None
        if link is None or link.run_id is None:  # a study's link has no live view
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.expires_at = link.expires_at
        await self.join([events.run_group(link.run_id), events.share_group(link.pk)])
        await self.greet(link.run_id, public=True)

    async def run_event(self, message: dict) -> None:
        if self.expires_at is not None and timezone.now() >= self.expires_at:
            await self.close(code=CLOSE_NOT_FOUND)
        elif message["event"]["type"] != "log":
            await super().run_event(message)

    async def share_closed(self, message: dict) -> None:
        await self.close(code=CLOSE_NOT_FOUND)
