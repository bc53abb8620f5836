"""The access matrix: every page, download, team and share endpoint, public page and websocket, for each of
owner, member and viewer of team alpha, ``outsider`` (owner of team beta), ``anonymous``, and ``link`` (no
login, but holding a public link of alpha's run: it opened ``/p/<token>/`` first, so it carries whatever
that page gave it). Each cell is the status code as designed:

- 200 what one may see; 302 a write that went through (or was refused with a message: a service's
  ValidationError), and for anonymous and link holders the way to the login page (asserted as such);
- 403 a write one's role forbids (viewers; members on owners' business); 404 another team's objects, and
  public URLs of links that are dead, or files a link does not share;
- websockets: ``ok`` (accepted, and kept open), or the close code: 4403 not logged in, 4404 not visible.

The API (``/api/v1/``) rows are in ``API_ROWS``, in the same shape: rename and archive (PATCH) and delete
(DELETE) answer 200/204, 403 to viewers (and to members for owners' business), 404 across teams, 401 anonymous,
409 for a teacher or data set in use.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from jobs import services
from jobs.models import DatasetSpec, Membership, Study, Teacher
from kdweb.asgi import application
from tests.jobs.conftest import teacher_row
from tests.jobs.live.test_consumers import LOCAL_ORIGIN, TIMEOUT, _cookie, live_layer  # noqa: F401 (an autouse fixture)
from tests.jobs.pages.test_public import finished_run
from tests.jobs.pages.test_runs import ARCH

PERSONAS = ("owner", "member", "viewer", "outsider", "anonymous", "link")


def row(method: str, path: str, *codes, data: dict | None = None):
    """One line of the matrix: ``codes`` in the order of PERSONAS."""
    assert len(codes) == len(PERSONAS)
    return pytest.param(method, path, data or {}, dict(zip(PERSONAS, codes, strict=True)), id=f"{method} {path}")


# fmt: off
PAGES = [
    #                                                            owner member viewer outsider anon link
    row("GET",  "/",                                              200, 200, 200, 200, 302, 302),
    row("GET",  "/runs/{run}/",                                   200, 200, 200, 404, 302, 302),
    row("POST", "/runs/{run}/cancel/",                            302, 302, 403, 404, 302, 302),
    row("POST", "/runs/{run}/resume/",                            302, 302, 403, 404, 302, 302),
    row("GET",  "/runs/{run}/artifacts/{artifact}/",              200, 200, 200, 404, 302, 302),
    row("GET",  "/runs/new/teacher/",                             200, 200, 200, 200, 302, 302),
    row("GET",  "/teachers/",                                     200, 200, 200, 200, 302, 302),
    row("POST", "/teachers/",                                     200, 200, 403, 200, 302, 302),
    row("GET",  "/teachers/{teacher}/",                           200, 200, 200, 404, 302, 302),
    row("GET",  "/datasets/",                                     200, 200, 200, 200, 302, 302),
    row("POST", "/datasets/",                                     200, 200, 403, 200, 302, 302),
    row("GET",  "/datasets/{dataset}/",                           200, 200, 200, 404, 302, 302),
    row("GET",  "/studies/",                                      200, 200, 200, 200, 302, 302),
    row("GET",  "/studies/{study}/",                              200, 200, 200, 404, 302, 302),
    # rename (owners and members), archive and delete (owners); a teacher or data set in use is archived instead
    row("POST", "/manage/run/{run}/rename/",                      302, 302, 403, 404, 302, 302, data={"name": "r2"}),
    row("POST", "/manage/run/{run}/archive/",                     302, 403, 403, 404, 302, 302),
    row("POST", "/manage/run/{run}/delete/",                      302, 403, 403, 404, 302, 302),
    row("POST", "/manage/study/{study}/rename/",                  302, 302, 403, 404, 302, 302, data={"name": "s2"}),
    row("POST", "/manage/study/{study}/delete/",                  302, 403, 403, 404, 302, 302),
    row("POST", "/manage/teacher/{teacher}/rename/",              302, 302, 403, 404, 302, 302, data={"name": "t2"}),
    row("POST", "/manage/teacher/{teacher}/unarchive/",           302, 403, 403, 404, 302, 302),
    row("POST", "/manage/teacher/{teacher}/delete/",              302, 403, 403, 404, 302, 302),
    row("POST", "/manage/teacher/{spare_teacher}/delete/",        302, 403, 403, 404, 302, 302),
    row("POST", "/manage/dataset/{dataset}/rename/",              302, 302, 403, 404, 302, 302, data={"name": "d2"}),
    row("POST", "/manage/dataset/{dataset}/delete/",              302, 403, 403, 404, 302, 302),
    row("GET",  "/teams/",                                        200, 200, 200, 200, 302, 302),
    row("POST", "/teams/",                                        302, 302, 302, 302, 302, 302, data={"name": "gamma"}),
    row("GET",  "/teams/{team}/",                                 200, 200, 200, 404, 302, 302),
    row("POST", "/teams/{team}/invite/",                          302, 403, 403, 404, 302, 302, data={"who": "nora"}),
    row("POST", "/teams/{team}/members/{membership}/role/",       302, 403, 403, 404, 302, 302, data={"role": "owner"}),
    row("POST", "/teams/{team}/members/{membership}/remove/",     302, 403, 403, 404, 302, 302),
    row("POST", "/teams/{team}/caches/{cache}/delete/",           302, 403, 403, 404, 302, 302),
    row("GET",  "/invites/{invite}/",                             200, 200, 200, 200, 200, 200),
    row("GET",  "/account/password/",                             200, 200, 200, 200, 302, 302),
    row("GET",  "/signup/",                                       404, 404, 404, 404, 404, 404),  # KDWEB_SIGNUP off
    row("POST", "/share/run/{run}/",                              302, 302, 403, 404, 302, 302),
    row("POST", "/share/study/{study}/",                          302, 302, 403, 404, 302, 302),
    row("POST", "/share/links/{link}/revoke/",                    302, 302, 403, 404, 302, 302),
    # public pages: the token is the key, whoever holds it
    row("GET",  "/p/{token}/",                                    200, 200, 200, 200, 200, 200),
    row("GET",  "/p/{token}/?partial=status",                     200, 200, 200, 200, 200, 200),
    row("GET",  "/p/{study_token}/",                              200, 200, 200, 200, 200, 200),
    row("GET",  "/p/{token}/artifacts/{artifact}/",               404, 404, 404, 404, 404, 404),  # no downloads
    row("GET",  "/p/{download_token}/artifacts/{artifact}/",      200, 200, 200, 200, 200, 200),
    row("GET",  "/p/{download_token}/artifacts/{hidden_artifact}/", 404, 404, 404, 404, 404, 404),
    row("GET",  "/p/{revoked_token}/",                            404, 404, 404, 404, 404, 404),
    row("GET",  "/p/{revoked_token}/artifacts/{artifact}/",       404, 404, 404, 404, 404, 404),
]

# The REST API (/api/v1/): an API answers 401 to anonymous callers where pages redirect to the login page.
API_ROWS = [
    #                                                            owner member viewer outsider anon link
    row("PATCH",  "/api/v1/runs/{run}/",                          200, 200, 403, 404, 401, 401, data={"name": "r2"}),
    row("PATCH",  "/api/v1/runs/{run}/",                          200, 403, 403, 404, 401, 401, data={"archived": 1}),
    row("DELETE", "/api/v1/runs/{run}/",                          204, 403, 403, 404, 401, 401),
    row("PATCH",  "/api/v1/studies/{study}/",                     200, 200, 403, 404, 401, 401, data={"name": "s2"}),
    row("DELETE", "/api/v1/studies/{study}/",                     204, 403, 403, 404, 401, 401),
    row("PATCH",  "/api/v1/teachers/{teacher}/",                  200, 200, 403, 404, 401, 401, data={"name": "t2"}),
    row("DELETE", "/api/v1/teachers/{teacher}/",                  409, 403, 403, 404, 401, 401),  # in use
    row("DELETE", "/api/v1/teachers/{spare_teacher}/",            204, 403, 403, 404, 401, 401),
    row("PATCH",  "/api/v1/datasets/{dataset}/",                  200, 200, 403, 404, 401, 401, data={"name": "d2"}),
    row("DELETE", "/api/v1/datasets/{dataset}/",                  409, 403, 403, 404, 401, 401),  # in use
    row("GET",    "/api/v1/teachers/{teacher}/",                  200, 200, 200, 404, 401, 401),  # archived, still read
]

SOCKETS = [
    #                                          owner member viewer outsider anon  link
    row("WS", "/ws/runs/{run}/",               "ok", "ok", "ok", 4404, 4403, 4403),
    row("WS", "/ws/runs/",                     "ok", "ok", "ok", "ok", 4403, 4403),
    row("WS", "/ws/public/{token}/",           "ok", "ok", "ok", "ok", "ok", "ok"),
    row("WS", "/ws/public/{revoked_token}/",   4404, 4404, 4404, 4404, 4404, 4404),
    row("WS", "/ws/public/{study_token}/",     4404, 4404, 4404, 4404, 4404, 4404),  # a study has no live view
]
# fmt: on


@pytest.fixture
def world(owner, member, viewer, outsider, team) -> dict[str, object]:
    """Alpha's objects, and the values of the matrix's placeholders."""
    run = finished_run(team)
    hidden = finished_run(team, "hidden-run")
    study = Study.objects.create(team=team, name="study", created_by=owner)
    revoked = services.share_link_create(user=owner, target=run)
    services.share_link_revoke(user=owner, link=revoked)
    invite = services.member_invite(user=owner, team=team, who="nora@example.org")
    services.object_archive(user=owner, obj=run.teacher)
    spare = teacher_row(team, "spare", ARCH)  # used by no run: deleted
    return {
        "run": run.pk,
        "artifact": run.artifacts.get().pk,
        "hidden_artifact": hidden.artifacts.get().pk,
        "dataset": run.dataset_id,
        "teacher": run.teacher_id,
        "spare_teacher": spare.pk,
        "study": study.pk,
        "team": team.pk,
        "cache": "0" * 32,  # the team has no such teacher-output cache: the owner is told so
        "membership": Membership.objects.get(user=viewer).pk,
        "invite": invite.token,
        "link": services.share_link_create(user=owner, target=run).pk,
        "token": services.share_link_create(user=owner, target=run).token,
        "download_token": services.share_link_create(user=owner, target=run, allow_downloads=True).token,
        "study_token": services.share_link_create(user=owner, target=study).token,
        "revoked_token": revoked.token,
    }


def user_of(request, persona: str):
    return AnonymousUser() if persona in ("anonymous", "link") else request.getfixturevalue(persona)


def client_of(request, persona: str, world: dict) -> Client:
    client = Client()
    user = user_of(request, persona)
    if user.is_authenticated:
        client.force_login(user)
    if persona == "link":
        assert client.get(f"/p/{world['token']}/").status_code == 200
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("method", "path", "data", "expected"), PAGES + API_ROWS)
def test_pages(request, world, persona, method, path, data, expected):
    client = client_of(request, persona, world)
    url = path.format(**world)
    if method in ("PATCH", "DELETE"):
        response = getattr(client, method.lower())(url, json.dumps(data), content_type="application/json")
    else:
        response = client.post(url, data) if method == "POST" else client.get(url)
    assert response.status_code == expected[persona], (persona, url)
    if response.status_code == 302 and persona in ("anonymous", "link"):
        assert response["Location"].startswith("/login/?next="), response["Location"]


async def _outcome(communicator: WebsocketCommunicator) -> str | int:
    """``"ok"`` for a socket accepted and kept open, else its close code."""
    connected, code = await communicator.connect(timeout=TIMEOUT)
    if not connected:
        return code
    try:
        if await communicator.receive_nothing(timeout=0.3):
            return "ok"  # the runs list's socket sends nothing until a status changes
        message = await communicator.receive_output(timeout=TIMEOUT)
        return message["code"] if message["type"] == "websocket.close" else "ok"
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("method", "path", "data", "expected"), SOCKETS)
def test_websockets(request, world, persona, method, path, data, expected):
    user = user_of(request, persona)
    headers = [LOCAL_ORIGIN, (b"host", b"localhost")] + ([_cookie(user)] if user.is_authenticated else [])
    communicator = WebsocketCommunicator(application, path.format(**world), headers=headers)
    assert async_to_sync(_outcome)(communicator) == expected[persona]


# --- local paths: only under the operator's import roots (KDWEB_IMPORT_ROOTS) -------------------------------


@pytest.fixture
def import_root(settings, tmp_path, assets) -> dict[str, str]:
    """An import root holding a copy of the tiny teacher and the reviews, beside files outside it: a secret
    readable by the server, a symlink in the root to it, one to a model folder outside, and ``..`` paths."""
    import shutil

    root = tmp_path / "imports"
    shutil.copytree(assets["teacher"], root / "teacher")
    shutil.copy(assets["reviews"], root / "reviews.csv")
    secret = tmp_path / "secret.csv"
    secret.write_text("review,sentiment\nthe server's secret,neg\n" * 20)
    (root / "link.csv").symlink_to(secret)
    (root / "link-teacher").symlink_to(assets["teacher"], target_is_directory=True)
    settings.KDWEB_IMPORT_ROOTS = [root]
    return {
        "root": str(root),
        "secret": str(secret),
        "teacher_outside": str(assets["teacher"]),
        "symlink": str(root / "link.csv"),
        "symlink_teacher": str(root / "link-teacher"),
        "dotdot": f"{root}/../secret.csv",
        "dotdot_teacher": f"{root}/teacher/../../../{assets['teacher'].parent.name}/teacher",
    }


def _member_api(member):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(member)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("source", ["/etc/passwd", "/etc/hostname.csv", "{secret}", "{symlink}", "{dotdot}"])
def test_a_member_cannot_add_a_data_set_from_a_path_outside_the_import_roots(member, team, import_root, source):
    body = {"name": "stolen", "source": source.format(**import_root), "text_column": "review"}
    body["label_column"] = "sentiment"
    response = _member_api(member).post("/api/v1/datasets/", body, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["source"]
    assert "must be under" in response.json()["source"][0] and "secret" not in response.content.decode()
    assert not DatasetSpec.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("source", ["/etc", "{teacher_outside}", "{symlink_teacher}", "{dotdot_teacher}"])
def test_a_member_cannot_register_a_teacher_folder_outside_the_import_roots(member, team, import_root, source):
    body = {"name": "stolen", "source": source.format(**import_root)}
    response = _member_api(member).post("/api/v1/teachers/", body, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["source"] and "must be under" in response.json()["source"][0]
    assert not Teacher.objects.exists()


@pytest.mark.django_db
def test_paths_under_an_import_root_are_registered(member, team, import_root):
    client = _member_api(member)
    body = {"name": "reviews", "source": f"{import_root['root']}/reviews.csv", "text_column": "review"}
    assert client.post("/api/v1/datasets/", body | {"label_column": "sentiment"}, format="json").status_code == 201
    teacher = {"name": "tiny", "source": f"{import_root['root']}/teacher"}
    assert client.post("/api/v1/teachers/", teacher, format="json").status_code == 201


@pytest.mark.django_db
def test_without_import_roots_only_uploads_and_packages_are_taken(member, team, settings, assets):
    settings.KDWEB_IMPORT_ROOTS = []  # the production default
    client = _member_api(member)
    body = {"name": "reviews", "source": str(assets["reviews"]), "text_column": "review", "label_column": "sentiment"}
    response = client.post("/api/v1/datasets/", body, format="json")
    assert response.status_code == 400 and response.json() == {"source": [services.NO_IMPORT_ROOTS]}
    page = Client()
    page.force_login(member)
    form = {"team": team.pk, "name": "tiny", "source": str(assets["teacher"])}
    assert services.NO_IMPORT_ROOTS in page.post("/teachers/", form).content.decode()
    assert not DatasetSpec.objects.exists() and not Teacher.objects.exists()
