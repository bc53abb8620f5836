"""Renaming, archiving and deleting runs, studies, teachers and data sets, and freeing their files.

Members rename; owners archive and delete (``jobs.permissions``). A teacher or data set that a run uses cannot
go (the run's config and page name it): deleting it archives it instead and says why. A run is deleted with
its folder (checkpoints, the export), its stored artifacts, points and log lines; never while queued or
running, when a worker writes to them. Files go only once the deletion has committed, and only from kdweb's
own folders (the run folders and the media storage), never from where an operator's import roots point.
Owners also delete their team's teacher-output caches (a run reading one keeps its open files).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import transaction

from distill.teacher_cache import list_caches, remove_cache
from jobs.live.events import status_send_on_commit
from jobs.models import DatasetSpec, Run, Study, Teacher, Team
from jobs.permissions import OWNERS_DELETE, require_owner, require_write
from jobs.selectors import owned_path, run_output_dir, team_cache_dir

Managed = Run | Study | Teacher | DatasetSpec

NAME_REQUIRED = "Give a name."
NAME_TOO_LONG = "A name has at most {limit} characters; this one has {length}."
NAME_TAKEN = "This team already has a {kind} named {name!r}."
RUN_LIVE = "This run is {status}: cancel it first, then delete it."
STUDY_RUNS_LIVE = "{count} of this study's runs are queued or running: cancel them first, then delete the study."
IN_USE = "{name} is used by {count} run{s}: archived instead of deleted."
NO_SUCH_CACHE = "The team has no teacher-output cache {key!r}."
CACHE_BUSY = (
    "A run is building this teacher-output cache again right now: delete it once that run has started training."
)


class Conflict(Exception):
    """A change the object's state forbids now (a running run cannot be deleted): the API answers 409."""


class Deleted(NamedTuple):
    """What a delete did: ``deleted``, or archived instead (``message`` says why)."""

    deleted: bool
    message: str


def name_check(obj: Managed, name: str) -> str:
    """``name`` stripped, if the object may take it: not empty, not longer than its field, and for teachers and
    data sets not another one's of the team (the lists and the wizard tell them apart by name)."""
    name = (name or "").strip()
    limit = type(obj)._meta.get_field("name").max_length
    if not name:
        raise ValidationError({"name": NAME_REQUIRED})
    if len(name) > limit:
        raise ValidationError({"name": NAME_TOO_LONG.format(limit=limit, length=len(name))})
    others = type(obj).objects.filter(team_id=obj.team_id, name=name).exclude(pk=obj.pk)
    if isinstance(obj, Teacher | DatasetSpec) and others.exists():
        raise ValidationError({"name": NAME_TAKEN.format(kind=obj._meta.verbose_name, name=name)})
    return name


@transaction.atomic
def object_rename(*, user, obj: Managed, name: str) -> Managed:
    """Rename (owners and members). Runs keep the name their config and export were made with."""
    require_write(user, obj.team)
    obj.name = name_check(obj, name)
    obj.save(update_fields=["name"])
    if isinstance(obj, Run):
        status_send_on_commit(obj)  # open runs lists show the new name
    return obj


@transaction.atomic
def object_archive(*, user, obj: Managed, archived: bool = True) -> Managed:
    """Archive (or bring back) an object (owners): it leaves the default lists and the wizard's choices."""
    require_owner(user, obj.team, OWNERS_DELETE)
    obj.archived = archived
    obj.save(update_fields=["archived"])
    return obj


