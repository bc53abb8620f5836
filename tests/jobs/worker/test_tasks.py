"""End to end: runs created by the services are trained by a real Celery worker process.

The worker reads the test database and the test Redis (see ``celery_worker_process``), so every test
here commits its data (``transaction=True``): ``run_create``'s on-commit hook sends the task when its
atomic block ends, exactly as it does behind a page.
"""

from __future__ import annotations

import hashlib
import re
import time
import zipfile

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient
from transformers import AutoModelForSequenceClassification

from distill.teacher_cache import list_caches
from jobs import services
from jobs.models import Artifact, Evaluation, MetricPoint, Run, Teacher
from jobs.worker.tasks import run_execute

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"latency_repeats": 1, "checkpoint_every": 1000, "data": {"max_length": 24}}
KD_SECTIONS = {**FAST, "student": {"layers": 2}, "optim": {"max_steps": 4, "batch_size": 8}}
FINETUNE_SECTIONS = {**FAST, "optim": {"max_steps": 3, "batch_size": 8}}
KD_TERMS = ("loss/task", "loss/output", "loss/feature", "loss/attention", "loss/total")


def steps_of(run: Run, name: str) -> list[int]:
    return sorted(MetricPoint.objects.filter(run=run, name=name).values_list("step", flat=True))


def assert_succeeded(run: Run, worker) -> None:
    assert run.status == Run.Status.SUCCEEDED, f"{run.status}: {run.error}\n{worker.log()}"
    assert (run.progress, run.step, run.error) == (1.0, run.total_steps, "")
    assert run.host == worker.node and run.celery_task_id  # the node name: a restarted node finds its runs
    assert run.started_at <= run.heartbeat_at <= run.finished_at


def test_a_kd_feature_run_trains_evaluates_and_exports(
    celery_worker_process, owner, tiny_teacher, tiny_dataset, tmp_path
):
    worker = celery_worker_process
    run = worker.launch(owner, tiny_teacher, tiny_dataset, KD_SECTIONS, kind="kd_feature", name="kd")
    assert run.status == Run.Status.QUEUED  # committed and sent; the worker takes it from here
    run = worker.wait_for(run)
    assert_succeeded(run, worker)
    assert run.total_steps == 4

    for term in KD_TERMS:
        assert steps_of(run, term) == [1, 2, 3, 4], term
    assert steps_of(run, "val/accuracy") == [4]
    assert MetricPoint.objects.filter(run=run, name="val/accuracy").get().value <= 1.0

    evaluations = {e.role: e for e in Evaluation.objects.filter(run=run)}
    assert set(evaluations) == {"student", "teacher"}
    student, teacher = evaluations["student"], evaluations["teacher"]
    assert student.split == teacher.split == "validation"
    assert 0.0 <= student.metrics["accuracy"] <= 1.0 and "accuracy" in teacher.metrics
    assert 0 < student.params < teacher.params == tiny_teacher.architecture["params"]
    assert student.latency and set(student.latency) == set(teacher.latency)
    assert student.bytes > 0 and teacher.bytes > student.bytes
    # what the worker measured, for the estimates of later runs of this teacher (selectors.step_time_nearest)
    record = run.step_time
    assert (record.host, record.queue, record.kind, record.batch_size) == (worker.node, worker.queue, "kd_feature", 8)
    assert set(record.measured) == set(record.analytic) == {"step_s", "evaluating", "measuring", "exporting"}
    assert all(seconds > 0 for seconds in record.measured.values())

    artifact = Artifact.objects.get(run=run)
    assert artifact.kind == Artifact.Kind.STUDENT
    assert default_storage.exists(artifact.path) and default_storage.size(artifact.path) == artifact.bytes
    with default_storage.open(artifact.path) as f:
        content = f.read()
    assert hashlib.sha256(content).hexdigest() == artifact.sha256
    with default_storage.open(artifact.path) as f:
        zipfile.ZipFile(f).extractall(tmp_path / "student")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert model.config.num_hidden_layers == 2
    assert model.config.id2label == {0: "neg", 1: "pos"}


def test_a_fine_tuned_backbone_becomes_a_teacher_that_can_teach(
    celery_worker_process, owner, team, tiny_backbone, tiny_dataset
):
    worker = celery_worker_process
    finetune = worker.wait_for(
        worker.launch(owner, tiny_backbone, tiny_dataset, FINETUNE_SECTIONS, kind="teacher_finetune", name="ft")
    )
    assert_succeeded(finetune, worker)
    assert steps_of(finetune, "loss/task") == steps_of(finetune, "loss/total") == [1, 2, 3]
    assert not MetricPoint.objects.filter(run=finetune, name="loss/output").exists()
    assert list(Evaluation.objects.filter(run=finetune).values_list("role", flat=True)) == ["teacher"]
    assert Artifact.objects.filter(run=finetune, kind=Artifact.Kind.STUDENT).count() == 1

    new = Teacher.objects.get(from_run=finetune)
    assert (new.team, new.name, new.created_by) == (team, "ft (fine-tuned)", owner)
    assert new.labels == ["neg", "pos"]
    assert new.architecture["layers"] == tiny_backbone.architecture["layers"]
    assert new.source.startswith(str(worker.data_dir / "runs"))

    kd = worker.wait_for(worker.launch(owner, new, tiny_dataset, KD_SECTIONS, kind="kd_feature", name="kd-from-ft"))
    assert_succeeded(kd, worker)
    assert kd.config["teacher"]["source"] == new.source
    assert steps_of(kd, "loss/feature") == [1, 2, 3, 4]
    assert set(Evaluation.objects.filter(run=kd).values_list("role", flat=True)) == {"student", "teacher"}


