"""The manage panel (``jobs/partials/manage.html``, ``jobs.pages.manage``) and the team page's storage table
with its teacher-output caches.

Members see Rename, owners also Archive and Delete (behind a second, no-script confirm), viewers nothing; the
outcome comes back as a message; archived objects leave the lists but their pages still open.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from django.core.files.storage import default_storage

from distill.teacher_cache.store import Manifest, building_folder, locked, publish, write_shard
from jobs import services
from jobs.models import Run, Study
from tests.jobs.services.test_manage import a_run, run_folder

pytestmark = pytest.mark.django_db


def test_the_panel_offers_what_the_role_allows(login, owner, member, viewer, team):
    run = a_run(team)
    pages = [f"/runs/{run.pk}/", f"/datasets/{run.dataset_id}/", "/teachers/"]
    pages.append(f"/studies/{Study.objects.create(team=team, name='s').pk}/")
    for user, shown in ((owner, ("Rename", "Archive", "Delete")), (member, ("Rename",)), (viewer, ())):
        client = login(user)
        for page in pages:
            html = client.get(page).content.decode()
            for action in ("rename", "archive", "delete"):
                assert (f'data-action="{action}"' in html) == (action.title() in shown), (user, page, action)


def test_deleting_a_run_from_its_page_frees_its_files(login, owner, team, django_capture_on_commit_callbacks):
    run = a_run(team)
    folder, stored = run_folder(run), Path(default_storage.path(run.artifacts.get().path))
    client = login(owner)
    assert "Deletes the run with its checkpoints" in client.get(f"/runs/{run.pk}/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/manage/run/{run.pk}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/" and "Deleted run shared-run." in response.content.decode()
    assert not folder.exists() and not stored.exists() and not Run.objects.exists()


def test_a_running_run_is_kept_with_a_message(login, owner, team):
    run = a_run(team, status=Run.Status.RUNNING)
    client = login(owner)
    assert "cancel it first, then delete it" in client.get(f"/runs/{run.pk}/").content.decode()
    response = client.post(f"/manage/run/{run.pk}/delete/", follow=True)
    assert "This run is running: cancel it first, then delete it." in response.content.decode()
    assert Run.objects.filter(pk=run.pk).exists()


def test_a_teacher_in_use_is_archived_and_still_read(login, owner, team):
    run = a_run(team)
    client = login(owner)
    response = client.post(f"/manage/teacher/{run.teacher_id}/delete/", {"next": "/teachers/"}, follow=True)
    html = response.content.decode()
    assert "tiny-teacher is used by 1 run: archived instead of deleted." in html
    assert 'data-manage="teacher-' not in html  # gone from the default list
    assert f'data-manage="teacher-{run.teacher_id}"' in client.get("/teachers/?archived=1").content.decode()
    client.post(f"/manage/dataset/{run.dataset_id}/archive/")
    client.post(f"/manage/run/{run.pk}/archive/")
    assert f'href="/datasets/{run.dataset_id}/"' not in client.get("/datasets/").content.decode()
    assert f'href="/datasets/{run.dataset_id}/"' in client.get("/datasets/?archived=1").content.decode()
    for page in (f"/datasets/{run.dataset_id}/", f"/runs/{run.pk}/"):
        assert "data-archived" in client.get(page).content.decode()
    assert f'data-run-id="{run.pk}"' not in client.get("/").content.decode()
    assert f'data-run-id="{run.pk}"' in client.get("/?archived=on").content.decode()


@pytest.mark.parametrize("name", ["", "x" * 101])
def test_a_bad_name_is_refused_with_a_message(login, member, team, name):
    run = a_run(team)
    response = login(member).post(f"/manage/run/{run.pk}/rename/", {"name": name}, follow=True)
    assert response.redirect_chain[-1][0] == f"/runs/{run.pk}/"
    assert "Name: " in response.content.decode()
    run.refresh_from_db()
    assert run.name == "shared-run"


def test_the_team_page_shows_storage_per_kind(login, owner, team):
    run_folder(a_run(team))
    html = login(owner).get(f"/teams/{team.pk}/").content.decode()
    for kind in ("run folders (checkpoints)", "exported models (artifacts)", "uploaded data sets", "teachers"):
        assert kind in html
    assert 'data-bytes="6146"' in html  # the checkpoint (4096 + 2) and export (2048) of the run's folder


def test_the_wizard_offers_no_archived_teacher(login, owner, team):
    run = a_run(team)
    client = login(owner)
    offered = f'name="teacher" value="{run.teacher_id}"'
    assert offered in client.get("/runs/new/teacher/").content.decode()
    response = client.post(f"/manage/teacher/{run.teacher_id}/archive/")
    assert response["Location"] == f"/teachers/{run.teacher_id}/"  # back to the teacher's own page
    assert offered not in client.get("/runs/new/teacher/").content.decode()


def a_cache(team_id: int, built_by: str = "alpha-run", examples: int = 3) -> Manifest:
    """A complete teacher-output cache in the team's cache folder, written by the engine's store."""
    root = services.team_cache_dir(team_id)
    tmp = building_folder(root, "scratch")
    shard = write_shard(tmp, 0, 0, examples, {"logits": torch.zeros(examples, 2)})
    key = f"{team_id:02d}{built_by.encode().hex()}"[:32].ljust(32, "0")
    manifest = Manifest(
        key, "base", ["logits"], "float16", examples, [shard], "2026-01-02T03:04:05+00:00", built_by, 1.0
    )
    manifest.save(tmp)
    publish(tmp, root / key)
    return manifest


def test_the_team_page_lists_its_teacher_caches_and_owners_delete_them(
    login, owner, member, outsider, team, other_team, settings
):
    ours, theirs = a_cache(team.pk), a_cache(other_team.pk, built_by="beta-run")
    html = login(member).get(f"/teams/{team.pk}/").content.decode()
    assert f'data-cache="{ours.key}"' in html and "alpha-run" in html and "2026-01-02 03:04" in html
    assert theirs.key not in html and "beta-run" not in html  # another team's cache: not even listed
    assert str(settings.RUNS_DIR) not in html and "teacher-output caches" in html
    assert "teacher_cache_delete" not in html and f"/caches/{ours.key}/delete/" not in html  # members: no button

    url = f"/teams/{team.pk}/caches/{ours.key}/delete/"
    assert login(member).post(url).status_code == 403
    assert login(outsider).post(url).status_code == 404  # not their team
    client = login(owner)
    assert f"/caches/{ours.key}/delete/" in client.get(f"/teams/{team.pk}/").content.decode()
    assert client.post(f"/teams/{team.pk}/caches/..%2Fteam-{other_team.pk}%2F{theirs.key}/delete/").status_code == 404
    for key in (theirs.key, "..", "0" * 32):  # never a path: only the keys the team lists
        response = client.post(f"/teams/{team.pk}/caches/{key}/delete/", follow=True)
        assert response.status_code == 200 and "has no teacher-output cache" in response.content.decode(), key
    assert services.team_cache_dir(other_team.pk).joinpath(theirs.key, "manifest.json").is_file()

    with locked(services.team_cache_dir(team.pk), ours.key):  # a run rebuilds it: the page does not wait
        response = client.post(url, follow=True)
    assert "building this teacher-output cache again right now" in response.content.decode()
    response = client.post(url, follow=True)
    assert "Deleted the teacher-output cache" in response.content.decode()
    assert not services.team_cache_dir(team.pk).joinpath(ours.key).exists()
    assert f'data-cache="{ours.key}"' not in response.content.decode()
