"""Reads: what a user may list and look at, shaped for the pages; the study maths on what they read is in
``jobs.scorecard``. May import the models, permissions, scorecard and downsample; never the services or pages.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import Count, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.utils import timezone
from kombu.exceptions import OperationalError
from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from distill.checkpoint import has_checkpoint
from distill.config import FULL_METHOD, KD_KINDS, ConfigError, DataConfig, RunConfig, parse_config
from distill.estimate import config_from_architecture
from distill.teacher_cache import CachePlan, list_caches
from distill.teachers import Architecture, resolve_source
from jobs.downsample import DEFAULT_MAX_POINTS, lttb_indices
from jobs.models import (
    Artifact,
    DatasetSpec,
    Evaluation,
    Invitation,
    LogLine,
    Measurement,
    Membership,
    MetricPoint,
    Run,
    ShareLink,
    StepTime,
    Study,
    Teacher,
    Team,
)
from jobs.permissions import teams_for_user

# read here as selectors.X by the run-config forms, API and wizard (reworked apart): their home is jobs.scorecard


def _unless_archived(queryset: QuerySet, archived: bool) -> QuerySet:
    """All of ``queryset`` with ``archived``, else only what is not archived (the default lists)."""
    return queryset if archived else queryset.filter(archived=False)


def teacher_list(user, *, archived: bool = False) -> QuerySet[Teacher]:
    """The user's teachers (with ``archived``, the archived ones too)."""
    return _unless_archived(Teacher.objects.filter(team__in=teams_for_user(user)).select_related("team"), archived)


def registered_teacher(run: Run) -> Teacher | None:
    """The teacher a fine-tuning run registered from its export, if any."""
    return Teacher.objects.filter(from_run=run).first()


def dataset_list(user, *, archived: bool = False) -> QuerySet[DatasetSpec]:
    """The user's data sets (with ``archived``, the archived ones too)."""
    return _unless_archived(DatasetSpec.objects.filter(team__in=teams_for_user(user)).select_related("team"), archived)


def run_list(
    user, *, q: str = "", status: str = "", kind: str = "", teacher: str = "", team: str = "", archived: bool = False
) -> QuerySet[Run]:
    """The user's runs, newest first, with what the list shows; ``q`` keeps the runs whose name contains it
    (any case); empty filters are ignored; archived runs only with ``archived``."""
    runs = Run.objects.filter(team__in=teams_for_user(user)).select_related("team", "teacher", "dataset", "study")
    runs = _unless_archived(runs, archived)
    filters = {"name__icontains": q, "status": status, "kind": kind, "teacher_id": teacher, "team_id": team}
    runs = runs.filter(**{k: v for k, v in filters.items() if v})
    return runs.prefetch_related(
        Prefetch("evaluations", queryset=Evaluation.objects.order_by("role"), to_attr="final_evaluations")
    )


_PACKED_SERIES_SQL = (
    "SELECT name, string_agg(int4send(step), ''::bytea), string_agg(float8send(value), ''::bytea)"
    " FROM jobs_metricpoint WHERE run_id = %s AND step >= %s GROUP BY name"
)


def _series_arrays(run_id: int, after_step: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (steps, values)`` of a run's points from ``after_step`` on, each sorted by step."""
    after = after_step if after_step is not None else -(2**31)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_PACKED_SERIES_SQL, [run_id, after])
            for name, steps, values in cursor.fetchall():
                arrays[name] = (np.frombuffer(steps, ">i4").astype(np.int64), np.frombuffer(values, ">f8"))
    else:  # SQLite (the zero-setup database): plain tuples, fine at its scale
        rows = MetricPoint.objects.filter(run_id=run_id, step__gte=after).values_list("name", "step", "value")
        grouped: dict[str, list[tuple[int, float]]] = {}
        for name, step, value in rows:
            grouped.setdefault(name, []).append((step, value))
        for name, pairs in grouped.items():
            xy = np.array(pairs, dtype=np.float64)
            arrays[name] = (xy[:, 0].astype(np.int64), xy[:, 1])
    for name, (steps, values) in arrays.items():
        if len(steps) > 1 and not np.all(steps[1:] > steps[:-1]):  # aggregates follow no particular order
            order = np.argsort(steps, kind="stable")
            arrays[name] = (steps[order], values[order])
    return arrays


