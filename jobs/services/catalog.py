"""Teachers and data sets: registering them after the engine has read them, uploads, and the import roots.

The engine's ``field: reason`` errors become a Django ``ValidationError`` keyed by the same field paths
(``config_errors``), so forms can show each at the field it concerns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from transformers import PretrainedConfig

from distill.config import ConfigError, DataConfig
from distill.teachers import describe, is_causal_lm, load_config
from jobs.models import DatasetSpec, Teacher, Team
from jobs.permissions import require_write

UPLOAD_SUFFIXES = (".csv", ".jsonl", ".json", ".txt")
UPLOAD_TOO_LARGE = "The file is {size:,} bytes; the limit is {limit:,} bytes."
UPLOAD_BAD_TYPE = "Upload a .csv or .jsonl file (or, plain text for language models, a .txt file)."
IN_DATA_DIR = "That folder holds kdweb's own runs and uploads; they are registered by their team, not by path."
NO_IMPORT_ROOTS = "This server reads no local paths: upload the file, or use a package."
OUTSIDE_IMPORT_ROOTS = "Local paths must be under {roots}: upload the file, or use a package."
REMOTE_PREFIXES = ("package:", "packaged:", "hf:")


def config_errors(exc: ConfigError) -> ValidationError:
    """The engine's ``(field, message)`` pairs as a ValidationError keyed by field path."""
    errors: dict[str, list[str]] = {}
    for field, message in exc.errors:
        errors.setdefault(field, []).append(message)
    return ValidationError(errors)


def config_task(config: PretrainedConfig) -> str:
    """The run task a model can teach: ``causal_lm`` for a causal LM (the engine's ``is_causal_lm``: its saved
    architecture is one ``AutoModelForCausalLM`` builds), ``classification`` otherwise (a classifier, or a
    backbone to fine-tune)."""
    return Teacher.Task.CAUSAL_LM if is_causal_lm(config) else Teacher.Task.CLASSIFICATION


def teacher_facts(source: str) -> dict[str, Any]:
    """What a Teacher row stores about its source: architecture, task and the transformers config, read from
    the config alone (no weights). Engine errors are keyed ``source``."""
    try:
        config = load_config(source)
        arch = describe(config)
    except ConfigError as exc:
        raise ValidationError({"source": [m for _, m in exc.errors]}) from None
    return {
        "architecture": arch.as_dict(),
        "task": config_task(config),
        "hf_config": json.loads(config.to_json_string(use_diff=False)),
    }


@transaction.atomic
def teacher_register(*, user, team: Team, name: str, source: str) -> Teacher:
    """Register a teacher after reading its architecture (which proves the source is usable)."""
    require_write(user, team)
    if Teacher.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"This team already has a teacher named {name!r}."})
    import_path_check(source, "source", hub_ids=True)
    return Teacher.objects.create(team=team, name=name, source=source, created_by=user, **teacher_facts(source))


def local_path(source: str, *, hub_ids: bool = False) -> Path | None:
    """The file or folder a source names on this server, or None for a package, a packaged set, ``hf:`` or
    (with ``hub_ids``, as teachers take them) a hub id such as ``org/model`` that is no local path."""
    if source.startswith(REMOTE_PREFIXES):
        return None
    path = Path(source).expanduser()
    # the engine's rule (distill.teachers.resolve_source): what is not on disk and looks like org/model is a hub id
    if hub_ids and not path.exists() and not source.startswith((".", "/", "~")) and source.count("/") <= 1:
        return None
    return path


def import_path_check(source: str, field: str, *, hub_ids: bool = False) -> None:
    """Refuse a local path outside the operator's ``KDWEB_IMPORT_ROOTS`` (symlinks and ``..`` resolved first),
    or inside DATA_DIR, where other teams' exports and uploads live, unless a root inside DATA_DIR (the local
    demo's ``var/imports``) holds it. The answer is the same whether the path exists or not, so it tells
    nothing about the server's files."""
    path = local_path(source, hub_ids=hub_ids)
    if path is None:
        return
    roots = [Path(root).resolve() for root in settings.KDWEB_IMPORT_ROOTS]
    if not roots:
        raise ValidationError({field: NO_IMPORT_ROOTS})
    resolved = path.resolve()
    holders = [root for root in roots if resolved.is_relative_to(root)]
    if not holders:
        raise ValidationError({field: OUTSIDE_IMPORT_ROOTS.format(roots=", ".join(map(str, roots)))})
    data_dir = Path(settings.DATA_DIR).resolve()
    if resolved.is_relative_to(data_dir) and not any(root.is_relative_to(data_dir) for root in holders):
        raise ValidationError({field: IN_DATA_DIR})


def _store_upload(upload: UploadedFile) -> str:
    if upload.size > settings.UPLOAD_MAX_BYTES:
        raise ValidationError({"upload": UPLOAD_TOO_LARGE.format(size=upload.size, limit=settings.UPLOAD_MAX_BYTES)})
    if not upload.name.lower().endswith(UPLOAD_SUFFIXES):
        raise ValidationError({"upload": UPLOAD_BAD_TYPE})
    return default_storage.save(f"uploads/{upload.name}", upload)


def dataset_describe(data_cfg: DataConfig, task: str = Teacher.Task.CLASSIFICATION) -> dict[str, Any]:
    """Labels, split sizes and the first rows of a data set, read with the engine (errors by field). As
    plain text for ``causal_lm`` (no labels: the texts alone, split as a language model's run splits them)."""
    from distill.data import load_data, load_text_data, preview

    try:
        data = load_text_data(data_cfg) if task == Teacher.Task.CAUSAL_LM else load_data(data_cfg)
        rows = preview(data_cfg, rows=5, task=task)
    except ConfigError as exc:
        raise config_errors(exc) from None
    sizes = {name: len(data.split(name)) for name in ("train", "validation", "test")}
    return {"labels": list(data.labels), "sizes": sizes, "preview": rows}


@transaction.atomic
def dataset_create(
    *,
    user,
    team: Team,
    name: str,
    source: str = "",
    upload: UploadedFile | None = None,
    text_column: str = "text",
    label_column: str = "label",
    task: str = Teacher.Task.CLASSIFICATION,
) -> DatasetSpec:
    """Register a data set from a packaged name, a path or an uploaded CSV/JSONL, after reading it; with
    ``task="causal_lm"`` as plain text without labels (also a .txt file), for language models only."""
    require_write(user, team)
    if DatasetSpec.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"This team already has a data set named {name!r}."})
    if source and not upload:
        import_path_check(source, "source")
    stored = _store_upload(upload) if upload else ""
    if stored:
        source = default_storage.path(stored)
    if not source:
        raise ValidationError({"source": "Choose a packaged set or upload a file."})
    try:
        data_cfg = DataConfig(source=source, text_column=text_column, label_column=label_column)
        described = dataset_describe(data_cfg, task)
    except Exception as exc:
        if stored:  # a refused file is not kept, nor one that broke the reader
            default_storage.delete(stored)
        if isinstance(exc, ValidationError):
            raise ValidationError({k.removeprefix("data."): v for k, v in exc.message_dict.items()}) from None
        raise
    return DatasetSpec.objects.create(
        team=team,
        name=name,
        source=source,
        upload=stored,
        text_column=text_column,
        label_column=label_column,
        created_by=user,
        **described,
    )