@transaction.atomic
def object_delete(*, user, obj: Managed, with_runs: bool = False) -> Deleted:
    """Delete an object (owners) and, once that commits, its files. A teacher or data set in use is archived
    instead. ``with_runs``: a study's runs go with it (else they stay, outside any study). Raises ``Conflict``
    for runs queued or running."""
    require_owner(user, obj.team, OWNERS_DELETE)
    if isinstance(obj, Run):
        _run_delete(obj)
    elif isinstance(obj, Study):
        _study_delete(obj, with_runs)
    else:
        used = obj.runs.count()
        if used:
            obj.archived = True
            obj.save(update_fields=["archived"])
            return Deleted(False, IN_USE.format(name=obj.name, count=used, s="" if used == 1 else "s"))
        files = _teacher_files(obj) if isinstance(obj, Teacher) else _upload_of(obj)
        obj.delete()
        transaction.on_commit(lambda: _remove(files))
    return Deleted(True, f"Deleted {obj._meta.verbose_name} {obj.name}.")


def _run_delete(run: Run) -> None:
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.status in (Run.Status.QUEUED, Run.Status.RUNNING):
        raise Conflict(RUN_LIVE.format(status=run.status))
    files = _run_files(run)
    run.delete()  # points, log lines, evaluations, artifacts, share links: cascaded
    transaction.on_commit(lambda: _remove(files))


def _study_delete(study: Study, with_runs: bool) -> None:
    if with_runs:
        live = study.runs.filter(status__in=(Run.Status.QUEUED, Run.Status.RUNNING)).count()
        if live:
            raise Conflict(STUDY_RUNS_LIVE.format(count=live))
        for run in study.runs.all():
            _run_delete(run)
    study.delete()


# --- files ------------------------------------------------------------------------------------------------


def _run_files(run: Run) -> list[Path]:
    """The run's folder (or, when the teacher a fine-tuning run registered from its export still exists,
    everything in it but that export) and its artifacts' stored files."""
    folder = run_output_dir(run).resolve()
    kept = [p for t in Teacher.objects.filter(from_run=run) if (p := Path(t.source).resolve()).is_relative_to(folder)]
    if kept and folder.is_dir():
        paths = [child for child in folder.iterdir() if not any(k.is_relative_to(child) for k in kept)]
    else:
        paths = [folder]
    return paths + [Path(default_storage.path(artifact.path)) for artifact in run.artifacts.all()]


def _teacher_files(teacher: Teacher) -> list[Path]:
    """A teacher's model folder, if kdweb wrote it (a fine-tuning run's export) and no other teacher reads it."""
    shared = Teacher.objects.filter(source=teacher.source).exclude(pk=teacher.pk).exists()
    return [Path(teacher.source)] if not shared else []


def _upload_of(dataset: DatasetSpec) -> list[Path]:
    if not dataset.upload or DatasetSpec.objects.filter(upload=dataset.upload.name).exclude(pk=dataset.pk).exists():
        return []
    return [Path(dataset.upload.path)]


def _remove(paths: list[Path]) -> None:
    """Remove files and folders under kdweb's own folders (anything else is left alone), then the folders they
    leave empty up to those roots."""
    for path in paths:
        resolved = owned_path(path)
        if resolved is None:
            continue
        if resolved.is_dir() and not resolved.is_symlink():
            shutil.rmtree(resolved, ignore_errors=True)
        else:
            resolved.unlink(missing_ok=True)
        parent = resolved.parent
        while owned_path(parent) is not None:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent


def teacher_cache_delete(*, user, team: Team, key: str) -> None:
    """Delete one of the team's teacher-output caches (owners): the next run that needs it builds it again; a
    run reading it now keeps its open files. ``key`` must name a cache the team's folder lists: it is matched,
    never joined into a path as given. Raises ``ValidationError`` for any other key, and while a run rebuilds
    that cache (a damaged one), rather than wait for it."""
    require_owner(user, team, OWNERS_DELETE)
    root = team_cache_dir(team.pk)

    def busy() -> None:  # a page waits for no build
        raise ValidationError(CACHE_BUSY)

    if key not in {m.key for m in list_caches(root)} or not remove_cache(root, key, on_wait=busy):
        raise ValidationError(NO_SUCH_CACHE.format(key=key[:40]))
