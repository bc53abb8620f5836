"""PATCH (rename, archive) and DELETE of runs, studies, teachers and data sets through ``/api/v1/``, with the same
rules as the pages: 400 at ``name`` for a bad name (nothing stored), 409 for a run queued or running and for a
teacher or data set in use (archived instead), archived objects out of the lists unless ``?archived=1``, and
still read at their URLs. Who may do what, persona by persona, is in ``scenarios/test_access_matrix.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Run, Study
from tests.jobs.services.test_manage import a_run, run_folder

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_api(owner) -> APIClient:
    client = APIClient()
    client.force_authenticate(owner)
    return client


@pytest.mark.parametrize("path", ["runs", "studies", "teachers", "datasets"])
@pytest.mark.parametrize(("name", "message"), [("", services.NAME_REQUIRED), ("n" * 101, "at most 100 characters")])
def test_a_bad_name_answers_400_at_name_and_nothing_changes(owner_api, team, path, name, message):
    run = a_run(team)
    obj = {"runs": run, "studies": Study.objects.create(team=team, name="s"), "teachers": run.teacher}.get(
        path, run.dataset
    )
    response = owner_api.patch(f"/api/v1/{path}/{obj.pk}/", {"name": name, "archived": True}, format="json")
    assert response.status_code == 400 and list(response.json()) == ["name"]
    assert message in response.json()["name"][0]
    obj.refresh_from_db()
    assert obj.name != name and not obj.archived  # the archive flag of the same request is not kept either


def test_an_empty_patch_says_what_it_takes(owner_api, team):
    response = owner_api.patch(f"/api/v1/runs/{a_run(team).pk}/", {}, format="json")
    assert response.status_code == 400 and "Give a name" in response.json()["non_field_errors"][0]


def test_rename_and_archive(owner_api, team):
    run = a_run(team)
    response = owner_api.patch(f"/api/v1/runs/{run.pk}/", {"name": " better ", "archived": True}, format="json")
    assert response.status_code == 200 and response.json()["name"] == "better" and response.json()["archived"]
    assert owner_api.get("/api/v1/runs/").json()["results"] == []
    assert [r["id"] for r in owner_api.get("/api/v1/runs/?archived=1").json()["results"]] == [run.pk]
    assert owner_api.get(f"/api/v1/runs/{run.pk}/").status_code == 200


def test_deleting_a_run_frees_its_files(owner_api, team, django_capture_on_commit_callbacks):
    run = a_run(team)
    folder, stored = run_folder(run), Path(default_storage.path(run.artifacts.get().path))
    with django_capture_on_commit_callbacks(execute=True):
        assert owner_api.delete(f"/api/v1/runs/{run.pk}/").status_code == 204
    assert not folder.exists() and not stored.exists() and not Run.objects.exists()
    assert owner_api.get(f"/api/v1/runs/{run.pk}/").status_code == 404


def test_a_running_run_and_a_teacher_in_use_answer_409(owner_api, team):
    run = a_run(team, status=Run.Status.RUNNING)
    response = owner_api.delete(f"/api/v1/runs/{run.pk}/")
    assert response.status_code == 409 and response.json() == {"detail": services.RUN_LIVE.format(status="running")}
    response = owner_api.delete(f"/api/v1/teachers/{run.teacher_id}/")
    assert response.status_code == 409
    assert response.json() == {"detail": "tiny-teacher is used by 1 run: archived instead of deleted."}
    assert owner_api.get("/api/v1/teachers/").json()["results"] == []
    archived = owner_api.get(f"/api/v1/teachers/{run.teacher_id}/").json()
    assert archived["archived"] and archived["name"] == "tiny-teacher"
    assert Run.objects.filter(pk=run.pk).exists()


def test_a_study_is_deleted_with_its_runs_on_request(owner_api, team):
    study = Study.objects.create(team=team, name="s")
    run = a_run(team, study=study)
    assert owner_api.delete(f"/api/v1/studies/{study.pk}/?with_runs=1").status_code == 204
    assert not Run.objects.filter(pk=run.pk).exists()