def run_backfill(run: Run, after_step: int | None = None, max_points: int = DEFAULT_MAX_POINTS) -> dict:
    """The ``backfill`` message of a run (DESIGN §8): each series downsampled (LTTB) to ``max_points``.

    With ``after_step`` (a page that reconnects) only the points from that step on: the page has the earlier
    ones, and at that very step it may have the losses but not yet the validation metrics, which the worker
    stores in a later batch (the page drops what it already has).
    ``last_step`` is the last step stored (``after_step``, or 0, when there is nothing new): the value the
    page sends back when it reconnects. Values that are not finite (a diverged loss) become ``null``.
    Series of the same length are downsampled together (``lttb_indices`` on rows): six series of 10^5
    points each build in about 0.25 s on a 2-core machine, most of it PostgreSQL's (``_series_arrays``).
    """
    by_length: dict[int, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for name, (steps, values) in _series_arrays(run.pk, after_step).items():
        if len(steps):
            by_length.setdefault(len(steps), []).append((name, steps, values))
    series: dict[str, list[list]] = {}
    last_step = after_step or 0
    for group in by_length.values():
        names, steps, values = zip(*group, strict=True)
        kept = lttb_indices(np.stack(steps), np.stack(values), max_points)
        for name, s_row, v_row, k in zip(names, steps, values, kept, strict=True):
            series[name] = [
                [s, v if math.isfinite(v) else None] for s, v in zip(s_row[k].tolist(), v_row[k].tolist(), strict=True)
            ]
            last_step = max(last_step, int(s_row[-1]))
    series = dict(sorted(series.items()))
    log, log_last_id = run_log_tail(run)
    return {"type": "backfill", "series": series, "last_step": last_step, "log": log, "log_last_id": log_last_id}


# --- teachers ---------------------------------------------------------------------------------------


def teacher_architecture(teacher: Teacher) -> Architecture:
    """The engine's ``Architecture`` of a registered teacher, from the facts stored with it."""
    arch = dict(teacher.architecture)
    arch["labels"] = tuple(arch.get("labels") or ())
    return Architecture(**arch)


@functools.lru_cache(maxsize=32)
def _read_config(folder: str, mtime_ns: int) -> PretrainedConfig:
    return AutoConfig.from_pretrained(folder)


def teacher_hf_config(teacher: Teacher) -> PretrainedConfig:
    """The teacher's transformers config: as stored at registration; for teachers registered before it was
    stored, its own config.json when the source is on this machine (a package or a folder), else rebuilt from
    the stored architecture. No page opens a model file (a GGUF teacher is converted by the engine on its
    first run, never by a page) or waits on the network."""
    if teacher.hf_config:
        values = dict(teacher.hf_config)
        return CONFIG_MAPPING[values.pop("model_type")].from_dict(values)
    try:
        config_file = Path(resolve_source(teacher.source)) / "config.json"
        if config_file.is_file():
            return _read_config(str(config_file.parent), config_file.stat().st_mtime_ns)
    except (ConfigError, OSError, ValueError):
        pass
    return config_from_architecture(teacher_architecture(teacher))


@functools.lru_cache(maxsize=16)
def _lm_windows(teacher_source: str, data_json: str) -> int:
    from distill.data import encode_lm, load_text_data  # the data modules: only when an LM run is estimated
    from distill.teachers import load_tokenizer

    data = DataConfig.model_validate_json(data_json)
    return len(encode_lm(load_text_data(data).train, load_tokenizer(teacher_source), data.max_length))


def lm_train_windows(cfg: RunConfig) -> int | None:
    """The training examples of a causal-LM run: its train texts cut into ``max_length``-token windows, as the
    engine cuts them (a BBC article is 2-3 windows of 256), so step counts and times are not 2-3x too low.
    Tokenizing takes a second or two; the count is cached per teacher and data. None when it cannot be read."""
    try:
        return _lm_windows(cfg.teacher.source, cfg.data.model_dump_json())
    except (ConfigError, OSError, ValueError):
        return None


def run_output_dir(run: Run) -> Path:
    """The run's working folder (checkpoints, the export) on the worker's host."""
    return Path(settings.RUNS_DIR) / f"run-{run.pk}"


TEACHER_CACHES = "teacher-cache"  # under the runs folder: one folder of teacher-output caches per team


def team_cache_dir(team_id: int) -> Path:
    """Where the runs of a team keep their teacher-output caches on the worker's host (``RunConfig.cache_dir``):
    a folder per team, so the runs of a team share their caches and no team reads, lists or deletes another's."""
    return Path(settings.RUNS_DIR) / TEACHER_CACHES / f"team-{team_id}"


CACHE_PLAN_S = 3.0  # a review waits no longer for a cache's key (tokenizing a large split): it says "unknown"
_PLANS_KEPT = 32


class PlannedCache(NamedTuple):
    """What a review needs of a config's teacher-output cache (``distill.teacher_cache.plan_for_config``)."""

    plan: CachePlan
    disk_bytes: int


_planning = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher-cache-plan")
_plans: dict[str, Future[PlannedCache | None]] = {}  # by config: in flight or done, the newest last


def teacher_cache_plan(cfg: RunConfig, timeout: float = CACHE_PLAN_S) -> PlannedCache | None:
    """The teacher-output cache a config reads (its key, from the teacher's files, tokenizer and data; no
    weights), computed once per config in a thread of its own: a review that waits ``timeout`` seconds in vain
    gets ``TimeoutError``, and a later one the answer. None when the config reads no cache; ``ConfigError`` or
    ``OSError`` when its teacher or data cannot be read here."""
    from distill.teacher_cache import plan_for_config

    def planned() -> PlannedCache | None:
        found = plan_for_config(cfg)
        return None if found is None else PlannedCache(found.plan, found.disk_bytes)

    key = cfg.model_dump_json(exclude={"name"})
    future = _plans.pop(key, None)
    if future is None or (future.done() and future.exception() is not None):  # a failure is tried again
        future = _planning.submit(planned)
    _plans[key] = future
    while len(_plans) > _PLANS_KEPT:
        _plans.pop(next(iter(_plans)))
    return future.result(timeout=timeout)


def run_worker_config(run: Run) -> RunConfig:
    """The run's stored config with the worker's folders: its run folder and its team's teacher-output caches."""
    folders = {"output_dir": str(run_output_dir(run)), "cache_dir": str(team_cache_dir(run.team_id))}
    return parse_config({**run.config, **folders})


def study_cache_config(run: Run) -> RunConfig | None:
    """The config whose teacher-output cache a study's run builds (or waits for) before it trains, so the study
    computes its teacher's outputs once whatever its runs' lengths: the study's full-method run of the same
    seed, whose cache keeps what every other run of it reads. None for a run outside a study, one without a
    teacher, one whose ``loss.teacher_cache`` is not ``build``, or one that resumes from a checkpoint (its
    trainer reads the cache if there is one, and builds one only when more than an epoch is left)."""
    cfg = parse_config(run.config)
    if run.study_id is None or cfg.kind not in KD_KINDS or cfg.loss.teacher_cache != "build":
        return None
    if has_checkpoint(run_output_dir(run)):
        return None
    widest = Run.objects.filter(study_id=run.study_id, kind=FULL_METHOD, config__seed=cfg.seed).order_by("pk").first()
    return run_worker_config(widest or run)


LOG_TAIL_LINES = 200


def run_log_tail(run: Run, lines: int = LOG_TAIL_LINES) -> tuple[list[str], int]:
    """The last ``lines`` lines of the run's log, oldest first, and the id of the newest (0 for none): in one
    query, so that a page's live lines with higher ids are exactly the ones the tail lacks."""
    newest = list(LogLine.objects.filter(run=run).order_by("-id").values_list("id", "text")[:lines])
    return [text for _, text in reversed(newest)], newest[0][0] if newest else 0


LIVE_QUEUES_CACHE_S = 5.0  # an inspect waits its whole timeout: pages and launches share one answer a while
LIVE_QUEUES_KEY = "kdweb:live-queues"
QUEUE_WORKERS_KEY = "kdweb:queue-workers"


def live_queues(timeout: float = 1.0, *, fresh: bool = False) -> list[str]:
    """Queues that running workers consume: those that answer Celery's inspect (as read at most
    ``LIVE_QUEUES_CACHE_S`` seconds ago; ``fresh``: now), and those of runs heartbeating now, whose worker
    may be too busy to answer (a solo pool trains in the process that would). Empty when no worker answers
    and none heartbeats, or the broker is down."""
    queues = None if fresh else cache.get(LIVE_QUEUES_KEY)
    if queues is None:
        queues = sorted(_inspect_workers(timeout))
        cache.set(LIVE_QUEUES_KEY, queues, LIVE_QUEUES_CACHE_S)
    return sorted({*queues, *_beating().values_list("queue", flat=True)})


def queue_workers(queue: str, timeout: float = 1.0) -> int:
    """How many workers serve ``queue`` (each runs one job at a time): those that answer Celery's inspect (as
    read at most ``LIVE_QUEUES_CACHE_S`` seconds ago), at least the hosts of its runs heartbeating now."""
    workers = cache.get(QUEUE_WORKERS_KEY)
    if workers is None:
        workers = _inspect_workers(timeout)
    beating = _beating().filter(queue=queue).values_list("host", flat=True).distinct().count()
    return max(workers.get(queue, 0), beating)


def _beating() -> QuerySet[Run]:
    stale = timezone.now() - timedelta(seconds=settings.KDWEB_STALE_AFTER_S)
    return Run.objects.filter(status=Run.Status.RUNNING, heartbeat_at__gte=stale)


def _inspect_workers(timeout: float) -> dict[str, int]:
    """Queue -> the workers consuming it, as they answer Celery's inspect now (cached for ``queue_workers``)."""
    from kdweb.celery import app

    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except (OSError, OperationalError):  # the broker is down: no worker can be reached either
        replies = {}
    workers: dict[str, int] = {}
    for queues in replies.values():
        for name in {q["name"] for q in queues}:
            workers[name] = workers.get(name, 0) + 1
    cache.set(QUEUE_WORKERS_KEY, workers, LIVE_QUEUES_CACHE_S)
    return workers


# --- estimates: the measured times of earlier runs -----------------------------------------------------------

KIND_DISTANCE = 1.0  # another student kind: the same model, more or less teacher work per step
FINETUNE_DISTANCE = 4.0  # fine-tuning against distilling: a different model trains
QUEUE_DISTANCE = 0.5  # another queue: maybe another host
NEAREST_CANDIDATES = 200  # the newest records of a teacher and task considered


def step_time_nearest(teacher: Teacher, cfg: RunConfig, queue: str) -> StepTime | None:
    """The record of an earlier run closest to ``cfg`` on ``queue``: same teacher and task, then the smallest
    distance (log ratios of student layers, width, batch and length; another kind or queue add a constant);
    the newest among equals. None when that teacher has no record for the task."""
    hidden = (cfg.student.hidden_size or teacher.architecture.get("hidden_size")) if cfg.student else None
    wanted = {
        "student_layers": cfg.student.layers if cfg.student else None,
        "student_hidden": hidden,
        "batch_size": cfg.optim.batch_size,
        "max_length": cfg.data.max_length,
    }

    def distance(record: StepTime) -> float:
        d = 0.0 if record.kind == cfg.kind else KIND_DISTANCE
        if (record.kind == Run.Kind.TEACHER_FINETUNE) != (cfg.kind == Run.Kind.TEACHER_FINETUNE):
            d += FINETUNE_DISTANCE
        d += 0.0 if record.queue == queue else QUEUE_DISTANCE
        for field, value in wanted.items():
            if value and getattr(record, field):
                d += abs(math.log(getattr(record, field) / value))
        return d

    records = StepTime.objects.filter(teacher=teacher, task=cfg.task)[:NEAREST_CANDIDATES]
    return min(records, key=distance, default=None)


# --- studies: the runs a scorecard reads, and the curves of its plots ------------------------------------------


def study_list(user, *, archived: bool = False) -> QuerySet[Study]:
    """The user's studies, newest first, with how many runs each has and how many finished (archived ones only
    with ``archived``)."""
    finished = Count("runs", filter=Q(runs__status__in=Run.FINISHED))
    studies = Study.objects.filter(team__in=teams_for_user(user)).select_related("team", "created_by")
    studies = _unless_archived(studies, archived)
    return studies.annotate(run_count=Count("runs"), finished_count=finished)


def scorecard_runs(runs: QuerySet[Run]) -> QuerySet[Run]:
    """``runs`` with what a scorecard reads, fetched in a fixed number of queries."""
    return runs.select_related("team", "teacher", "dataset").prefetch_related("evaluations", "artifacts")


def side_by_side(*, study: Study | None = None, runs: list[Run] | None = None) -> dict[str, Measurement | None]:
    """The side-by-side measurements of a study, or of compared ``runs`` (those that cover every succeeded
    student among them): ``shown``, the newest that succeeded (the scorecard's speeds), and ``latest``, the
    newest of any status (queued or running: "measuring…"; failed: why)."""
    if study is not None:
        found = Measurement.objects.filter(study=study)
    else:
        ids = [r.pk for r in runs or [] if r.status == Run.Status.SUCCEEDED and r.kind != Run.Kind.TEACHER_FINETUNE]
        if not ids:
            return {"shown": None, "latest": None}
        covered = Count("runs", filter=Q(runs__in=ids), distinct=True)
        found = Measurement.objects.annotate(covered=covered).filter(covered=len(ids))
    found = found.order_by("-created_at", "-pk")
    return {"shown": found.filter(status=Measurement.Status.SUCCEEDED).first(), "latest": found.first()}


STUDY_CURVE_POINTS = 400  # per series and run: a study overlays many runs on one chart


def scorecard_plots(card: dict[str, Any], max_points: int = STUDY_CURVE_POINTS) -> dict[str, Any]:
    """The plots of a scorecard as JSON for ``study_charts.js``: the primary metric against parameters (each
    measured run a point, the teacher marked), and per series (each loss term, the validation metric) one
    trace per run, from the stored points (``run_backfill``, downsampled)."""
    primary = card["primary"]
    points = [
        {
            "name": row["run"].name,
            "variant": row["variant"],
            "params": row["params"],
            "mb": row["mb"],
            "value": row["metrics"].get(primary),
            "best": row["best"],
        }
        for row in card["rows"]
        if row["measured"] and row["metrics"].get(primary) is not None
    ]
    teacher = card["teacher"]
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in card["rows"]:
        series = run_backfill(row["run"], max_points=max_points)["series"]
        for name, pts in series.items():
            if name.startswith("loss/") or name == f"val/{primary}":
                curves.setdefault(name, []).append({"name": row["run"].name, "variant": row["variant"], "points": pts})
    return {
        "metric": primary,
        "label": card["primary_label"],
        "lower_is_better": card["lower_is_better"],
        "points": points,
        "teacher": {
            "name": f"teacher ({teacher['run'].teacher.name})",
            "params": teacher["params"],
            "mb": teacher["mb"],
            "value": teacher["metrics"].get(primary),
        }
        if teacher
        else None,
        "curves": curves,
    }


# --- teams and sharing -------------------------------------------------------------------------------------


def team_list(user) -> QuerySet[Team]:
    """The user's teams by name, each with ``role`` (the user's) and ``member_count``."""
    role = Membership.objects.filter(team=OuterRef("pk"), user=user).values("role")[:1]
    return teams_for_user(user).annotate(role=Subquery(role), member_count=Count("memberships")).order_by("name")


ROLE_ORDER = {Membership.Role.OWNER: 0, Membership.Role.MEMBER: 1, Membership.Role.VIEWER: 2}


def team_members(team: Team) -> list[Membership]:
    """The team's memberships, owners first, then members and viewers, each by username."""
    memberships = Membership.objects.filter(team=team).select_related("user")
    return sorted(memberships, key=lambda m: (ROLE_ORDER[m.role], m.user.get_username()))


def invitations_pending(team: Team) -> QuerySet[Invitation]:
    """The team's invitations whose links still work (unused, unexpired), newest first."""
    made_after = timezone.now() - timedelta(days=settings.KDWEB_INVITATION_DAYS)
    return Invitation.objects.filter(team=team, accepted_at__isnull=True, created_at__gt=made_after).order_by(
        "-created_at"
    )


def share_links_active(target: Run | Study) -> QuerySet[ShareLink]:
    """The links of a run or a study that still open it, newest first."""
    kind = "run" if isinstance(target, Run) else "study"
    return (
        ShareLink.objects.filter(**{kind: target}, revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .order_by("-created_at")
    )


def shared_runs(link: ShareLink) -> QuerySet[Run]:
    """The runs a share link shows: its run, or the runs of its study."""
    return Run.objects.filter(pk=link.run_id) if link.run_id else Run.objects.filter(study_id=link.study_id)


# --- storage: what a team's files take ------------------------------------------------------------------------

STORAGE_SCAN_S = 2.0  # a team page waits no longer for the sizes: beyond it, they are marked "at least"


def owned_path(path: str | Path) -> Path | None:
    """``path`` resolved, if it lies in one of kdweb's own folders (run folders, the media storage of uploads
    and exports) without being one of them; else None: files elsewhere are the operator's."""
    resolved = Path(path).resolve()
    roots = (Path(settings.RUNS_DIR).resolve(), Path(settings.MEDIA_ROOT).resolve())
    return resolved if any(resolved != root and resolved.is_relative_to(root) for root in roots) else None


class _Walk:
    """Sizes of files and folders, bounded in time: after ``deadline`` what is left counts 0 and ``partial``
    says so."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.partial = False

    def size(self, path: Path, skip: tuple[Path, ...] = ()) -> int:
        """Bytes of a file, or of the files under a folder except those under ``skip``; 0 when missing."""
        path = path.resolve()  # as ``skip`` is: the teachers' folders are found however the roots are spelled
        if path.is_file():
            return path.stat().st_size
        total = 0
        for folder, dirs, files in os.walk(path):
            if time.monotonic() > self.deadline:
                self.partial = True
                break
            dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
            total += sum(Path(folder, f).stat().st_size for f in files if Path(folder, f).is_file())
        return total


def _stored(names: Iterable[str]) -> list[Path]:
    return [Path(default_storage.path(name)) for name in names]


def team_storage(team: Team, seconds: float = STORAGE_SCAN_S) -> dict[str, Any]:
    """What the team's files take on disk, read from the files themselves: ``rows`` of ``(kind, bytes,
    count)`` (run folders without the teachers' exports in them, stored artifacts, uploaded data sets, the
    teachers' model folders kdweb wrote), their ``total``, and ``partial`` when the walk ran out of time."""
    walk = _Walk(seconds)
    teacher_dirs = [p for t in Teacher.objects.filter(team=team) if (p := owned_path(t.source))]
    runs = Run.objects.filter(team=team).only("pk")
    folders = [d for run in runs if (d := run_output_dir(run)).is_dir()]
    artifacts = Artifact.objects.filter(run__team=team).values_list("path", flat=True)
    uploads = DatasetSpec.objects.filter(team=team).exclude(upload="").values_list("upload", flat=True)
    caches = team_cache_dir(team.pk)
    kinds = [
        ("run folders (checkpoints)", folders, tuple(teacher_dirs)),
        ("teacher-output caches", [caches] if caches.is_dir() else [], ()),
        ("exported models (artifacts)", _stored(artifacts), ()),
        ("uploaded data sets", _stored(uploads), ()),
        ("teachers' model files", teacher_dirs, ()),
    ]
    rows = [(label, sum(walk.size(p, skip) for p in paths if p.exists()), len(paths)) for label, paths, skip in kinds]
    return {"rows": rows, "total": sum(r[1] for r in rows), "partial": walk.partial}


class TeacherCache(NamedTuple):
    """A teacher-output cache as the team page lists it: no server path, its teacher and data by name."""

    key: str
    bytes: int
    examples: int
    built_by: str
    created: datetime | None
    teacher: str
    data: str


def team_caches(team: Team) -> list[TeacherCache]:
    """The complete teacher-output caches in the team's own cache folder (:func:`team_cache_dir`), newest first:
    the ones its runs read."""
    found = []
    for m in list_caches(team_cache_dir(team.pk)):
        try:
            created = datetime.fromisoformat(m.created)
        except ValueError:
            created = None
        labels = m.source or {}
        found.append(
            TeacherCache(
                m.key, m.bytes, m.examples, m.built_by, created, labels.get("teacher", ""), labels.get("data", "")
            )
        )
    return found
