"""Side-by-side measurements: queued when a study's last run succeeds (through ``run_succeed``, as the worker
records it) or on demand, refused when there is nothing to measure, and measured by a real Celery worker from
the runs' exported zips.

The study's runs are created through the services with their training tasks held back; each is then recorded
as succeeded with a real tiny export (a 2- or 1-block classifier of the tiny teacher's vocabulary).
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from jobs import services
from jobs.models import Measurement, Run, Study
from tests.distill.test_side_by_side import write_student
from tests.jobs.conftest import KD_SECTIONS

MEASURE_TIMEOUT_S = 180


def held_study(user, teacher, dataset, capture, queue: str = "") -> Study:
    """A study of three runs whose training tasks are never sent."""
    with capture(execute=False):
        return services.study_create(
            user=user, teacher=teacher, dataset=dataset, name="s", sections=KD_SECTIONS, queue=queue
        )


def succeed(run: Run, folder: Path, layers: int = 2) -> Run:
    """Record ``run`` as the worker does at its end: evaluations, the export zipped into the storage."""
    export = write_student(folder / f"export-{run.pk}", layers)
    latency = {"bs1": {"median_ms": 1.0}, "bs32": {"median_ms": 9.0}}
    result = {
        "metrics": {role: {"split": "validation", "accuracy": 0.8} for role in ("student", "teacher")},
        "efficiency": {role: {"params": 10, "latency": latency} for role in ("student", "teacher")},
        "export_dir": str(export),
    }
    return services.run_succeed(run.pk, result)


def wait_for(measurement: Measurement, worker) -> Measurement:
    deadline = time.monotonic() + MEASURE_TIMEOUT_S
    while time.monotonic() < deadline:
        measurement.refresh_from_db()
        if not measurement.is_pending:
            return measurement
        time.sleep(0.3)
    pytest.fail(f"measurement {measurement.pk} still {measurement.status}\n{worker.log()}")


@pytest.mark.django_db
def test_the_last_run_of_a_study_to_succeed_queues_its_measurement(
    owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks, tmp_path
):
    study = held_study(owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks)
    first, second, third = study.runs.order_by("pk")
    with django_capture_on_commit_callbacks(execute=False):
        succeed(first, tmp_path)
        Run.objects.filter(pk=second.pk).update(status=Run.Status.FAILED)
        assert not Measurement.objects.exists()  # a run is still queued
    with django_capture_on_commit_callbacks(execute=False):
        succeed(third, tmp_path)
    measurement = Measurement.objects.get()
    assert measurement.study == study and measurement.status == Measurement.Status.QUEUED
    assert set(measurement.runs.all()) == {first, third}  # the succeeded students
    assert measurement.queue == third.queue and measurement.created_by is None
    # asked again while it is queued: the same measurement
    again = services.measurement_request(user=owner, runs=study.runs.prefetch_related("artifacts"), study=study)
    assert again == measurement and Measurement.objects.count() == 1


@pytest.mark.django_db
def test_a_study_whose_last_run_fails_measures_the_others(
    owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks, tmp_path
):
    study = held_study(owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks)
    first, second, third = study.runs.order_by("pk")
    with django_capture_on_commit_callbacks(execute=False):
        succeed(first, tmp_path)
        services.run_fail(third.pk, "boom")
        assert not Measurement.objects.exists()  # the second is still queued
        services.run_fail(second.pk, "boom")
    assert list(Measurement.objects.get(study=study).runs.all()) == [first]


@pytest.mark.django_db
def test_a_measurement_whose_worker_stopped_answering_is_replaced(
    owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks, tmp_path, settings
):
    study = held_study(owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        for run in study.runs.all():
            succeed(run, tmp_path)
    first = Measurement.objects.get()
    assert services.measurement_claim(first.pk, host="w@h").is_pending
    assert services.measurement_claim(first.pk, host="w@h") is None  # claimed once
    runs = study.runs.prefetch_related("artifacts")
    with django_capture_on_commit_callbacks(execute=False):
        assert services.measurement_request(user=owner, runs=runs, study=study) == first  # still measuring
        long_ago = timezone.now() - timedelta(seconds=settings.KDWEB_MEASURE_CAP_S + Measurement.STALE_MARGIN_S + 1)
        Measurement.objects.filter(pk=first.pk).update(started_at=long_ago)
        second = services.measurement_request(user=owner, runs=runs, study=study)
    first.refresh_from_db()
    assert second != first and second.status == Measurement.Status.QUEUED
    assert first.status == Measurement.Status.FAILED and "stopped answering" in first.error


@pytest.mark.django_db
def test_a_measurement_needs_a_succeeded_student_and_a_writer(
    owner, viewer, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks, tmp_path
):
    study = held_study(owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks)
    runs = list(study.runs.prefetch_related("artifacts"))
    with pytest.raises(ValidationError, match=services.NOTHING_TO_MEASURE):
        services.measurement_request(user=owner, runs=runs, study=study)
    with django_capture_on_commit_callbacks(execute=False):
        succeed(runs[0], tmp_path)
    runs = list(study.runs.prefetch_related("artifacts"))
    with pytest.raises(PermissionDenied):
        services.measurement_request(user=viewer, runs=runs, study=study)
    assert not Measurement.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_measures_the_teacher_and_every_student_side_by_side(
    celery_worker_process, owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks, tmp_path
):
    worker = celery_worker_process
    study = held_study(owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks, worker.queue)
    runs = list(study.runs.order_by("pk"))
    for layers, run in zip((2, 1, 2), runs, strict=True):
        succeed(run, tmp_path, layers)  # the last one sends the measurement to the worker on commit
    measurement = wait_for(Measurement.objects.get(study=study), worker)
    assert measurement.status == Measurement.Status.SUCCEEDED, measurement.error
    result = measurement.result
    assert measurement.host == result["host"] == worker.node
    assert result["threads"] == 1  # the worker runs one torch thread
    assert result["seq_len"] == KD_SECTIONS["data"]["max_length"] and result["rounds"] >= 5
    assert [m["run"] for m in result["models"]] == [None, *(r.pk for r in runs)]
    assert result["models"][0]["source"] == tiny_teacher.source
    for model in result["models"]:
        for t in model["latency"].values():
            assert 0 < t["p10_ms"] <= t["median_ms"] <= t["p90_ms"] and t["samples"] == result["rounds"]
    params = [m["params"] for m in result["models"]]
    assert params[0] > params[1] > params[2]  # the 4-block teacher, a 2-block and a 1-block student
    assert {"load_max", "foreign_cores", "heavy_load", "cpus"} <= set(result)
