"""The worker's writes outlive a dropped database connection: ``retrying(write, ...)`` runs ``write`` again.

A PostgreSQL restart, a failover or ``pg_terminate_backend`` breaks the connection of every worker thread;
Django then raises ``OperationalError``/``InterfaceError`` and would go on using the dead connection. Here the
broken connection is closed (the next query opens a new one, within the database's ``connect_timeout``) and
the write is tried again with growing pauses, for up to ``KDWEB_DB_RETRY_S`` seconds, then the error
propagates. Every write on the worker's path goes through it (``jobs.worker.tasks``, ``jobs.worker.progress``); each of
them is one transaction, so a retry never half-repeats one, and those that a lost reply could make run twice
are idempotent (points are unique per run, name and step).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

FIRST_PAUSE_S, MAX_PAUSE_S = 0.1, 5.0


def retrying(write: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``write(*args, **kwargs)``, retried while the database connection is broken, up to ``KDWEB_DB_RETRY_S``."""
    deadline = time.monotonic() + settings.KDWEB_DB_RETRY_S
    pause = FIRST_PAUSE_S
    while True:
        try:
            return write(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            # inside a caller's transaction only the caller can start over
            if connection.in_atomic_block or time.monotonic() + pause > deadline:
                raise
            log.warning("%s: database connection lost (%s); again in %.1f s", write.__name__, exc, pause)
        with contextlib.suppress(DatabaseError):  # closing a dead connection may fail; it is dropped either way
            connection.close()  # the next query connects afresh
        time.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE_S)
