"""The services, called directly: registration, run creation with the engine's validation, and the
worker's side (claim, progress, failure), all against the real database and the real engine."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import redis
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from distill.callbacks import TrainState
from distill.layer_map import OUT_OF_RANGE
from jobs import services
from jobs.live.events import status_event
from jobs.models import DatasetSpec, MetricPoint, Run, StepTime, Teacher
from jobs.worker.tasks import run_execute
from tests.jobs.conftest import KD_SECTIONS, enqueued, forget_queue, new_queue, reviews_dataset

pytestmark = pytest.mark.django_db

FINETUNE_SECTIONS = {"optim": {"max_steps": 3, "batch_size": 8}, "data": {"max_length": 24}}


def errors_of(info: pytest.ExceptionInfo[ValidationError]) -> dict[str, list[str]]:
    return info.value.message_dict


def csv_upload(path, name: str = "reviews.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, path.read_bytes(), content_type="text/csv")


def uploads(data_dir) -> list[str]:
    folder = data_dir / "media" / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- teacher_register ---------------------------------------------------------------------------------


def test_teacher_register_reads_the_architecture(tiny_teacher, owner, team, assets):
    teacher = Teacher.objects.get(pk=tiny_teacher.pk)
    assert (teacher.team, teacher.created_by, teacher.source) == (team, owner, str(assets["teacher"]))
    arch = teacher.architecture
    assert (arch["model_type"], arch["layers"], arch["hidden_size"], arch["heads"]) == ("bert", 4, 32, 4)
    assert teacher.labels == ["neg", "pos"]
    assert arch["params"] > 0


def test_teacher_register_reads_a_backbone_without_labels(tiny_backbone):
    assert tiny_backbone.labels == []
    assert tiny_backbone.architecture["layers"] == 4


def test_teacher_register_rejects_a_source_that_is_not_a_model(owner, team, tmp_path):
    (tmp_path / "empty").mkdir()
    for source in (str(tmp_path / "missing"), str(tmp_path / "empty")):
        with pytest.raises(ValidationError) as info:
            services.teacher_register(user=owner, team=team, name="bad", source=source)
        assert list(errors_of(info)) == ["source"]
    assert not Teacher.objects.exists()


def test_teacher_register_rejects_a_duplicate_name(tiny_teacher, member, team, assets):
    with pytest.raises(ValidationError) as info:
        services.teacher_register(user=member, team=team, name=tiny_teacher.name, source=str(assets["teacher"]))
    assert "already has a teacher named" in errors_of(info)["name"][0]
    assert Teacher.objects.count() == 1


def test_teacher_register_refuses_viewers_and_outsiders(viewer, outsider, team, assets):
    for user in (viewer, outsider):
        with pytest.raises(PermissionDenied):
            services.teacher_register(user=user, team=team, name="t", source=str(assets["teacher"]))
    assert not Teacher.objects.exists()


# --- dataset_create -------------------------------------------------------------------------------------


def test_dataset_create_reads_an_uploaded_csv(owner, team, assets, data_dir):
    ds = reviews_dataset(owner, team, upload=csv_upload(assets["reviews"]))
    ds.refresh_from_db()
    assert ds.upload.name.startswith("uploads/") and ds.upload.name.endswith(".csv")
    assert default_storage.exists(ds.upload.name)
    assert ds.source == default_storage.path(ds.upload.name)
    assert ds.source.startswith(str(data_dir / "media"))
    assert ds.labels == ["neg", "pos"]
    assert set(ds.sizes) == {"train", "validation", "test"}
    assert ds.sizes["train"] > ds.sizes["validation"] > 0 and sum(ds.sizes.values()) <= 240
    assert len(ds.preview) == 5 and set(ds.preview[0]) == {"text", "label"}
    assert ds.data_config() == {"source": ds.source, "text_column": "review", "label_column": "sentiment"}


def test_dataset_create_reads_a_path(tiny_dataset, assets):
    assert tiny_dataset.source == str(assets["reviews"]) and not tiny_dataset.upload
    assert tiny_dataset.labels == ["neg", "pos"]


def test_dataset_create_names_the_missing_columns_and_drops_the_upload(owner, team, assets, data_dir):
    with pytest.raises(ValidationError) as info:
        services.dataset_create(
            user=owner, team=team, name="d", upload=csv_upload(assets["reviews"]), text_column="text"
        )
    errors = errors_of(info)
    assert set(errors) == {"text_column", "label_column"}
    assert "column 'text' not found" in errors["text_column"][0] and "review, sentiment" in errors["text_column"][0]
    assert uploads(data_dir) == []
    assert not DatasetSpec.objects.exists()


def test_dataset_create_rejects_an_oversize_upload(owner, team, assets, data_dir):
    with override_settings(UPLOAD_MAX_BYTES=100), pytest.raises(ValidationError) as info:
        services.dataset_create(
            user=owner, team=team, name="d", upload=csv_upload(assets["reviews"]), text_column="review"
        )
    size = assets["reviews"].stat().st_size
    assert errors_of(info) == {"upload": [services.UPLOAD_TOO_LARGE.format(size=size, limit=100)]}
    assert uploads(data_dir) == []


def test_dataset_create_rejects_other_file_types(owner, team, assets):
    with pytest.raises(ValidationError) as info:
        services.dataset_create(user=owner, team=team, name="d", upload=csv_upload(assets["reviews"], "r.xlsx"))
    assert errors_of(info) == {"upload": [services.UPLOAD_BAD_TYPE]}


def test_dataset_create_reports_malformed_csv(owner, team, data_dir):
    broken = b'review,sentiment\ngood film,pos\n"a, b, c",pos,extra\n'
    with pytest.raises(ValidationError) as info:
        reviews_dataset(owner, team, name="d", upload=SimpleUploadedFile("broken.csv", broken))
    (message,) = errors_of(info)["source"]
    assert "line 3: 3 fields but the header has 2" in message
    assert uploads(data_dir) == []


def test_dataset_create_needs_a_source_or_an_upload(owner, team):
    with pytest.raises(ValidationError) as info:
        services.dataset_create(user=owner, team=team, name="d")
    assert list(errors_of(info)) == ["source"]


def test_dataset_create_reads_packaged_rotten_tomatoes(member, team):
    ds = services.dataset_create(user=member, team=team, name="rt", source="packaged:rotten_tomatoes")
    assert ds.labels == ["rotten", "fresh"]
    assert ds.sizes == {"train": 10201, "validation": 1275, "test": 1276}
    assert ds.preview[0]["label"] in ("rotten", "fresh")


def test_dataset_create_rejects_a_duplicate_name_and_viewers(tiny_dataset, owner, viewer, team, assets):
    with pytest.raises(ValidationError) as info:
        services.dataset_create(user=owner, team=team, name=tiny_dataset.name, source=str(assets["reviews"]))
    assert list(errors_of(info)) == ["name"]
    with pytest.raises(PermissionDenied):
        services.dataset_create(user=viewer, team=team, name="other", source=str(assets["reviews"]))
    assert DatasetSpec.objects.count() == 1


# --- run_create ---------------------------------------------------------------------------------------


def create_run(user, teacher, dataset, sections, kind="kd_feature", name="run", **kwargs) -> Run:
    return services.run_create(
        user=user, teacher=teacher, dataset=dataset, kind=kind, name=name, sections=sections, **kwargs
    )


@pytest.mark.parametrize(
    ("sections", "field", "message"),
    [
        (
            {"student": {"layers": 2, "layer_map": [[0, 0], [1, 2], [2, 7]]}},
            "student.layer_map[2]",
            OUT_OF_RANGE.format(side="teacher", index=7, depth=4),
        ),
        ({"student": {"layers": 2, "heads": 5}}, "student.heads", "hidden size 32 is not divisible by 5 heads"),
        ({"student": {"layers": 2}, "optim": {"lr": 0}}, "optim.lr", "Input should be greater than 0"),
        ({"student": {"layers": 2}, "optim": {"lr": -1e-3}}, "optim.lr", "Input should be greater than 0"),
        ({"student": {"layers": 5}}, "student.layers", "5 blocks but the teacher has 4"),
        ({"student": {"layers": 2}, "data": {"max_length": 100}}, "data.max_length", "more than the teacher's 64"),
        ({}, "student", "required for kind kd_feature"),
    ],
)
def test_run_create_keys_engine_errors_by_config_path(
    owner, tiny_teacher, tiny_dataset, sections, field, message, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(ValidationError) as info:
        create_run(owner, tiny_teacher, tiny_dataset, sections)
    errors = errors_of(info)
    assert field in errors, errors
    assert any(message in m for m in errors[field]), errors[field]
    assert not Run.objects.exists() and callbacks == []


def test_run_create_refuses_kd_from_a_teacher_without_the_datas_head(owner, tiny_backbone, tiny_dataset):
    with pytest.raises(ValidationError) as info:
        create_run(owner, tiny_backbone, tiny_dataset, KD_SECTIONS)
    (message,) = errors_of(info)["dataset"]
    assert "fine-tune it on this data first" in message
    assert not Run.objects.exists()


def test_run_create_refuses_a_data_set_of_another_team(owner, outsider, other_team, tiny_teacher, assets):
    theirs = reviews_dataset(outsider, other_team, name="theirs", source=str(assets["reviews"]))
    with pytest.raises(ValidationError) as info:
        create_run(owner, tiny_teacher, theirs, KD_SECTIONS)
    assert list(errors_of(info)) == ["dataset"]
    assert not Run.objects.exists()


def test_run_create_refuses_viewers_and_outsiders(viewer, outsider, tiny_teacher, tiny_dataset):
    for user in (viewer, outsider):
        with pytest.raises(PermissionDenied):
            create_run(user, tiny_teacher, tiny_dataset, KD_SECTIONS)
    assert not Run.objects.exists()


def test_run_create_saves_the_config_and_enqueues_on_commit(
    member, team, tiny_teacher, tiny_dataset, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = create_run(member, tiny_teacher, tiny_dataset, KD_SECTIONS)
    assert enqueued(callbacks) == 1  # besides the status for the runs lists
    run.refresh_from_db()
    assert (run.team, run.created_by, run.kind, run.status) == (team, member, "kd_feature", Run.Status.QUEUED)
    assert run.queue == settings.CELERY_TASK_DEFAULT_QUEUE and run.celery_task_id == ""
    assert (run.progress, run.step, run.host, run.started_at) == (0.0, 0, "", None)
    cfg = run.config
    assert cfg["kind"] == "kd_feature" and cfg["name"] == "run"
    assert cfg["teacher"] == {"source": tiny_teacher.source, "dtype": "float32"}
    assert cfg["data"]["source"] == tiny_dataset.source and cfg["data"]["max_length"] == 24
    assert (cfg["data"]["text_column"], cfg["data"]["label_column"]) == ("review", "sentiment")
    assert cfg["student"]["layers"] == 2 and cfg["optim"]["max_steps"] == 4
    assert run.student_shape == "2 x 32"


def test_run_create_takes_sources_from_the_registered_objects(owner, tiny_teacher, tiny_dataset, tmp_path):
    sections = {
        **KD_SECTIONS,
        "teacher": {"source": str(tmp_path / "elsewhere")},
        "data": {"max_length": 24, "source": "/etc/passwd.csv", "text_column": "x"},
    }
    run = create_run(owner, tiny_teacher, tiny_dataset, sections)
    assert run.config["teacher"]["source"] == tiny_teacher.source
    assert run.config["data"]["source"] == tiny_dataset.source
    assert run.config["data"]["text_column"] == "review"


def test_run_create_accepts_a_teacher_finetune_of_a_backbone(owner, tiny_backbone, tiny_dataset):
    run = create_run(owner, tiny_backbone, tiny_dataset, FINETUNE_SECTIONS, kind="teacher_finetune")
    assert run.config["student"] is None and run.student_shape == "—"


# --- the worker's side -----------------------------------------------------------------------------------


def test_run_claim_moves_a_queued_run_to_running_once(queued_run):
    claimed = services.run_claim(queued_run.pk, host="gpu-1", task_id="task-1")
    assert claimed is not None
    assert (claimed.status, claimed.host, claimed.celery_task_id) == (Run.Status.RUNNING, "gpu-1", "task-1")
    assert claimed.started_at is not None and claimed.heartbeat_at == claimed.started_at

    assert services.run_claim(queued_run.pk, host="gpu-2", task_id="task-2") is None
    queued_run.refresh_from_db()
    assert (queued_run.host, queued_run.celery_task_id) == ("gpu-1", "task-1")


def test_run_claim_ignores_finished_and_missing_runs(queued_run):
    services.run_fail(queued_run.pk, "boom")
    assert services.run_claim(queued_run.pk, host="h", task_id="t") is None
    assert services.run_claim(queued_run.pk + 1000, host="h", task_id="t") is None


def test_run_progress_stores_each_point_once(queued_run):
    points = [("loss/total", 1, 0.9), ("loss/task", 1, 0.7), ("loss/total", 2, 0.8)]
    services.run_progress(queued_run.pk, points, step=2, total_steps=8, eta_s=12.0)
    queued_run.refresh_from_db()
    first_beat = queued_run.heartbeat_at
    assert (queued_run.step, queued_run.total_steps, queued_run.progress, queued_run.eta_s) == (2, 8, 0.25, 12.0)
    assert first_beat is not None

    resent = [("loss/total", 2, 123.0), ("loss/total", 3, 0.7)]  # a redelivered point keeps its first value
    services.run_progress(queued_run.pk, points + resent, step=3, total_steps=8, eta_s=None)
    queued_run.refresh_from_db()
    stored = sorted(MetricPoint.objects.filter(run=queued_run).values_list("name", "step", "value"))
    assert stored == [("loss/task", 1, 0.7), ("loss/total", 1, 0.9), ("loss/total", 2, 0.8), ("loss/total", 3, 0.7)]
    assert (queued_run.step, queued_run.progress, queued_run.eta_s) == (3, 0.375, None)
    assert queued_run.heartbeat_at > first_beat


def test_run_progress_without_total_steps_is_zero(queued_run):
    services.run_progress(queued_run.pk, [], step=0, total_steps=0, eta_s=None)
    queued_run.refresh_from_db()
    assert (queued_run.progress, queued_run.heartbeat_at is not None) == (0.0, True)


def test_run_fail_stores_the_error(queued_run):
    services.run_fail(queued_run.pk, "ConfigError: data.source: file not found")
    queued_run.refresh_from_db()
    assert queued_run.status == Run.Status.FAILED and queued_run.is_finished
    assert queued_run.error == "ConfigError: data.source: file not found"
    assert queued_run.finished_at is not None


def test_run_fail_truncates_a_huge_error(queued_run):
    services.run_fail(queued_run.pk, "x" * 50_000)
    queued_run.refresh_from_db()
    assert len(queued_run.error) == 10_000


# --- the task, called in this process (as healthchecks calls its worker steps) ----------------------------


def test_run_execute_keeps_the_export_in_the_runs_folder_whatever_the_name(owner, tiny_teacher, tiny_dataset):
    sections = {**KD_SECTIONS, "latency_repeats": 1}
    run = create_run(owner, tiny_teacher, tiny_dataset, sections, kind="kd_logits", name="../../escape")
    run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error
    artifact = run.artifacts.get()
    assert artifact.path.startswith(f"runs/{run.pk}/") and ".." not in artifact.path.split("/")
    assert default_storage.size(artifact.path) == artifact.bytes


def test_run_execute_registers_a_fine_tuned_teacher_even_with_a_long_run_name(owner, tiny_backbone, tiny_dataset):
    name = "n" * Run._meta.get_field("name").max_length
    sections = {**FINETUNE_SECTIONS, "latency_repeats": 1}
    run = create_run(owner, tiny_backbone, tiny_dataset, sections, kind="teacher_finetune", name=name)
    run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED, run.error
    teacher = Teacher.objects.get(from_run=run)
    assert teacher.name.startswith("nnnn") and teacher.name.endswith("(fine-tuned)")
    assert len(teacher.name) <= Teacher._meta.get_field("name").max_length
    assert teacher.labels == ["neg", "pos"]


def test_run_execute_fails_a_run_whose_stored_config_no_longer_parses(queued_run):
    Run.objects.filter(pk=queued_run.pk).update(config={**queued_run.config, "optim": {"lr": "fast"}})
    run_execute(queued_run.pk)
    queued_run.refresh_from_db()
    assert queued_run.status == Run.Status.FAILED
    assert queued_run.error.startswith("ConfigError: optim.lr: ")
    assert queued_run.finished_at is not None


def test_run_execute_leaves_a_run_that_is_not_queued_alone(queued_run):
    services.run_fail(queued_run.pk, "cancelled by hand")
    run_execute(queued_run.pk)
    queued_run.refresh_from_db()
    assert (queued_run.status, queued_run.error, queued_run.host) == (Run.Status.FAILED, "cancelled by hand", "")
    assert not MetricPoint.objects.filter(run=queued_run).exists()


@pytest.mark.django_db
def test_it_refuses_paths_into_kdwebs_own_data_folder(team, owner, settings, tmp_path):
    """Another team's exports and uploads live there; only their own team may use them, by id."""
    folder = tmp_path / "runs" / "run-1" / "export"
    folder.mkdir(parents=True)
    settings.DATA_DIR = tmp_path
    with pytest.raises(ValidationError) as info:
        services.teacher_register(user=owner, team=team, name="stolen", source=str(folder))
    assert info.value.message_dict == {"source": [services.IN_DATA_DIR]}
    with pytest.raises(ValidationError) as info:
        upload = tmp_path / "media" / "uploads" / "x.csv"
        services.dataset_create(user=owner, team=team, name="stolen", source=str(upload))
    assert info.value.message_dict == {"source": [services.IN_DATA_DIR]}


