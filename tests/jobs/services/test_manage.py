"""Renaming, archiving and deleting (``jobs.services.manage``), and what a team's files take (``team_storage``).

Files are real: a run folder with a checkpoint and an export under the test's data folder, exported zips in the
media storage; the on-commit removal runs (``django_capture_on_commit_callbacks(execute=True)``), so each test
checks the disk itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import selectors, services
from jobs.models import DatasetSpec, LogLine, MetricPoint, Run, Study, Teacher
from tests.jobs.conftest import KD_SECTIONS
from tests.jobs.pages.test_public import finished_run

pytestmark = pytest.mark.django_db


def a_run(team, name: str = "shared-run", **fields) -> Run:
    """A finished run with curves, a log and an exported zip in storage, then given ``fields``."""
    run = finished_run(team, name)
    Run.objects.filter(pk=run.pk).update(**fields)
    run.refresh_from_db()
    return run


def run_folder(run: Run, export: bool = True):
    """What a worker leaves in a run's folder: a checkpoint and, when it finished, the export."""
    folder = services.run_output_dir(run)
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "state.json").write_text("{}")
    (folder / "checkpoint" / "model.safetensors").write_bytes(b"w" * 4096)
    if export:
        (folder / "export").mkdir()
        (folder / "export" / "model.safetensors").write_bytes(b"e" * 2048)
    return folder


def delete(django_capture_on_commit_callbacks, **kwargs) -> services.Deleted:
    with django_capture_on_commit_callbacks(execute=True):
        return services.object_delete(**kwargs)


# --- runs -------------------------------------------------------------------------------------------------


def test_deleting_a_run_frees_its_folder_its_artifacts_and_its_rows(owner, team, django_capture_on_commit_callbacks):
    run = a_run(team)
    folder = run_folder(run)
    zip_path = default_storage.path(run.artifacts.get().path)
    storage = selectors.team_storage(team)
    assert dict((label, size) for label, size, _ in storage["rows"]) == {
        "run folders (checkpoints)": 4096 + 2 + 2048,
        "teacher-output caches": 0,
        "exported models (artifacts)": Path(zip_path).stat().st_size,
        "uploaded data sets": 0,
        "teachers' model files": 0,
    }
    done = delete(django_capture_on_commit_callbacks, user=owner, obj=run)
    assert done == services.Deleted(True, "Deleted run shared-run.")
    assert not folder.exists() and not Path(zip_path).exists()
    assert not Path(default_storage.path(f"runs/{run.pk}")).exists()  # the emptied folder of its exports too
    assert not Run.objects.filter(pk=run.pk).exists()
    assert not MetricPoint.objects.filter(run_id=run.pk).exists() and not LogLine.objects.filter(run_id=run.pk).exists()
    assert selectors.team_storage(team)["total"] == 0


@pytest.mark.parametrize("status", [Run.Status.QUEUED, Run.Status.RUNNING])
def test_a_queued_or_running_run_is_not_deleted(owner, team, status, django_capture_on_commit_callbacks):
    run = a_run(team, status=status)
    folder = run_folder(run, export=False)
    with pytest.raises(services.Conflict, match=f"This run is {status}: cancel it first"):
        delete(django_capture_on_commit_callbacks, user=owner, obj=run)
    assert Run.objects.filter(pk=run.pk).exists() and (folder / "checkpoint" / "state.json").is_file()
    assert default_storage.exists(run.artifacts.get().path)


def test_a_fine_tuning_run_keeps_the_export_its_teacher_reads(owner, team, django_capture_on_commit_callbacks):
    run = a_run(team, kind=Run.Kind.TEACHER_FINETUNE)
    folder = run_folder(run)
    teacher = Teacher.objects.create(
        team=team, name="fine-tuned", source=str(folder / "export"), architecture={}, from_run=run
    )
    sizes = {label: size for label, size, _ in selectors.team_storage(team)["rows"]}
    assert sizes["run folders (checkpoints)"] == 4096 + 2 and sizes["teachers' model files"] == 2048  # not twice
    delete(django_capture_on_commit_callbacks, user=owner, obj=run)
    assert not (folder / "checkpoint").exists()
    assert (folder / "export" / "model.safetensors").is_file()
    # the teacher goes later: its files (kdweb's own, under the run folders) with it, and the emptied run folder
    delete(django_capture_on_commit_callbacks, user=owner, obj=teacher)
    assert not folder.exists() and services.run_output_dir(run).parent.is_dir()


# --- teachers and data sets -----------------------------------------------------------------------------------


def test_a_teacher_or_data_set_in_use_is_archived_instead(owner, team, django_capture_on_commit_callbacks):
    run = a_run(team)
    for obj in (run.teacher, run.dataset):
        done = delete(django_capture_on_commit_callbacks, user=owner, obj=obj)
        assert done == services.Deleted(False, f"{obj.name} is used by 1 run: archived instead of deleted.")
        obj.refresh_from_db()
        assert obj.archived
    assert not selectors.teacher_list(owner).exists() and not selectors.dataset_list(owner).exists()
    assert list(selectors.teacher_list(owner, archived=True)) == [run.teacher]
    a_run(team, "second")
    two = delete(django_capture_on_commit_callbacks, user=owner, obj=run.teacher)
    assert two.message == "tiny-teacher is used by 2 runs: archived instead of deleted."