def test_a_redelivered_message_does_not_train_twice(celery_worker_process, owner, tiny_teacher, tiny_dataset):
    worker = celery_worker_process
    run = worker.launch(owner, tiny_teacher, tiny_dataset, KD_SECTIONS, kind="kd_logits")  # message 1, on commit
    duplicates = [run_execute.apply_async((run.id,), queue=worker.queue).id for _ in range(2)]
    run = worker.wait_for(run)
    assert_succeeded(run, worker)

    # The solo worker takes the messages one by one: wait until it has answered all three.
    skipped = re.compile(rf"run {run.id} is not queued any more; nothing to do")
    deadline = time.monotonic() + 60
    while len(skipped.findall(worker.log(tail=10_000))) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(skipped.findall(worker.log(tail=10_000))) == 2, worker.log()

    assert run.celery_task_id not in duplicates  # the first message trained; the copies were no-ops
    assert steps_of(run, "loss/total") == [1, 2, 3, 4]
    assert Artifact.objects.filter(run=run).count() == 1
    assert Evaluation.objects.filter(run=run).count() == 2


def test_a_run_that_fails_in_training_stores_its_error(celery_worker_process, owner, team, tiny_teacher, assets):
    worker = celery_worker_process
    doomed = services.dataset_create(
        user=owner,
        team=team,
        name="doomed",
        upload=SimpleUploadedFile("doomed.csv", assets["reviews"].read_bytes()),
        text_column="review",
        label_column="sentiment",
    )
    default_storage.delete(doomed.upload.name)  # valid when registered, gone when the worker reads it

    run = worker.wait_for(worker.launch(owner, tiny_teacher, doomed, KD_SECTIONS, kind="kd_feature"))
    assert run.status == Run.Status.FAILED, worker.log()
    assert run.error.startswith(f"ConfigError: data.source: file not found: {doomed.source}")
    assert "Traceback" in run.error
    assert run.finished_at is not None and run.progress == 0.0
    assert not Artifact.objects.filter(run=run).exists() and not Evaluation.objects.filter(run=run).exists()
    assert worker.process.poll() is None  # a failing run does not take the worker down


def test_a_run_is_launched_on_a_live_workers_queue_and_refused_on_an_unknown_one(
    celery_worker_process, owner, tiny_teacher, tiny_dataset
):
    worker = celery_worker_process
    client = APIClient()
    client.force_authenticate(owner)
    body = {"teacher": tiny_teacher.pk, "dataset": tiny_dataset.pk, "kind": "kd_logits", "name": "q"}
    body["sections"] = KD_SECTIONS

    refused = client.post("/api/v1/runs/", body | {"queue": "gpu-typo"}, format="json")
    assert refused.status_code == 400
    (message,) = refused.json()["queue"]
    assert message.startswith("No worker consumes the queue “gpu-typo”") and f"Live queues: {worker.queue};" in message
    assert not Run.objects.exists()

    launched = client.post("/api/v1/runs/", body | {"queue": worker.queue}, format="json")
    assert launched.status_code == 201, launched.content
    assert launched.json()["waiting_for_broker"] is False  # sent before the answer
    run = worker.wait_for(Run.objects.get(pk=launched.json()["id"]))
    assert_succeeded(run, worker)


def test_a_study_caches_its_teacher_outputs_once_and_every_kd_run_reads_them(
    celery_worker_process, owner, tiny_teacher, tiny_dataset
):
    """Runs of a few steps would not build a cache on their own; a study builds one before its first run trains
    (in that run's ``caching`` phase), in its team's cache folder, and every distillation run of it reads it."""
    worker = celery_worker_process
    sections = {**KD_SECTIONS, "optim": {"max_steps": 2, "batch_size": 8}}
    study = services.study_create(
        user=owner, teacher=tiny_teacher, dataset=tiny_dataset, name="cached", sections=sections, queue=worker.queue
    )
    runs = [worker.wait_for(run) for run in study.runs.order_by("pk")]
    for run in runs:
        assert_succeeded(run, worker)
    logs = {run.kind: "\n".join(run.log_lines.values_list("text", flat=True)) for run in runs}
    caches = list_caches(services.team_cache_dir(tiny_teacher.team_id))
    assert len(caches) == 1, logs
    (cache,) = caches
    assert cache.built_by == runs[0].name  # the full method's run, the study's first
    assert sum(text.count("caching the teacher's outputs for the study's runs") for text in logs.values()) == 1
    for kind in ("kd_feature", "kd_logits"):
        assert f"teacher outputs from the cache {cache.key[:12]}" in logs[kind], logs[kind]
    assert "teacher outputs from the cache" not in logs["no_kd"]
    assert str(worker.data_dir) not in "".join(logs.values())  # no server path in a log a member reads