# --- cancel, resume, heartbeats, interruption --------------------------------------------------------------


def running(run: Run, *, beat_seconds_ago: float = 0.0, host: str = "w1@gpu", task_id: str = "t") -> Run:
    services.run_claim(run.pk, host=host, task_id=task_id)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=beat_seconds_ago))
    run.refresh_from_db()
    return run


def log_of(run: Run) -> list[str]:
    return list(run.log_lines.order_by("id").values_list("text", flat=True))


def test_cancelling_a_queued_run_ends_it_and_its_message_does_nothing(queued_run, member):
    services.run_cancel(user=member, run=queued_run)
    queued_run.refresh_from_db()
    assert queued_run.status == Run.Status.CANCELLED and queued_run.finished_at is not None
    assert services.run_claim(queued_run.pk, host="h", task_id="t") is None
    assert log_of(queued_run) == ["cancel requested by mateo"]


def test_cancelling_a_running_run_asks_its_worker_to_stop(queued_run, owner):
    run = running(queued_run)
    assert services.run_heartbeat(run.pk) is False

    services.run_cancel(user=owner, run=run)
    run.refresh_from_db()
    assert (run.status, run.cancel_requested) == (Run.Status.RUNNING, True)
    assert services.run_heartbeat(run.pk) is True  # what the worker's heartbeat thread reads

    services.run_stopped(run.pk)  # the trainer checkpointed and returned
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and run.is_resumable