def test_a_teacher_folder_outside_kdwebs_folders_is_never_removed(
    owner, team, tmp_path, settings, django_capture_on_commit_callbacks
):
    outside = tmp_path / "operator-model"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    imports = settings.DATA_DIR / "imports" / "model"  # under the data folder, but the operator's import root
    imports.mkdir(parents=True)
    for source in (outside, imports):
        teacher = Teacher.objects.create(team=team, name=source.name, source=str(source), architecture={})
        delete(django_capture_on_commit_callbacks, user=owner, obj=teacher)
    assert (outside / "config.json").is_file() and imports.is_dir()
    assert not Teacher.objects.exists()


def test_deleting_an_uploaded_data_set_removes_its_file(owner, team, assets, django_capture_on_commit_callbacks):
    upload = SimpleUploadedFile("reviews.csv", assets["reviews"].read_bytes())
    dataset = services.dataset_create(
        user=owner, team=team, name="up", upload=upload, text_column="review", label_column="sentiment"
    )
    path = dataset.upload.path
    assert dict((label, n) for label, _, n in selectors.team_storage(team)["rows"])["uploaded data sets"] == 1
    delete(django_capture_on_commit_callbacks, user=owner, obj=dataset)
    assert not DatasetSpec.objects.exists() and not Path(path).exists()


# --- names, roles, archive ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [("", services.NAME_REQUIRED), ("   ", services.NAME_REQUIRED), ("x" * 101, "at most 100 characters")],
)
def test_a_bad_name_is_refused_at_name_and_nothing_is_stored(member, team, name, message):
    run = a_run(team)
    for obj in (run, run.teacher, run.dataset, Study.objects.create(team=team, name="s")):
        with pytest.raises(ValidationError) as refused:
            services.object_rename(user=member, obj=obj, name=name)
        assert list(refused.value.message_dict) == ["name"] and message in refused.value.message_dict["name"][0]
        assert type(obj).objects.get(pk=obj.pk).name == obj.name != name


def test_a_teacher_name_must_stay_unique_in_its_team(member, team):
    first = Teacher.objects.create(team=team, name="a", source="package:a", architecture={})
    Teacher.objects.create(team=team, name="b", source="package:b", architecture={})
    with pytest.raises(ValidationError, match="already has a teacher named 'b'"):
        services.object_rename(user=member, obj=first, name="b")
    assert services.object_rename(user=member, obj=first, name="  c  ").name == "c"


def test_members_rename_owners_archive_and_delete(owner, member, viewer, team):
    run = a_run(team)
    services.object_rename(user=member, obj=run, name="renamed")
    with pytest.raises(PermissionDenied):
        services.object_rename(user=viewer, obj=run, name="viewer's")
    for action in (services.object_archive, services.object_delete):
        with pytest.raises(PermissionDenied, match="Only the team's owners"):
            action(user=member, obj=run)
    assert Run.objects.get(pk=run.pk).name == "renamed" and not Run.objects.get(pk=run.pk).archived


def test_archived_objects_leave_the_default_lists_and_new_runs(owner, team, tiny_teacher, tiny_dataset):
    run = a_run(team)
    study = Study.objects.create(team=team, name="s")
    for obj in (run, study, tiny_teacher, tiny_dataset):
        services.object_archive(user=owner, obj=obj)
    assert run not in selectors.run_list(owner) and run in selectors.run_list(owner, archived=True)
    assert study not in selectors.study_list(owner) and study in selectors.study_list(owner, archived=True)
    assert tiny_teacher not in selectors.teacher_list(owner) and tiny_dataset not in selectors.dataset_list(owner)
    with pytest.raises(ValidationError) as refused:
        services.run_create(
            user=owner, teacher=tiny_teacher, dataset=tiny_dataset, kind="kd_feature", name="r", sections=KD_SECTIONS
        )
    assert refused.value.message_dict == {"teacher": [services.ARCHIVED.format(name="tiny-bert")]}
    services.object_archive(user=owner, obj=tiny_teacher, archived=False)
    assert tiny_teacher in selectors.teacher_list(owner)


# --- studies ---------------------------------------------------------------------------------------------------


def test_a_study_goes_alone_or_with_its_runs(owner, team, django_capture_on_commit_callbacks):
    kept, gone = Study.objects.create(team=team, name="kept"), Study.objects.create(team=team, name="gone")
    stays = a_run(team, "stays", study=kept)
    goes = a_run(team, "goes", study=gone)
    folder = run_folder(goes, export=False)
    delete(django_capture_on_commit_callbacks, user=owner, obj=kept)
    stays.refresh_from_db()
    assert stays.study is None
    live = a_run(team, "live", study=gone, status=Run.Status.RUNNING)
    with pytest.raises(services.Conflict, match="1 of this study's runs are queued or running"):
        delete(django_capture_on_commit_callbacks, user=owner, obj=gone, with_runs=True)
    live.delete()
    delete(django_capture_on_commit_callbacks, user=owner, obj=gone, with_runs=True)
    assert not Run.objects.filter(pk=goes.pk).exists() and not folder.exists() and not Study.objects.exists()


# --- storage ------------------------------------------------------------------------------------------------------


def test_storage_is_read_within_its_time_bound(team):
    run_folder(a_run(team))
    assert selectors.team_storage(team, seconds=0)["partial"]
    assert not selectors.team_storage(team)["partial"]
