"""The pages: login, runs list and detail, artifact downloads, teachers and data sets.

Rows are built with the ORM (no worker, no training); the data-set form goes through the real service
and the real engine (the packaged Rotten Tomatoes set loads in a second). The personas are the shared ones
of ``conftest.py``; the local fixtures, prefixed ``pages_``, are runs with curves and measurements.
"""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from jobs.models import Artifact, DatasetSpec, Evaluation, MetricPoint, Run, Teacher, Team
from tests.jobs.conftest import teacher_row

ARCH = {
    "model_type": "bert",
    "layers": 4,
    "hidden_size": 32,
    "heads": 4,
    "kv_heads": 4,
    "intermediate_size": 64,
    "vocab_size": 100,
    "params": 1000,
    "labels": ["neg", "pos"],
    "max_positions": 64,
}
SERIES = {
    "loss/task": [[1, 0.7], [2, 0.6], [3, 0.5]],
    "loss/feature": [[1, 2.0], [2, 1.5], [3, 1.2]],
    "loss/total": [[1, 3.1], [2, 2.5], [3, 2.0]],
    "val/accuracy": [[3, 0.81]],
}
REVIEWS_CSV = b"review,sentiment\n" + b"".join(b"film %d,%s\n" % (i, b"pos" if i % 2 else b"neg") for i in range(40))


# --- local fixtures -----------------------------------------------------------------------------------


def _dataset(team: Team, name: str) -> DatasetSpec:
    return DatasetSpec.objects.create(
        team=team,
        name=name,
        source="packaged:rotten_tomatoes",
        labels=["neg", "pos"],
        sizes={"train": 80, "validation": 10, "test": 10},
        preview=[{"text": "a lovely moving film", "label": "pos"}, {"text": "dull and silly", "label": "neg"}],
    )


def _run(team: Team, name: str, **fields) -> Run:
    teacher = Teacher.objects.filter(team=team).first() or teacher_row(team, f"{team.name}-teacher", ARCH)
    dataset = DatasetSpec.objects.filter(team=team).first() or _dataset(team, f"{team.name}-data")
    values = {
        "kind": Run.Kind.KD_FEATURE,
        "config": {"kind": "kd_feature", "name": name, "student": {"layers": 2}, "optim": {"lr": 5e-5}},
        "queue": "default",
    }
    return Run.objects.create(team=team, name=name, teacher=teacher, dataset=dataset, **{**values, **fields})


def _evaluation(run: Run, role: str, accuracy: float, params: int, bs1_ms: float) -> Evaluation:
    return Evaluation.objects.create(
        run=run,
        role=role,
        split="validation",
        metrics={"accuracy": accuracy, "f1": accuracy - 0.01, "mcc": accuracy - 0.3},
        params=params,
        bytes=params * 4,
        latency={
            "bs1": {"median_ms": bs1_ms, "batch_size": 1},
            "bs32": {"median_ms": bs1_ms * 10, "batch_size": 32},
        },
    )


@pytest.fixture
def pages_run(team) -> Run:
    """A finished feature-KD run with curves, teacher and student measurements."""
    run = _run(team, "kd-tiny", status=Run.Status.SUCCEEDED, progress=1.0, step=3, total_steps=3, host="cpu-1")
    MetricPoint.objects.bulk_create(
        MetricPoint(run=run, name=name, step=step, value=value)
        for name, points in SERIES.items()
        for step, value in points
    )
    _evaluation(run, "teacher", accuracy=0.80, params=4_000_000, bs1_ms=8.0)
    _evaluation(run, "student", accuracy=0.76, params=1_000_000, bs1_ms=2.0)
    return run


@pytest.fixture
def pages_other_run(other_team) -> Run:
    return _run(other_team, "secret-run")


def _artifact(run: Run, content: bytes, name: str = "export.zip") -> Artifact:
    stored = default_storage.save(f"runs/{run.pk}/{name}", ContentFile(content))
    return Artifact.objects.create(
        run=run, kind=Artifact.Kind.STUDENT, path=stored, bytes=len(content), sha256="0" * 64
    )


def _upload(client, team: Team, name: str, upload, text_column: str = "text", label_column: str = "label"):
    """Post the data-set form with an uploaded file."""
    data = {"team": team.pk, "name": name, "upload": upload, "text_column": text_column, "label_column": label_column}
    return client.post(reverse("datasets"), data)


def _html(response) -> str:
    return response.content.decode()