def test_a_run_cancelled_while_caching_its_teachers_outputs_says_it_had_not_trained(queued_run, owner):
    run = running(queued_run)
    services.run_heartbeat(run.pk, services.Phase("caching", 0.3))
    services.run_cancel(user=owner, run=run)
    services.run_stopped(run.pk)  # the build stopped at a batch: no step, no checkpoint
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and run.is_resumable
    assert log_of(run)[-1] == "stopped while caching the teacher's outputs, before training: cancelled"


@pytest.mark.parametrize("status", [Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.CANCELLED])
def test_a_finished_run_cannot_be_cancelled(queued_run, owner, status):
    Run.objects.filter(pk=queued_run.pk).update(status=status)
    with pytest.raises(ValidationError, match=f"A {status} run cannot be cancelled"):
        services.run_cancel(user=owner, run=queued_run)


def test_a_viewer_can_neither_cancel_nor_resume(queued_run, viewer):
    with pytest.raises(PermissionDenied):
        services.run_cancel(user=viewer, run=queued_run)
    Run.objects.filter(pk=queued_run.pk).update(status=Run.Status.INTERRUPTED)
    with pytest.raises(PermissionDenied):
        services.run_resume(user=viewer, run=queued_run)
    queued_run.refresh_from_db()
    assert queued_run.status == Run.Status.INTERRUPTED


