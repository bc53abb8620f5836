"""Public read-only links (``jobs.pages.public``, ``permissions.shared_object``, ``PublicRunConsumer``).

A link is an unguessable token; revoked or expired it answers 404 like an unknown one (pages, files and the
socket); its page shows the run's results and live chart and nothing else: no team, no other run, no paths
of the config, no log, no files unless the sharer allowed downloads (and then only the shared runs' files).
Rows are built with the ORM and the services; the socket runs through the whole ASGI stack (``kdweb.asgi``)
on the test Redis, as in ``test_consumers.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import string
import zipfile
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs import services
from jobs.live import events
from jobs.models import Artifact, DatasetSpec, Evaluation, LogLine, MetricPoint, Run, ShareLink, Study, Team
from jobs.pages.public import public_config
from kdweb.asgi import application
from tests.jobs.conftest import KD_SECTIONS, teacher_row
from tests.jobs.live.test_consumers import LOCAL_ORIGIN, TIMEOUT, live_layer  # noqa: F401 (an autouse fixture)
from tests.jobs.pages.test_runs import ARCH
from tests.jobs.pages.test_studies import store_measurement

# what the shared run's config holds that a public page must not show
SECRETS = ("/srv/private/teacher-model", "/srv/private/reviews.csv", "/var/kdweb/runs/run-secret", "~/notes")
ZIP = b"PK\x03\x04 the exported student"


def make_run(team: Team, name: str, **fields) -> Run:
    """A run of ``team`` with a config that names server paths (as real configs do)."""
    teacher = team.teachers.first() or teacher_row(team, "tiny-teacher", ARCH)
    dataset = team.datasets.first() or DatasetSpec.objects.create(
        team=team, name="reviews", source=SECRETS[1], labels=["neg", "pos"]
    )
    config = {
        "kind": "kd_feature",
        "name": name,
        "output_dir": SECRETS[2],
        "teacher": {"source": SECRETS[0]},
        "data": {"source": SECRETS[1], "text_column": "review", "max_length": 24},
        "student": {"layers": 2},
        "optim": {"lr": 5e-5, "max_steps": 3},
        "notes": SECRETS[3],
    }
    values = {"kind": Run.Kind.KD_FEATURE, "config": config, "queue": "gpu-secret-queue", "host": "node-secret"}
    return Run.objects.create(team=team, name=name, teacher=teacher, dataset=dataset, **{**values, **fields})


def finished_run(team: Team, name: str = "shared-run", **fields) -> Run:
    """A succeeded run with curves, measurements, a log that names its user and an exported student."""
    run = make_run(team, name, status=Run.Status.SUCCEEDED, progress=1.0, step=3, total_steps=3, **fields)
    MetricPoint.objects.bulk_create(
        MetricPoint(run=run, name=n, step=s, value=1.0 / s) for n in ("loss/total", "loss/task") for s in (1, 2, 3)
    )
    for role, accuracy, params in (("student", 0.8, 1000), ("teacher", 0.85, 4000)):
        Evaluation.objects.create(
            run=run,
            role=role,
            split="test",
            metrics={"accuracy": accuracy},
            params=params,
            bytes=params * 4,
            latency={"bs1": {"median_ms": params / 1000}, "bs32": {"median_ms": params / 100}},
        )
    LogLine.objects.create(run=run, text="cancel requested by olivia")
    artifact(run)
    return run


def artifact(run: Run) -> Artifact:
    stored = default_storage.save(f"runs/{run.pk}/{run.name}-export.zip", ContentFile(ZIP))
    return Artifact.objects.create(run=run, kind=Artifact.Kind.STUDENT, path=stored, bytes=len(ZIP), sha256="0" * 64)


@pytest.fixture
def shared_run(team) -> Run:
    return finished_run(team)


@pytest.fixture
def hidden_run(team, shared_run) -> Run:
    """Another run of the same team, which no link shares."""
    return finished_run(team, "hidden-run")


def link_to(target: Run | Study, user, **options) -> ShareLink:
    return services.share_link_create(user=user, target=target, **options)


def hrefs(html: str) -> list[str]:
    return re.findall(r'(?:href|src|action|hx-get|hx-post)="([^"]*)"', html)


# --- the link ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_tokens_are_long_random_and_url_safe(owner, shared_run):
    tokens = {link_to(shared_run, owner).token for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert len(token) >= 43  # 256 bits in URL-safe base64
        assert set(token) <= set(string.ascii_letters + string.digits + "-_")


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["viewer", "outsider"])
def test_viewers_and_other_teams_cannot_share(request, shared_run, name):
    with pytest.raises(PermissionDenied):
        link_to(shared_run, request.getfixturevalue(name))


@pytest.mark.django_db
def test_an_expiry_must_be_in_the_future(member, shared_run):
    with pytest.raises(ValidationError):
        link_to(shared_run, member, expires_at=timezone.now() - timedelta(seconds=1))
    assert link_to(shared_run, member, expires_at=timezone.now() + timedelta(days=1)).is_active


@pytest.mark.parametrize("path_like", [True, False])
def test_the_public_config_has_no_sources_output_folder_or_paths(path_like):
    config = {"output_dir": "runs/x", "teacher": {"source": "package:a"}, "data": {"source": "packaged:b", "x": 1}}
    config["extra"] = "a/b" if path_like else "ab"
    expected = {"teacher": {}, "data": {"x": 1}} | ({} if path_like else {"extra": "ab"})
    assert public_config(config) == expected


# --- the page ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_public_page_shows_the_results_and_nothing_else(client, owner, team, shared_run, hidden_run):
    link = link_to(shared_run, owner)
    response = client.get(f"/p/{link.token}/")
    assert response.status_code == 200
    html = response.content.decode()
    # the results: status, final metrics, student vs teacher, curves, the (public) config
    assert "shared-run" in html and "Succeeded" in html
    assert '<table class="data metrics sticky-first">' in html and '<table class="data compare sticky-first">' in html
    assert 'id="run-series"' in html and '"loss/total": [[1, 1.0], [2, 0.5]' in html and 'id="charts"' in html
    assert re.search(r'data-key="data.max_length">.*?<td class="value">24</td>', html)
    assert "teacher tiny-teacher · data reviews" in html  # what was distilled, by name (not by source)
    # nothing else: no team, no other run, no paths, no queue or host, no log, no files, no links out
    for hidden in ("alpha", "hidden-run", "olivia", "cancel requested", *SECRETS, "gpu-secret-queue", "node-secret"):
        assert hidden not in html, hidden
    assert "Artifacts" not in html and "/artifacts/" not in html
    assert "share-links" not in html and "Log out" not in html
    assert all(url.startswith(("/static/", "data:")) for url in hrefs(html)), hrefs(html)


@pytest.mark.django_db
def test_a_member_who_opens_the_link_sees_the_public_page_too(login, viewer, owner, shared_run):
    link = link_to(shared_run, owner)
    html = login(viewer).get(f"/p/{link.token}/").content.decode()
    assert "shared-run" in html and "alpha" not in html and "/runs/" not in html


@pytest.mark.django_db
def test_a_live_run_page_uses_the_public_socket_and_polls_the_public_status(client, owner, team):
    run = make_run(team, "still-going", status=Run.Status.RUNNING, step=1, total_steps=3, error="Traceback /srv/x")
    link = link_to(run, owner)
    html = client.get(f"/p/{link.token}/").content.decode()
    assert f'data-socket="/ws/public/{link.token}/"' in html and "kdweb/live.js" in html
    assert f'hx-get="/p/{link.token}/?partial=status"' in html
    status = client.get(f"/p/{link.token}/?partial=status")
    assert status.status_code == 200 and "HX-Refresh" not in status
    text = status.content.decode()
    assert 'id="run-status"' in text and "gpu-secret-queue" not in text and "node-secret" not in text
    assert "Traceback" not in text and "/cancel/" not in text


@pytest.mark.django_db
def test_revoked_expired_and_unknown_links_are_404(client, owner, member, shared_run):
    revoked, expired = link_to(shared_run, owner, allow_downloads=True), link_to(shared_run, owner)
    file = shared_run.artifacts.get()
    assert client.get(f"/p/{revoked.token}/").status_code == 200
    assert client.get(f"/p/{revoked.token}/artifacts/{file.pk}/").status_code == 200
    services.share_link_revoke(user=member, link=revoked)
    ShareLink.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    for token in (revoked.token, expired.token, "x" * 43):
        assert client.get(f"/p/{token}/").status_code == 404
        assert client.get(f"/p/{token}/?partial=status").status_code == 404
        assert client.get(f"/p/{token}/artifacts/{file.pk}/").status_code == 404


@pytest.mark.django_db
def test_files_only_when_the_sharer_allowed_them_and_only_the_shared_runs(client, owner, shared_run, hidden_run):
    closed, open_ = link_to(shared_run, owner), link_to(shared_run, owner, allow_downloads=True)
    mine, other = shared_run.artifacts.get(), hidden_run.artifacts.get()
    assert client.get(f"/p/{closed.token}/artifacts/{mine.pk}/").status_code == 404
    html = client.get(f"/p/{open_.token}/").content.decode()
    assert f'href="/p/{open_.token}/artifacts/{mine.pk}/"' in html
    response = client.get(f"/p/{open_.token}/artifacts/{mine.pk}/")
    assert response.status_code == 200 and b"".join(response.streaming_content) == ZIP
    assert response["Content-Disposition"] == 'attachment; filename="shared-run-export.zip"'
    assert client.get(f"/p/{open_.token}/artifacts/{other.pk}/").status_code == 404


@pytest.mark.django_db
def test_a_study_link_lists_the_studys_runs_only(client, owner, team, shared_run, hidden_run):
    study = Study.objects.create(team=team, name="depth study", description="2 vs 3 blocks")
    in_study = finished_run(team, "in-study", study=study)
    link = link_to(study, owner, allow_downloads=True)
    html = client.get(f"/p/{link.token}/").content.decode()
    assert "depth study" in html and "in-study" in html and "0.8000" in html
    for hidden in ("shared-run", "hidden-run", "alpha", "olivia", *SECRETS):
        assert hidden not in html, hidden
    mine = in_study.artifacts.get()
    assert f'href="/p/{link.token}/artifacts/{mine.pk}/"' in html
    assert client.get(f"/p/{link.token}/artifacts/{mine.pk}/").status_code == 200
    assert client.get(f"/p/{link.token}/artifacts/{shared_run.artifacts.get().pk}/").status_code == 404
    # × faster only from the study's side-by-side measurement (teacher 6 ms, student 2 ms), not the in-run 4 ms / 1 ms
    assert "3.0×" not in html
    store_measurement(study, [in_study])
    assert "3.0×" in client.get(f"/p/{link.token}/").content.decode()


# --- the share panel ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_panel_creates_lists_and_revokes_links(login, member, shared_run):
    client = login(member)
    page = client.get(f"/runs/{shared_run.pk}/").content.decode()
    assert 'id="share-links"' in page and "No active public links." in page
    response = client.post(f"/share/run/{shared_run.pk}/", {"expires": "7d", "allow_downloads": "on"})
    assert response["Location"] == f"/runs/{shared_run.pk}/"
    link = ShareLink.objects.get()
    assert link.allow_downloads and link.created_by == member
    assert timedelta(days=6, hours=23) < link.expires_at - timezone.now() <= timedelta(days=7)
    # htmx gets the panel back, with the copy-able URL
    panel = client.post(f"/share/run/{shared_run.pk}/", {"expires": ""}, headers={"HX-Request": "true"})
    text = panel.content.decode()
    assert text.lstrip().startswith('<section id="share-links"')
    assert f'value="http://testserver/p/{link.token}/"' in text and "downloads allowed" in text
    assert "no expiry" in text and "no downloads" in text
    panel = client.post(f"/share/links/{link.pk}/revoke/", headers={"HX-Request": "true"})
    assert link.token not in panel.content.decode()
    link.refresh_from_db()
    assert link.revoked_at is not None


@pytest.mark.django_db
def test_viewers_see_no_share_panel(login, owner, viewer, shared_run):
    link = link_to(shared_run, owner)
    page = login(viewer).get(f"/runs/{shared_run.pk}/").content.decode()
    assert "share-links" not in page and link.token not in page


# --- the public socket ------------------------------------------------------------------------------------------


def _public_socket(token: str) -> WebsocketCommunicator:
    headers = [LOCAL_ORIGIN, (b"host", b"localhost")]  # no session: the token is the only key
    return WebsocketCommunicator(application, f"/ws/public/{token}/", headers=headers)


async def _close_code(communicator: WebsocketCommunicator) -> int | None:
    connected, code = await communicator.connect(timeout=TIMEOUT)
    if connected:
        message = await communicator.receive_output(timeout=TIMEOUT)
        assert message["type"] == "websocket.close", message
        code = message.get("code")
    await communicator.wait()
    return code


@pytest.mark.django_db(transaction=True)
def test_the_public_socket_streams_the_run_without_its_log(owner, team):
    run = make_run(team, "live", status=Run.Status.RUNNING, step=2, total_steps=10)
    MetricPoint.objects.create(run=run, name="loss/total", step=1, value=0.5)
    LogLine.objects.create(run=run, text="attempt 1 started on node-secret")
    link = link_to(run, owner)
    metrics = {"type": "metrics", "points": [{"name": "loss/total", "step": 2, "value": 0.25}]}
    log = {"type": "log", "lines": ["resume requested by olivia"], "ids": [2**31]}

    @async_to_sync
    async def scenario():
        communicator = _public_socket(link.token)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        first = [await communicator.receive_json_from(timeout=TIMEOUT) for _ in range(2)]
        for payload in (log, metrics):
            assert await sync_to_async(events.run_event_send)(run.pk, payload)
        live = await communicator.receive_json_from(timeout=TIMEOUT)
        nothing_more = await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()
        return first, live, nothing_more

    (backfill, status), live, nothing_more = scenario()
    assert backfill == {
        "type": "backfill",
        "series": {"loss/total": [[1, 0.5]]},
        "last_step": 1,
        "log": [],
        "log_last_id": 0,
    }
    assert (status["type"], status["run_id"], status["step"]) == ("status", run.pk, 2)
    assert live == metrics and nothing_more  # the log line was not forwarded


@pytest.mark.django_db(transaction=True)
def test_the_public_socket_refuses_dead_links_and_study_links(owner, team, shared_run):
    revoked, expired = link_to(shared_run, owner), link_to(shared_run, owner)
    services.share_link_revoke(user=owner, link=revoked)
    ShareLink.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    study_link = link_to(Study.objects.create(team=team, name="s"), owner)
    tokens = (revoked.token, expired.token, "x" * 43, study_link.token)
    codes = [async_to_sync(_close_code)(_public_socket(token)) for token in tokens]
    assert codes == [4404] * 4


@pytest.mark.django_db(transaction=True)
def test_revoking_a_link_closes_the_public_sockets_open_on_it(owner, team):
    run = make_run(team, "live", status=Run.Status.RUNNING, step=2, total_steps=10)
    revoked, kept = link_to(run, owner), link_to(run, owner)

    @async_to_sync
    async def scenario():
        sockets = [_public_socket(link.token) for link in (revoked, kept)]
        for communicator in sockets:
            assert (await communicator.connect(timeout=TIMEOUT))[0]
            for _ in range(2):  # backfill, status
                await communicator.receive_json_from(timeout=TIMEOUT)
        await sync_to_async(services.share_link_revoke)(user=owner, link=revoked)
        closed = await sockets[0].receive_output(timeout=TIMEOUT)
        still_open = await sockets[1].receive_nothing(timeout=0.3)
        await sockets[1].disconnect()
        return closed, still_open

    closed, still_open = scenario()
    assert (closed["type"], closed.get("code")) == ("websocket.close", 4404)
    assert still_open  # the other link's viewers keep watching


@pytest.mark.django_db(transaction=True)
def test_a_public_socket_closes_once_its_link_has_expired(owner, team):
    run = make_run(team, "live", status=Run.Status.RUNNING, step=2, total_steps=10)
    link = link_to(run, owner)
    ShareLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() + timedelta(seconds=1))
    metrics = {"type": "metrics", "points": [{"name": "loss/total", "step": 3, "value": 0.2}]}

    @async_to_sync
    async def scenario():
        communicator = _public_socket(link.token)
        assert (await communicator.connect(timeout=TIMEOUT))[0]
        for _ in range(2):
            await communicator.receive_json_from(timeout=TIMEOUT)
        await asyncio.sleep(1.1)  # the link expires while the page is open
        assert await sync_to_async(events.run_event_send)(run.pk, metrics)
        return await communicator.receive_output(timeout=TIMEOUT)

    closed = scenario()
    assert (closed["type"], closed.get("code")) == ("websocket.close", 4404)


# --- the shared zip -----------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_shared_zip_names_no_server_path(
    celery_worker_process, client, owner, tiny_teacher, tiny_dataset, tmp_path_factory
):
    """README.md and distill.json name the registered teacher and data set, not their folders or the run's."""
    worker = celery_worker_process
    run = worker.wait_for(worker.launch(owner, tiny_teacher, tiny_dataset, {**KD_SECTIONS, "latency_repeats": 1}))
    assert run.status == Run.Status.SUCCEEDED, run.error
    link = link_to(run, owner, allow_downloads=True)
    response = client.get(f"/p/{link.token}/artifacts/{run.artifacts.get().pk}/")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    # the tests' files and the worker's data folder all lie in pytest's temporary folders
    server_paths = [str(tmp_path_factory.getbasetemp().parent), str(worker.data_dir), tiny_teacher.source]
    for name in archive.namelist():
        text = archive.read(name).decode("utf-8", errors="replace")
        assert not any(path in text for path in server_paths), name
        assert not re.search(r"(?<![\w.])/(tmp|srv|home|root|var|data|usr)/", text), name
    card = archive.read("README.md").decode()
    assert "kdweb teacher 'tiny-bert'" in card and "kdweb data set 'reviews'" in card
    record = json.loads(archive.read("distill.json"))
    assert record["config"]["teacher"]["source"] == "kdweb teacher 'tiny-bert'"
    assert record["config"]["output_dir"] == "runs/run"