def _field_block(html: str, name: str) -> str:
    """The markup of one form field (label, input, its errors and help), as rendered by partials/field.html."""
    match = re.search(rf'<div class="field[^"]*">\s*<label for="id_{name}">.*?</div>\s*</div>', html, re.S)
    assert match, f"no field {name!r} in the page"
    return match.group(0)


# --- login --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_requires_login_on_every_page(client, pages_run):
    dataset = pages_run.dataset
    urls = [
        reverse("runs"),
        reverse("run_detail", args=[pages_run.pk]),
        reverse("artifact_download", args=[pages_run.pk, 1]),
        reverse("teachers"),
        reverse("datasets"),
        reverse("dataset_detail", args=[dataset.pk]),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url


@pytest.mark.django_db
def test_it_logs_in_with_the_login_page(client, member):
    member.set_password("pages-pass-123")
    member.save()
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert 'name="username"' in _html(page) and 'name="password"' in _html(page)

    wrong = client.post(reverse("login"), {"username": member.username, "password": "nope"})
    assert wrong.status_code == 200
    assert 'class="errors"' in _html(wrong)

    response = client.post(reverse("login"), {"username": member.username, "password": "pages-pass-123"})
    assert response.status_code == 302
    assert response["Location"] == reverse("runs")


# --- runs ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_the_members_runs(login, member, pages_run, pages_other_run):
    running = _run(pages_run.team, "kd-live", status=Run.Status.RUNNING, progress=0.42, eta_s=310, step=42)
    client = login(member)

    html = _html(client.get(reverse("runs")))

    assert reverse("run_detail", args=[pages_run.pk]) in html
    assert reverse("run_detail", args=[running.pk]) in html
    assert "secret-run" not in html
    assert "feature-alignment KD" in html
    assert 'class="badge status-succeeded"' in html and 'class="badge status-running"' in html
    assert "42%" in html and "ETA 5 min 10 s" in html
    assert "2 x 32" in html  # student shape: 2 blocks, the teacher's width
    assert "0.760" in html  # the student's final accuracy
    assert "cpu-1" in html


@pytest.mark.django_db
def test_it_filters_runs_by_status_kind_teacher_and_team(login, member, pages_run):
    failed = _run(pages_run.team, "kd-broken", status=Run.Status.FAILED, kind=Run.Kind.KD_LOGITS)
    client = login(member)

    def names(**params) -> set[str]:
        html = _html(client.get(reverse("runs"), params))
        return {name for name in ("kd-tiny", "kd-broken") if f">{name}</a>" in html}

    assert names() == {"kd-tiny", "kd-broken"}
    assert names(status="failed") == {"kd-broken"}
    assert names(kind="kd_feature") == {"kd-tiny"}
    assert names(teacher=str(pages_run.teacher_id), team=str(pages_run.team_id)) == {"kd-tiny", "kd-broken"}
    assert names(status="succeeded", kind="kd_logits") == set()
    assert names(teacher="not-a-number") == {"kd-tiny", "kd-broken"}  # an invalid filter is ignored
    assert "No run matches these filters" in _html(client.get(reverse("runs"), {"status": "cancelled"}))
    assert failed.pk


@pytest.mark.django_db
def test_it_shows_an_empty_state_with_a_link_to_the_wizard(login, member):
    client = login(member)
    html = _html(client.get(reverse("runs")))
    assert "No runs yet" in html
    assert f'href="{reverse("wizard")}"' in html


@pytest.mark.django_db
def test_it_shows_a_runs_metrics_curves_config_and_artifacts(login, member, pages_run):
    artifact = _artifact(pages_run, b"zip bytes")
    client = login(member)

    response = client.get(reverse("run_detail", args=[pages_run.pk]))

    assert response.status_code == 200
    html = _html(response)
    # the series, embedded as JSON for charts.js
    embedded = re.search(r'<script id="run-series" type="application/json">(.*?)</script>', html, re.S)
    assert embedded and json.loads(embedded.group(1)) == SERIES
    assert "kdweb/charts.js" in html and "plotly/plotly.min.js" in html
    # final metrics, and the student against the teacher
    assert "0.7600" in html and "0.8000" in html
    assert "95%" in html  # retention 0.76 / 0.80
    assert "4.0×" in html  # 4 M / 1 M parameters, and 8 ms / 2 ms at batch size 1
    assert "1.0 M" in html and "4.0 M" in html
    # the config as a table of the settings its kind reads, and the download link
    assert '<tr data-key="student.layers"><td class="muted">student</td><td><code>layers</code></td>' in html
    assert {"section": "optim", "name": "lr", "key": "optim.lr", "value": "5e-05"} in response.context["config_rows"]
    assert reverse("artifact_download", args=[pages_run.pk, artifact.pk]) in html
    # finished: no polling, no live socket
    assert "hx-trigger=" not in html
    assert "kdweb/live.js" not in html and 'id="live-state"' not in html


@pytest.mark.django_db
def test_it_embeds_the_downsampled_backfill_and_its_last_step_for_the_live_view(login, viewer, team):
    run = _run(team, "kd-long", status=Run.Status.RUNNING, step=3000, total_steps=6000)
    MetricPoint.objects.bulk_create(MetricPoint(run=run, name="loss/task", step=s, value=1 / s) for s in range(1, 3001))

    html = _html(login(viewer).get(reverse("run_detail", args=[run.pk])))

    embedded = re.search(r'<script id="run-series" type="application/json">(.*?)</script>', html, re.S)
    series = json.loads(embedded.group(1))["loss/task"]
    assert len(series) == 2000 and series[0] == [1, 1.0] and series[-1] == [3000, 1 / 3000]
    assert f'data-run="{run.pk}" data-last-step="3000"' in html


@pytest.mark.django_db
def test_it_polls_the_status_of_a_live_run_and_reloads_when_it_ends(login, member, team):
    run = _run(team, "kd-live", status=Run.Status.RUNNING, progress=0.25, step=5, total_steps=20, eta_s=42)
    client = login(member)
    url = reverse("run_detail", args=[run.pk])

    html = _html(client.get(url))
    # polling (live.js cancels each poll while its socket is open), then the socket
    assert 'hx-trigger="every 2s"' in html and f'hx-get="{url}?partial=status"' in html
    assert "kdweb/live.js" in html
    assert f'id="live-state" class="live-state" data-run="{run.pk}" data-last-step="0"' in html
    assert "No points yet" in html

    partial = client.get(url, {"partial": "status"}, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    assert "<html" not in _html(partial)
    assert "25%" in _html(partial) and "ETA 42 s" in _html(partial) and "5 / 20" in _html(partial)
    assert "HX-Refresh" not in partial
    assert '<dd data-live="phase">starting</dd>' in _html(partial)
    # a long finish shows its progress, and the time it still takes after the last step
    Run.objects.filter(pk=run.pk).update(phase="measuring", phase_progress=0.4, progress=1.0, eta_s=80)
    status = _html(client.get(url, {"partial": "status"}))
    assert '<dd data-live="phase">measuring 40 %</dd>' in status
    assert '<span class="pct">100%</span> <span class="eta">ETA 1 min 20 s</span>' in status
    # a cancel there stops the finish, not a training step that is long over
    Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    status = _html(client.get(url, {"partial": "status"}))
    assert "Cancelling… measuring stops at its next batch" in status and "next step" not in status

    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED, error="CUDA out of memory")
    partial = client.get(url, {"partial": "status"}, HTTP_HX_REQUEST="true")
    assert partial["HX-Refresh"] == "true"
    assert "hx-trigger=" not in _html(partial)

    html = _html(client.get(url))
    assert "CUDA out of memory" in html and 'class="badge status-failed"' in html


@pytest.mark.django_db
def test_it_shows_the_accuracy_of_a_fine_tuned_teacher(login, member, team):
    run = _run(team, "ft", kind=Run.Kind.TEACHER_FINETUNE, status=Run.Status.SUCCEEDED, config={"kind": "x"})
    _evaluation(run, "teacher", accuracy=0.871, params=4_000_000, bs1_ms=8.0)
    client = login(member)

    assert "0.871" in _html(client.get(reverse("runs")))
    detail = _html(client.get(reverse("run_detail", args=[run.pk])))
    assert "0.8710" in detail and "Accuracy retention" not in detail  # no student to compare


@pytest.mark.django_db
def test_it_answers_404_for_another_teams_run_dataset_and_artifact(
    login, outsider, member, other_team, pages_run, pages_other_run
):
    artifact = _artifact(pages_run, b"private")
    client = login(outsider)

    assert client.get(reverse("run_detail", args=[pages_run.pk])).status_code == 404
    assert client.get(reverse("run_detail", args=[pages_run.pk]), {"partial": "status"}).status_code == 404
    assert client.get(reverse("artifact_download", args=[pages_run.pk, artifact.pk])).status_code == 404
    assert client.get(reverse("dataset_detail", args=[pages_run.dataset_id])).status_code == 404
    # nor does the artifact open through a run of the outsider's own team
    assert client.get(reverse("artifact_download", args=[pages_other_run.pk, artifact.pk])).status_code == 404

    login(member)
    assert client.get(reverse("run_detail", args=[pages_other_run.pk])).status_code == 404
    assert client.get(reverse("dataset_detail", args=[pages_other_run.dataset_id])).status_code == 404
    assert "secret-run" not in _html(client.get(reverse("runs")))
    assert other_team.name not in _html(client.get(reverse("teachers")))
    assert other_team.name not in _html(client.get(reverse("datasets")))


@pytest.mark.django_db
def test_it_downloads_an_artifact_as_an_attachment(login, viewer, pages_run):
    content = bytes(range(256)) * 40
    artifact = _artifact(pages_run, content, name="kd-tiny-export.zip")
    client = login(viewer)  # reading is enough

    response = client.get(reverse("artifact_download", args=[pages_run.pk, artifact.pk]))

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == content
    assert response["Content-Disposition"].startswith("attachment;")
    assert "kd-tiny-export.zip" in response["Content-Disposition"]


@pytest.mark.django_db
def test_it_answers_404_for_an_artifact_missing_from_storage(login, member, pages_run):
    artifact = _artifact(pages_run, b"gone")
    default_storage.delete(artifact.path)
    client = login(member)
    assert client.get(reverse("artifact_download", args=[pages_run.pk, artifact.pk])).status_code == 404


# --- teachers -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_teachers_with_their_architecture(login, member, team, pages_run):
    big = {"labels": [], "layers": 12, "hidden_size": 384, "heads": 12, "params": 22_700_000}
    teacher_row(team, "big-backbone", {**ARCH, **big})
    tuned = teacher_row(team, "tuned", {**ARCH, "labels": ["rotten", "fresh"]})
    tuned.from_run = pages_run
    tuned.save()
    client = login(member)

    html = _html(client.get(reverse("teachers")))

    assert "big-backbone" in html and "12 × 384" in html and "22.7 M" in html
    assert "backbone: fine-tune first" in html
    assert "rotten, fresh" in html
    assert reverse("run_detail", args=[pages_run.pk]) in html
    assert '<form method="post"' in html and 'name="source"' in html
    assert "package:&lt;pip-name&gt;, a model folder, or a hub id" in html


@pytest.mark.django_db
def test_it_shows_a_bad_teacher_source_at_the_field(login, member, team):
    client = login(member)

    response = client.post(
        reverse("teachers"), {"team": team.pk, "name": "nope", "source": "package:no-such-teacher-pkg"}
    )

    assert response.status_code == 200
    source = _field_block(_html(response), "source")
    assert 'class="error"' in source and "is not installed" in source
    assert 'class="error"' not in _field_block(_html(response), "name")
    assert not Teacher.objects.filter(name="nope").exists()


@pytest.mark.django_db
def test_it_registers_a_teacher_from_a_model_folder(login, member, team, assets):
    client = login(member)

    response = client.post(reverse("teachers"), {"team": team.pk, "name": "tiny", "source": str(assets["teacher"])})

    assert response.status_code == 302
    teacher = Teacher.objects.get(team=team, name="tiny")
    assert teacher.architecture["layers"] == 4
    html = _html(client.get(reverse("teachers")))
    assert "Registered teacher tiny." in html and "4 × 32" in html


@pytest.mark.django_db
def test_it_shows_no_register_form_to_a_viewer_and_refuses_their_post(login, viewer, team):
    client = login(viewer)

    for url in (reverse("teachers"), reverse("datasets")):
        html = _html(client.get(url))
        assert '<form method="post"' not in html.replace('action="/logout/"', "")
    assert 'href="/runs/new/"' not in _html(client.get(reverse("runs"))).split("</header>")[1]

    post = client.post(reverse("teachers"), {"team": team.pk, "name": "x", "source": "package:x"})
    assert post.status_code == 403
    post = client.post(reverse("datasets"), {"team": team.pk, "name": "x", "packaged": "packaged:bbc_news"})
    assert post.status_code == 403
    assert not Teacher.objects.exists() and not DatasetSpec.objects.exists()


# --- data sets ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_data_sets_and_shows_one(login, member, team):
    dataset = _dataset(team, "reviews")
    client = login(member)

    html = _html(client.get(reverse("datasets")))
    assert reverse("dataset_detail", args=[dataset.pk]) in html
    assert "neg, pos" in html and ">80<" in html
    assert 'enctype="multipart/form-data"' in html

    detail = _html(client.get(reverse("dataset_detail", args=[dataset.pk])))
    assert "a lovely moving film" in detail and "dull and silly" in detail
    assert "<th>text</th><th>label</th>" in detail
    assert detail.index(">train</td>") < detail.index(">validation</td>") < detail.index(">test</td>")


@pytest.mark.django_db
def test_it_creates_the_packaged_rotten_tomatoes_set(login, member, team):
    client = login(member)

    response = client.post(reverse("datasets"), {"team": team.pk, "name": "rt", "packaged": "packaged:rotten_tomatoes"})

    dataset = DatasetSpec.objects.get(team=team, name="rt")
    assert response.status_code == 302 and response["Location"] == reverse("dataset_detail", args=[dataset.pk])
    assert dataset.labels == ["rotten", "fresh"]
    assert dataset.sizes == {"train": 10_201, "validation": 1_275, "test": 1_276}
    detail = _html(client.get(response["Location"]))
    assert "Added data set rt." in detail and "fresh" in detail and len(dataset.preview) == 5
    assert "10,201" in detail


@pytest.mark.django_db
def test_it_asks_for_a_packaged_set_or_a_file(login, member, team):
    client = login(member)
    response = client.post(reverse("datasets"), {"team": team.pk, "name": "empty"})
    assert "Choose a packaged set or upload a file." in _field_block(_html(response), "packaged")


@pytest.mark.django_db
def test_it_shows_why_an_uploaded_csv_is_malformed(login, settings, member, team):
    client = login(member)
    bad = SimpleUploadedFile("reviews.csv", b"text,label\ngreat film,pos\nawful, just awful,neg\n")

    response = _upload(client, team, "bad", bad)

    assert response.status_code == 200
    upload = _field_block(_html(response), "upload")
    assert 'class="error"' in upload and "3 fields but the header has 2" in upload
    assert str(settings.MEDIA_ROOT) not in _html(response)  # no server paths in messages
    assert not DatasetSpec.objects.exists()
    assert not list((settings.MEDIA_ROOT / "uploads").glob("*"))  # the rejected file is not kept


@pytest.mark.django_db
def test_it_shows_a_missing_column_at_its_field(login, member, team):
    client = login(member)

    response = _upload(client, team, "cols", SimpleUploadedFile("reviews.csv", REVIEWS_CSV), "review", "label")

    assert "column &#x27;label&#x27; not found" in _field_block(_html(response), "label_column")
    assert 'class="error"' not in _field_block(_html(response), "text_column")


@pytest.mark.django_db
def test_it_creates_a_data_set_from_an_uploaded_csv(login, member, team):
    client = login(member)

    response = _upload(client, team, "mine", SimpleUploadedFile("mine.csv", REVIEWS_CSV), "review", "sentiment")

    assert response.status_code == 302
    dataset = DatasetSpec.objects.get(name="mine")
    assert sorted(dataset.labels) == ["neg", "pos"] and sum(dataset.sizes.values()) == 40
    assert "upload: mine" in _html(client.get(reverse("datasets")))


@pytest.mark.django_db
@override_settings(UPLOAD_MAX_BYTES=100)
def test_it_refuses_an_oversize_upload(login, member, team):
    client = login(member)
    big = SimpleUploadedFile("big.csv", b"text,label\n" + b"a long enough review,pos\n" * 20)

    response = _upload(client, team, "big", big)

    assert response.status_code == 200
    upload = _field_block(_html(response), "upload")
    assert f"The file is {big.size:,} bytes; the limit is 100 bytes." in upload
    assert not DatasetSpec.objects.exists()


@pytest.mark.django_db
def test_a_jsonl_line_nested_too_deeply_is_refused_and_not_kept(login, settings, member, team):
    client = login(member)
    deep = b'{"text": "fine", "label": "pos"}\n{"text": ' + b"[" * 5_000 + b"]" * 5_000 + b', "label": "neg"}\n'

    response = _upload(client, team, "deep", SimpleUploadedFile("deep.jsonl", deep))

    assert response.status_code == 200
    assert "line 2 is nested too deeply" in _field_block(_html(response), "upload")
    assert not DatasetSpec.objects.exists()
    assert not list((settings.MEDIA_ROOT / "uploads").glob("*"))