@pytest.mark.parametrize("status", [Run.Status.CANCELLED, Run.Status.INTERRUPTED])
def test_resuming_queues_the_same_run_again_on_commit(queued_run, member, status, django_capture_on_commit_callbacks):
    run = running(queued_run)
    Run.objects.filter(pk=run.pk).update(status=status, cancel_requested=True, finished_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.run_resume(user=member, run=run)
    run.refresh_from_db()
    assert (run.status, run.cancel_requested, run.finished_at) == (Run.Status.QUEUED, False, None)
    assert enqueued(callbacks) == 1  # sent to the broker once committed (besides the log line and the status)

    claimed = services.run_claim(run.pk, host="w2@gpu", task_id="t2")  # the next worker takes it from here
    assert (claimed.attempts, claimed.started_at, claimed.host) == (2, run.started_at, "w2@gpu")


@pytest.mark.parametrize("status", [Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.SUCCEEDED])
def test_only_a_stopped_run_can_be_resumed(queued_run, owner, status):
    Run.objects.filter(pk=queued_run.pk).update(status=status)
    with pytest.raises(ValidationError, match=f"this one is {status}"):
        services.run_resume(user=owner, run=queued_run)


def test_a_failed_run_resumes_if_it_has_a_checkpoint(queued_run, owner, django_capture_on_commit_callbacks):
    run = running(queued_run)
    services.run_fail(run.pk, "OperationalError: terminating connection due to administrator command")
    with pytest.raises(ValidationError, match="failed before its first checkpoint: nothing to resume"):
        services.run_resume(user=owner, run=run)
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED and run.error

    checkpoint = services.run_output_dir(run) / "checkpoint"  # what the trainer leaves (distill.checkpoint)
    checkpoint.mkdir(parents=True)
    TrainState(step=10, total_steps=20).save(checkpoint / "state.json")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.run_resume(user=owner, run=run)
    run.refresh_from_db()
    assert (run.status, run.error, run.finished_at) == (Run.Status.QUEUED, "", None)
    assert enqueued(callbacks) == 1


def test_the_worker_stores_the_phase_of_its_run(queued_run):
    run = running(queued_run)
    assert services.run_heartbeat(run.pk, services.Phase("measuring", 0.4)) is False
    run.refresh_from_db()
    assert (run.phase, run.phase_progress) == ("measuring", 0.4)
    assert status_event(run) | {"phase": "measuring", "phase_progress": 0.4} == status_event(run)
    services.run_progress(run.pk, [], step=3, total_steps=8, eta_s=None, phase=services.Phase("training", 3 / 8))
    run.refresh_from_db()
    assert (run.phase, run.phase_progress) == ("training", 0.375)
    services.run_heartbeat(run.pk)  # without a phase: the stored one stays
    run.refresh_from_db()
    assert run.phase == "training"
    # in the finish the ETA comes with the phase: what evaluation, latency and export still take
    services.run_heartbeat(run.pk, services.Phase("evaluating", 0.5), eta_s=42.0)
    run.refresh_from_db()
    assert (run.phase, run.eta_s, status_event(run)["eta_s"]) == ("evaluating", 42.0, 42.0)


def test_a_succeeded_run_keeps_its_measured_times_once(queued_run):
    run = running(queued_run)
    timings = {"measured": {"step_s": 0.5, "evaluating": 3.0}, "analytic": {"step_s": 0.25, "evaluating": 1.0}}
    record = services.step_time_record(run.pk, timings)
    assert (record.kind, record.task, record.student_layers, record.batch_size, record.max_length) == (
        "kd_feature",
        "classification",
        2,
        8,
        24,
    )
    assert record.student_hidden == run.teacher.architecture["hidden_size"] and record.queue == run.queue
    assert record.ratios() == {"step_s": 2.0, "evaluating": 3.0}
    services.step_time_record(run.pk, {**timings, "measured": {"step_s": 1.0}})  # a resumed run's last attempt
    assert StepTime.objects.get().measured == {"step_s": 1.0}
    assert services.step_time_record(run.pk, {"measured": {"evaluating": 3.0}, "analytic": {}}) is None


def test_a_run_without_a_recent_heartbeat_is_interrupted(queued_run, owner, tiny_teacher, tiny_dataset):
    stale = running(queued_run, beat_seconds_ago=120)
    fresh = running(create_run(owner, tiny_teacher, tiny_dataset, KD_SECTIONS, name="fresh"), beat_seconds_ago=5)

    assert services.runs_interrupt(stale_after_s=60) == [stale.pk]

    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.status, fresh.status) == (Run.Status.INTERRUPTED, Run.Status.RUNNING)
    assert log_of(stale)[-1].startswith("interrupted at step 0: no heartbeat for 60 s")
    assert services.run_heartbeat(stale.pk) is True  # its worker, if it is alive after all, stops
    assert services.runs_interrupt(stale_after_s=60) == []


