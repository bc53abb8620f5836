"""The loss balance of a run on its first batch and the time of its first steps, computed before launch by a
worker of the run's queue.

The worker loads the teacher and the data, so the web process never does: the review sends the config as a
task (``jobs.worker.tasks.balance_preview``) and waits for the reply a bounded time. A broker that does not
answer, no worker on the queue (or only a busy one) and an error of the engine each come back as the reason
the preview is unavailable, never as an exception.

The reply comes back on a Redis list of its own, not through a Celery result backend: with a result backend
configured, every task sent while Redis is down fails with the backend's RuntimeError (not the broker error
that leaves a run queued to be sent later), and its consumer must then be restarted.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from django.conf import settings
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from distill.balance import balance_warnings
from distill.config import RunConfig
from kdweb.celery import app

BALANCE_PREVIEW = "jobs.balance_preview"  # the Celery task (jobs.worker.tasks)
REPLY_KEY = "kdweb:balance-preview:{id}"  # the Redis list the worker pushes its answer to
REPLY_KEEP_S = 600  # an answer nobody waits for any more is dropped after this
NO_REPLY = (
    "no worker of the queue “{queue}” answered within {timeout:g} s; a worker busy with a run answers only after it"
)


@dataclass(frozen=True)
class BalancePreview:
    """Each term's ``{"value", "weight", "share"}`` and the warnings about them, the measured and the analytic
    seconds per optimizer step (``distill.balance.FirstSteps``); or, with no terms, why the preview is
    unavailable."""

    terms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unavailable: str = ""
    step_s: float | None = None
    analytic_step_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def balance_preview(cfg: RunConfig, queue: str, timeout: float) -> BalancePreview:
    """Ask a worker of ``queue`` for the first-batch loss terms of ``cfg`` and the time of its first steps; wait
    at most ``timeout`` seconds for the reply (the message expires then, so a worker that frees up later does not
    compute it)."""
    reply_key = REPLY_KEY.format(id=uuid.uuid4().hex)
    try:
        app.send_task(
            BALANCE_PREVIEW, (cfg.model_dump(mode="json"), reply_key), queue=queue, expires=timeout, ignore_result=True
        )
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout + 5)
        popped = client.blpop([reply_key], timeout=math.ceil(timeout))
    except (BrokerError, RedisError, OSError) as exc:
        return BalancePreview(unavailable=f"the broker does not answer: {exc}")
    if popped is None:
        return BalancePreview(unavailable=NO_REPLY.format(queue=queue, timeout=timeout))
    answer = json.loads(popped[1])
    if not isinstance(answer, dict) or "error" in answer:
        reason = answer["error"] if isinstance(answer, dict) else repr(answer)
        return BalancePreview(unavailable=f"the worker could not compute it: {reason}")
    terms = answer["terms"]
    return BalancePreview(terms, balance_warnings(terms), "", answer.get("step_s"), answer.get("analytic_step_s"))


def balance_reply(reply_key: str, answer: dict[str, Any]) -> None:
    """The worker's side: push ``answer`` to the list the review waits on (kept a while, then dropped)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.rpush(reply_key, json.dumps(answer))
    client.expire(reply_key, REPLY_KEEP_S)
