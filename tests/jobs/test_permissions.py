"""The access matrix of ``jobs.permissions``: every helper, every persona, every kind of team object."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from jobs import selectors, services
from jobs.models import DatasetSpec, Membership, Run, Teacher
from jobs.permissions import READ_ONLY, get_for_user, get_writable, require_write, teams_for_user

pytestmark = pytest.mark.django_db

PERSONAS = ("owner", "member", "viewer", "outsider", "anonymous")
MODELS = (Run, Teacher, DatasetSpec)


def persona(request, name: str):
    return AnonymousUser() if name == "anonymous" else request.getfixturevalue(name)


@pytest.fixture
def objects(queued_run, tiny_teacher, tiny_dataset) -> dict[type, object]:
    """One object of each kind in team alpha."""
    return {Run: queued_run, Teacher: tiny_teacher, DatasetSpec: tiny_dataset}


# persona -> (obj, can_write), or the exception raised
GET_FOR_USER = {
    "owner": True,
    "member": True,
    "viewer": False,
    "outsider": Http404,  # other teams' objects do not exist for them
    "anonymous": PermissionDenied,
}
GET_WRITABLE = {
    "owner": None,
    "member": None,
    "viewer": PermissionDenied,
    "outsider": Http404,
    "anonymous": PermissionDenied,
}
REQUIRE_WRITE = {
    "owner": None,
    "member": None,
    "viewer": PermissionDenied,
    "outsider": PermissionDenied,
    "anonymous": PermissionDenied,
}
TEAMS = {  # persona -> (teams, teams it may write to)
    "owner": (["alpha"], ["alpha"]),
    "member": (["alpha"], ["alpha"]),
    "viewer": (["alpha"], []),
    "outsider": (["beta"], ["beta"]),
    "anonymous": ([], []),
}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", PERSONAS)
def test_get_for_user(request, objects, model, name):
    user, obj, expected = persona(request, name), objects[model], GET_FOR_USER[name]
    if isinstance(expected, bool):
        assert get_for_user(model, user, obj.pk) == (obj, expected)
        assert get_for_user(model.objects.all(), user, obj.pk) == (obj, expected)
    else:
        with pytest.raises(expected):
            get_for_user(model, user, obj.pk)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", PERSONAS)
def test_get_writable(request, objects, model, name):
    user, obj, expected = persona(request, name), objects[model], GET_WRITABLE[name]
    if expected is None:
        assert get_writable(model, user, obj.pk) == obj
    else:
        with pytest.raises(expected) as info:
            get_writable(model, user, obj.pk)
        if name == "viewer":
            assert str(info.value) == READ_ONLY


@pytest.mark.parametrize("name", PERSONAS)
def test_require_write(request, team, name):
    user, expected = persona(request, name), REQUIRE_WRITE[name]
    if expected is None:
        assert require_write(user, team) is None
    else:
        with pytest.raises(expected):
            require_write(user, team)


@pytest.mark.parametrize("name", PERSONAS)
def test_teams_for_user(request, team, other_team, name):
    user = persona(request, name)
    readable, writable = TEAMS[name]
    assert sorted(teams_for_user(user).values_list("name", flat=True)) == readable
    assert sorted(teams_for_user(user, write=True).values_list("name", flat=True)) == writable


def test_the_outsider_writes_in_its_own_team_only(owner, outsider, other_team, team, assets):
    theirs = services.teacher_register(user=outsider, team=other_team, name="t", source=str(assets["teacher"]))
    assert get_for_user(Teacher, outsider, theirs.pk) == (theirs, True)
    with pytest.raises(Http404):
        get_for_user(Teacher, owner, theirs.pk)
    with pytest.raises(PermissionDenied):
        require_write(outsider, team)


def test_the_role_is_the_one_in_the_objects_team(viewer, other_team, objects, assets):
    Membership.objects.create(team=other_team, user=viewer, role=Membership.Role.OWNER)
    theirs = services.teacher_register(user=viewer, team=other_team, name="t", source=str(assets["teacher"]))
    assert get_for_user(Teacher, viewer, theirs.pk) == (theirs, True)
    assert get_for_user(Teacher, viewer, objects[Teacher].pk) == (objects[Teacher], False)
    assert sorted(teams_for_user(viewer, write=True).values_list("name", flat=True)) == ["beta"]


def test_missing_objects_and_narrowed_querysets_are_404(owner, objects):
    run = objects[Run]
    with pytest.raises(Http404):
        get_for_user(Run, owner, run.pk + 1000)
    with pytest.raises(Http404):
        get_for_user(Run.objects.filter(status=Run.Status.RUNNING), owner, run.pk)


@pytest.mark.parametrize("name", PERSONAS)
def test_selectors_list_the_teams_objects_only(request, objects, name):
    user = persona(request, name)
    visible = name in ("owner", "member", "viewer")
    assert list(selectors.run_list(user)) == ([objects[Run]] if visible else [])
    assert list(selectors.teacher_list(user)) == ([objects[Teacher]] if visible else [])
    assert list(selectors.dataset_list(user)) == ([objects[DatasetSpec]] if visible else [])


# persona -> (HTTP status of POST cancel, the run's status after it)
CANCEL_PAGE = {
    "owner": (302, Run.Status.CANCELLED),
    "member": (302, Run.Status.CANCELLED),
    "viewer": (403, Run.Status.QUEUED),
    "outsider": (404, Run.Status.QUEUED),
    "anonymous": (302, Run.Status.QUEUED),  # to the login page
}


@pytest.mark.parametrize("name", PERSONAS)
def test_cancel_and_resume_pages(request, client, queued_run, name):
    if name != "anonymous":
        client.force_login(persona(request, name))
    expected_code, expected_status = CANCEL_PAGE[name]

    response = client.post(f"/runs/{queued_run.pk}/cancel/")

    assert response.status_code == expected_code
    queued_run.refresh_from_db()
    assert queued_run.status == expected_status
    if name == "anonymous":
        assert response["Location"].startswith("/login/")
    if expected_status == Run.Status.CANCELLED:
        assert response["Location"] == f"/runs/{queued_run.pk}/"
        response = client.post(f"/runs/{queued_run.pk}/resume/", follow=True)
        queued_run.refresh_from_db()
        assert queued_run.status == Run.Status.QUEUED
        assert b"Resumed: the run continues from its last checkpoint" in response.content


def test_cancel_refuses_a_get_and_explains_an_impossible_action(client, owner, queued_run):
    client.force_login(owner)
    assert client.get(f"/runs/{queued_run.pk}/cancel/").status_code == 405
    response = client.post(f"/runs/{queued_run.pk}/resume/", follow=True)  # a queued run
    assert b"Only a failed, cancelled or interrupted run can be resumed; this one is queued." in response.content