def test_a_restarted_worker_interrupts_the_stale_runs_it_had(queued_run, owner, tiny_teacher, tiny_dataset):
    """As ``jobs.worker.tasks.interrupt_runs_of_restarted_worker`` calls it: a fresh heartbeat under the same node name
    is a live worker of that name, whose run goes on."""
    mine = running(queued_run, host="w1@gpu", beat_seconds_ago=120)
    namesake = running(create_run(owner, tiny_teacher, tiny_dataset, KD_SECTIONS, name="namesake"), host="w1@gpu")
    other = running(
        create_run(owner, tiny_teacher, tiny_dataset, KD_SECTIONS, name="other"), host="w2@gpu", beat_seconds_ago=120
    )

    assert services.runs_interrupt(host="w1@gpu", stale_after_s=60) == [mine.pk]

    for run in (mine, namesake, other):
        run.refresh_from_db()
    assert (mine.status, namesake.status, other.status) == (Run.Status.INTERRUPTED, *[Run.Status.RUNNING] * 2)
    assert "w1@gpu started again" in log_of(mine)[-1]


def test_a_stopping_worker_interrupts_the_runs_of_its_own_tasks_only(queued_run, owner, tiny_teacher, tiny_dataset):
    mine = running(queued_run, host="w1@gpu", task_id="task-mine")
    namesake = running(
        create_run(owner, tiny_teacher, tiny_dataset, KD_SECTIONS, name="namesake"), host="w1@gpu", task_id="task-2"
    )
    assert services.runs_interrupt(task_ids=["task-mine"], reason="w1@gpu is shutting down") == [mine.pk]
    namesake.refresh_from_db()
    assert namesake.status == Run.Status.RUNNING


def test_the_watchdog_command_refuses_a_staleness_below_the_heartbeat(settings):
    settings.KDWEB_HEARTBEAT_S = 5
    with pytest.raises(CommandError, match="must exceed the heartbeat interval"):
        call_command("watchdog", "--once", "--stale-after", "5")


def test_the_watchdog_command_interrupts_stale_runs(queued_run, capsys):
    stale = running(queued_run, beat_seconds_ago=120)
    call_command("watchdog", "--once", "--stale-after", "60")
    stale.refresh_from_db()
    assert stale.status == Run.Status.INTERRUPTED
    assert f"run {stale.pk}: no heartbeat for 60 s, marked interrupted" in capsys.readouterr().out


# --- sending runs to the broker: the request's send and the watchdog's sweep ----------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_sweep_sends_an_unsent_run_once_and_skips_one_being_sent(queued_run, settings):
    """A run committed but never sent (as when the broker was down): while another process holds its row (the
    request's own send, or a second sweep) the sweep skips it; then it sends it once."""
    queue = new_queue()
    Run.objects.filter(pk=queued_run.pk).update(queue=queue, enqueued_at=None, celery_task_id="")
    assert services.runs_send_unsent() == []  # too young: its request may be sending it right now

    locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        with transaction.atomic():
            Run.objects.select_for_update().get(pk=queued_run.pk)
            locked.set()
            release.wait(30)
        connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    try:
        assert locked.wait(30)
        assert services.runs_send_unsent(older_than_s=0) == []  # skipped, not waited for
    finally:
        release.set()
        holder.join()
    try:
        assert services.runs_send_unsent(older_than_s=0) == [queued_run.pk]
        assert services.runs_send_unsent(older_than_s=0) == []
        assert redis.Redis.from_url(settings.CELERY_BROKER_URL).llen(queue) == 1  # one message
    finally:
        forget_queue(queue)
    queued_run.refresh_from_db()
    assert queued_run.enqueued_at is not None and queued_run.celery_task_id
    assert not queued_run.waiting_for_broker
    assert log_of(queued_run)[-1] == f"the broker answers again: sent to the queue {queue}"


def test_resuming_a_run_makes_it_unsent_again(queued_run, member, django_capture_on_commit_callbacks):
    run = running(queued_run)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.INTERRUPTED, enqueued_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=False):  # the broker never got the new message
        services.run_resume(user=member, run=run)
    run.refresh_from_db()
    assert run.waiting_for_broker  # the sweep sends it
