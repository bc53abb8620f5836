"""The REST API: every endpoint, each persona's access to it, validation errors at their config paths,
cancel and resume, the metric series, downloads, the schema and the token page.

Requests carry a token (``Authorization: Token <key>``), as the CLI client's do; teachers, data sets and runs
come through the real services (``conftest.py``), nothing reaches a broker (on-commit callbacks are captured).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from distill.config import config_schema
from distill.layer_map import OUT_OF_RANGE
from jobs.models import Artifact, Measurement, MetricPoint, Run, Study, Teacher
from jobs.services import QUEUE_NOT_LIVE
from tests.jobs.conftest import KD_SECTIONS, enqueued
from tests.jobs.pages.test_studies import store_measurement

pytestmark = pytest.mark.django_db

PERSONAS = ("owner", "member", "viewer", "outsider", "anonymous")
READ = {"owner": 200, "member": 200, "viewer": 200, "outsider": 404, "anonymous": 401}
WRITE = {"owner": 200, "member": 200, "viewer": 403, "outsider": 404, "anonymous": 401}


@pytest.fixture
def api(request):
    """``api(name)``: a client authenticated with the token of persona ``name`` (none for ``anonymous``)."""

    def _api(name: str) -> APIClient:
        client = APIClient()
        if name != "anonymous":
            token, _ = Token.objects.get_or_create(user=request.getfixturevalue(name))
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return _api


@pytest.fixture
def done_run(queued_run) -> Run:
    """A succeeded run of team alpha with two curves, a log line, an evaluation and its exported zip."""
    run = queued_run
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, progress=1.0, step=3, total_steps=3)
    MetricPoint.objects.bulk_create(
        MetricPoint(run=run, name=name, step=step, value=value)
        for name in ("loss/total", "loss/task")
        for step, value in ((1, 0.9), (2, float("nan")), (3, 0.5))
    )
    run.evaluations.create(role="student", split="validation", metrics={"accuracy": 0.8}, params=10, latency={})
    stored = default_storage.save(f"runs/{run.pk}/r-export.zip", ContentFile(b"zip bytes"))
    Artifact.objects.create(run=run, kind=Artifact.Kind.STUDENT, path=stored, bytes=9, sha256="0" * 64)
    run.refresh_from_db()
    return run


@pytest.fixture
def study(queued_run) -> Study:
    study = Study.objects.create(team=queued_run.team, name="depth study")
    Run.objects.filter(pk=queued_run.pk).update(study=study)
    return study


def run_body(teacher_obj: Teacher, dataset_obj, **changes) -> dict:
    body = {"teacher": teacher_obj.pk, "dataset": dataset_obj.pk, "kind": "kd_feature", "name": "api-run"}
    return body | {"sections": KD_SECTIONS} | changes


# --- access, per endpoint and persona -------------------------------------------------------------------------


@pytest.mark.parametrize("name", PERSONAS)
@pytest.mark.parametrize(
    "url",
    [
        lambda o: f"/api/v1/teachers/{o['teacher'].pk}/",
        lambda o: f"/api/v1/datasets/{o['dataset'].pk}/",
        lambda o: f"/api/v1/runs/{o['run'].pk}/",
        lambda o: f"/api/v1/runs/{o['run'].pk}/series/",
        lambda o: f"/api/v1/runs/{o['run'].pk}/artifacts/{o['run'].artifacts.get().pk}/download/",
        lambda o: f"/api/v1/studies/{o['study'].pk}/",
    ],
    ids=["teacher", "dataset", "run", "series", "download", "study"],
)
def test_objects_are_read_by_their_team_only(api, name, url, done_run, study):
    objects = {"teacher": done_run.teacher, "dataset": done_run.dataset, "run": done_run, "study": study}
    response = api(name).get(url(objects))
    assert response.status_code == READ[name], response.content


@pytest.mark.parametrize("name", PERSONAS)
@pytest.mark.parametrize("path", ["teachers", "datasets", "runs", "studies", "teams"])
def test_lists_hold_the_users_teams_objects(api, name, path, done_run, study):
    response = api(name).get(f"/api/v1/{path}/")
    if name == "anonymous":
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
        return
    assert response.status_code == 200
    names = [item["name"] for item in response.json()["results"]]
    alpha = {"teachers": ["tiny-bert"], "datasets": ["reviews"], "runs": ["r"], "studies": ["depth study"]}
    expected = {"teams": ["beta"]} if name == "outsider" else {**alpha, "teams": ["alpha"]}
    assert names == expected.get(path, [])


@pytest.mark.parametrize("name", PERSONAS)
@pytest.mark.parametrize("action", ["cancel", "resume"])
def test_cancel_and_resume_need_write_access(api, name, action, queued_run):
    if action == "resume":
        Run.objects.filter(pk=queued_run.pk).update(status=Run.Status.INTERRUPTED)
    response = api(name).post(f"/api/v1/runs/{queued_run.pk}/{action}/")
    assert response.status_code == WRITE[name], response.content
    queued_run.refresh_from_db()
    changed = WRITE[name] == 200
    before = Run.Status.QUEUED if action == "cancel" else Run.Status.INTERRUPTED
    after = Run.Status.CANCELLED if action == "cancel" else Run.Status.QUEUED
    assert queued_run.status == (after if changed else before)
    if changed:
        assert response.json()["status"] == after
    if name == "viewer":
        assert "Viewers" in response.json()["detail"]


@pytest.mark.parametrize("name", PERSONAS)
def test_run_create_needs_write_access(api, name, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api(name).post("/api/v1/runs/", run_body(tiny_teacher, tiny_dataset), format="json")
    expected = {"owner": 201, "member": 201, "viewer": 403, "outsider": 400, "anonymous": 401}[name]
    assert response.status_code == expected, response.content
    assert Run.objects.count() == (1 if expected == 201 else 0)
    assert enqueued(callbacks) == (1 if expected == 201 else 0)
    if name == "outsider":  # the other team's teacher is not one it can name
        assert list(response.json()) == ["teacher"]


# --- runs -----------------------------------------------------------------------------------------------------


def test_run_create_is_the_wizards_run(api, tiny_teacher, tiny_dataset, settings, django_capture_on_commit_callbacks):
    body = run_body(tiny_teacher, tiny_dataset)
    with django_capture_on_commit_callbacks():
        response = api("member").post("/api/v1/runs/", body, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    run = Run.objects.get(pk=created["id"])
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    assert (run.queue, run.kind, run.name, run.status) == (default, "kd_feature", "api-run", "queued")
    assert created["config"]["student"]["layers"] == 2
    assert created["config"]["teacher"]["source"] == tiny_teacher.source  # from the registered teacher
    assert created["config"]["data"]["text_column"] == "review"  # from the registered data set
    assert created["artifacts"] == [] and created["evaluations"] == []


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"sections": {"student": {"layers": 2, "layer_map": [[0, 0], [1, 2], [2, 7]]}}},
            "student.layer_map[2]",
            OUT_OF_RANGE.format(side="teacher", index=7, depth=4),
        ),
        ({"sections": {"student": {"layers": 2}, "optim": {"lr": 0}}}, "optim.lr", "greater than 0"),
        ({"sections": {"student": {"layers": 2}, "loss": {"top_k": 0}}}, "loss.top_k", "greater than 0"),
        ({"sections": {"student": {"layers": 2}, "loss": {"teacher_cache": "x"}}}, "loss.teacher_cache", "'build'"),
        ({"sections": {}}, "student", "required for kind kd_feature"),
        ({"sections": {"student": {"layers": 2}, "data": "all"}}, "data", "Expected an object"),
        ({"sections": ["student"]}, "sections", "Expected an object"),
        ({"sections": {"student": {"layers": 2, "init": "a\x00b"}}}, "student.init", "Null characters"),
        ({"kind": "distil"}, "kind", "not a valid choice"),
        ({"name": ""}, "name", "may not be blank"),
        ({"teacher": 10**6}, "teacher", "no teacher with id"),
        ({"teacher": 2**64}, "teacher", "less than or equal to"),
    ],
)
def test_run_create_errors_name_their_field(api, tiny_teacher, tiny_dataset, changes, field, message):
    response = api("owner").post("/api/v1/runs/", run_body(tiny_teacher, tiny_dataset, **changes), format="json")
    assert response.status_code == 400
    errors = response.json()
    assert field in errors, errors
    assert any(message in m for m in errors[field]), errors[field]
    assert not Run.objects.exists()


def _numeric_fields(node: dict, path: str, defs: dict) -> Iterator[tuple[str, dict]]:
    """``(config path, schema)`` of every number in the run config's JSON schema, through unions and lists."""
    if "$ref" in node:
        yield from _numeric_fields(defs[node["$ref"].rsplit("/", 1)[-1]], path, defs)
    for branch in node.get("anyOf", ()):
        yield from _numeric_fields(branch, path, defs)
    for key, child in node.get("properties", {}).items():
        yield from _numeric_fields(child, f"{path}.{key}" if path else key, defs)
    if node.get("type") == "array" and "items" in node:
        yield from _numeric_fields(node["items"], f"{path}[0]", defs)
    if node.get("type") in ("integer", "number"):
        yield path, node


CONFIG_SCHEMA = config_schema()
NUMERIC_FIELDS = dict(_numeric_fields(CONFIG_SCHEMA, "", CONFIG_SCHEMA["$defs"]))
# a list item's required fields, valid, for the field under test to be the only wrong one
LIST_ITEMS = {"student.layer_map": {"student": 1, "teacher": 1}}


def _out_of_range(schema: dict) -> tuple[float, float]:
    """A value just above the field's bound and one just below its minimum."""
    step = 1 if schema["type"] == "integer" else 0.5
    above = schema["exclusiveMaximum"] if "exclusiveMaximum" in schema else schema["maximum"] + step
    below = schema["exclusiveMinimum"] if "exclusiveMinimum" in schema else schema["minimum"] - step
    return above, below


def _sections_with(path: str, value: float) -> dict:
    """KD_SECTIONS with ``value`` at the config path ``a.b[0].c``."""
    sections = copy.deepcopy(KD_SECTIONS)
    node, walked = sections, ""
    *parents, leaf = path.split(".")
    for part in parents:
        name, _, index = part.partition("[")
        walked = f"{walked}.{name}" if walked else name
        if index:
            node[name] = [dict(LIST_ITEMS[walked])]
            node = node[name][0]
        else:
            node = node.setdefault(name, {})
    node[leaf] = value
    return sections


@pytest.mark.parametrize("path", sorted(NUMERIC_FIELDS))
def test_every_number_of_the_config_is_bounded_and_refused_out_of_range(api, tiny_teacher, tiny_dataset, path):
    schema = NUMERIC_FIELDS[path]
    assert "maximum" in schema or "exclusiveMaximum" in schema, f"{path} has no upper bound"
    assert "minimum" in schema or "exclusiveMinimum" in schema, f"{path} has no lower bound"
    for value in _out_of_range(schema):
        body = run_body(tiny_teacher, tiny_dataset, sections=_sections_with(path, value))
        response = api("owner").post("/api/v1/runs/", body, format="json")
        assert response.status_code == 400, (path, value, response.content)
        assert list(response.json()) == [path], (value, response.json())
    assert not Run.objects.exists()


@pytest.mark.parametrize("path", ["runs", "studies"])
def test_a_queue_no_worker_consumes_is_refused_at_launch_but_the_default_one_is_not(
    api, tiny_teacher, tiny_dataset, settings, path, django_capture_on_commit_callbacks
):
    """No worker is up in these tests: a named queue is refused, the default one accepted (the run waits)."""
    body = run_body(tiny_teacher, tiny_dataset)
    response = api("owner").post(f"/api/v1/{path}/", body | {"queue": "gpu-9"}, format="json")
    assert response.status_code == 400
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    assert response.json() == {"queue": [QUEUE_NOT_LIVE.format(queue="gpu-9", live="none", default=default)]}
    assert not Run.objects.exists() and not Study.objects.exists()
    with django_capture_on_commit_callbacks():
        response = api("owner").post(f"/api/v1/{path}/", body | {"queue": default}, format="json")
    assert response.status_code == 201, response.content


def test_a_queue_whose_worker_heartbeats_a_run_is_live(
    api, queued_run, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks
):
    """A solo worker that trains answers no inspect: the fresh heartbeat of its run says it is there."""
    busy = Run.objects.filter(pk=queued_run.pk)
    busy.update(status=Run.Status.RUNNING, queue="gpu-busy", heartbeat_at=timezone.now())
    body = run_body(tiny_teacher, tiny_dataset, queue="gpu-busy")
    with django_capture_on_commit_callbacks():
        assert api("owner").post("/api/v1/runs/", body, format="json").status_code == 201
    busy.update(heartbeat_at=timezone.now() - timedelta(minutes=5))  # its worker is gone
    assert list(api("owner").post("/api/v1/runs/", body, format="json").json()) == ["queue"]


def test_run_list_filters(api, done_run, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        api("owner").post("/api/v1/runs/", run_body(tiny_teacher, tiny_dataset, kind="no_kd"), format="json")
    client = api("owner")
    by = {q: [r["name"] for r in client.get(f"/api/v1/runs/?{q}").json()["results"]] for q in ("", "status=queued")}
    assert by == {"": ["api-run", "r"], "status=queued": ["api-run"]}
    assert client.get(f"/api/v1/runs/?kind=kd_feature&teacher={tiny_teacher.pk}").json()["count"] == 1
    assert client.get("/api/v1/runs/?limit=1").json()["next"]
    assert client.get("/api/v1/runs/?status=sleeping").json() == {"status": ['"sleeping" is not a valid choice.']}


def test_run_detail_has_progress_evaluations_and_artifacts(api, done_run):
    body = api("viewer").get(f"/api/v1/runs/{done_run.pk}/").json()
    assert (body["status"], body["progress"], body["step"], body["total_steps"]) == ("succeeded", 1.0, 3, 3)
    assert body["evaluations"] == [
        {
            "role": "student",
            "split": "validation",
            "metrics": {"accuracy": 0.8},
            "params": 10,
            "bytes": None,
            "latency": {},
        }
    ]
    (artifact,) = body["artifacts"]
    assert artifact["name"] == "r-export.zip"
    assert artifact["download"] == f"/api/v1/runs/{done_run.pk}/artifacts/{artifact['id']}/download/"


def test_cancel_then_resume_and_refusals(api, queued_run):
    client = api("owner")
    assert client.post(f"/api/v1/runs/{queued_run.pk}/cancel/").json()["status"] == "cancelled"
    again = client.post(f"/api/v1/runs/{queued_run.pk}/cancel/")
    assert again.status_code == 400
    assert again.json() == {"non_field_errors": ["A cancelled run cannot be cancelled."]}
    assert client.post(f"/api/v1/runs/{queued_run.pk}/resume/").json()["status"] == "queued"
    refused = client.post(f"/api/v1/runs/{queued_run.pk}/resume/")
    assert refused.status_code == 400 and "this one is queued" in refused.json()["non_field_errors"][0]


def test_series_downsampled_from_a_step(api, done_run):
    client = api("owner")
    body = client.get(f"/api/v1/runs/{done_run.pk}/series/").json()
    assert body["series"] == {
        "loss/task": [[1, 0.9], [2, None], [3, 0.5]],
        "loss/total": [[1, 0.9], [2, None], [3, 0.5]],
    }
    assert body["last_step"] == 3
    after = client.get(f"/api/v1/runs/{done_run.pk}/series/?after=3").json()
    assert after["series"] == {"loss/task": [[3, 0.5]], "loss/total": [[3, 0.5]]}
    two = client.get(f"/api/v1/runs/{done_run.pk}/series/?max_points=2").json()
    assert two["series"]["loss/task"] == [[1, 0.9], [3, 0.5]]
    bad = client.get(f"/api/v1/runs/{done_run.pk}/series/?max_points=1")
    assert bad.status_code == 400 and list(bad.json()) == ["max_points"]


def test_download_is_the_stored_zip(api, done_run):
    artifact = done_run.artifacts.get()
    response = api("viewer").get(f"/api/v1/runs/{done_run.pk}/artifacts/{artifact.pk}/download/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"zip bytes"
    assert response["Content-Disposition"] == 'attachment; filename="r-export.zip"'
    default_storage.delete(artifact.path)
    gone = api("viewer").get(f"/api/v1/runs/{done_run.pk}/artifacts/{artifact.pk}/download/")
    assert gone.status_code == 404 and gone.json() == {"detail": "The artifact's file is no longer in storage."}


# --- teachers, data sets, studies --------------------------------------------------------------------------------


def test_teacher_register(api, team, owner, assets):
    client = api("owner")
    response = client.post("/api/v1/teachers/", {"name": "t2", "source": str(assets["teacher"])}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["labels"] == ["neg", "pos"] and response.json()["team"] == team.pk
    again = client.post(
        "/api/v1/teachers/", {"name": "t2", "source": str(assets["teacher"]), "team": team.pk}, format="json"
    )
    assert again.status_code == 400 and list(again.json()) == ["name"]
    nowhere = str(assets["teacher"].parent / "nowhere")  # under the import root (tests/jobs/conftest.py)
    bad = client.post("/api/v1/teachers/", {"name": "t3", "source": nowhere}, format="json")
    assert bad.status_code == 400 and "no model folder" in bad.json()["source"][0]
    other = client.post("/api/v1/teachers/", {"name": "t4", "source": "x", "team": 10**6}, format="json")
    assert other.status_code == 400 and list(other.json()) == ["team"]
    assert list(Teacher.objects.values_list("name", flat=True)) == ["t2"]


@pytest.mark.parametrize(("name", "expected"), [("member", 201), ("viewer", 403), ("anonymous", 401)])
def test_dataset_create(api, name, expected, team, owner, assets):
    body = {"name": "csv", "source": str(assets["reviews"]), "text_column": "review", "label_column": "sentiment"}
    response = api(name).post("/api/v1/datasets/", body, format="json")
    assert response.status_code == expected, response.content
    if expected == 201:
        assert response.json()["labels"] == ["neg", "pos"]
        assert sum(response.json()["sizes"].values()) == 240


def test_dataset_errors_name_their_field(api, team, owner, assets):
    body = {"name": "csv", "source": str(assets["reviews"]), "text_column": "nope", "label_column": "sentiment"}
    response = api("owner").post("/api/v1/datasets/", body, format="json")
    assert response.status_code == 400 and "text_column" in response.json(), response.json()


def test_study_detail_lists_its_runs(api, study, queued_run):
    body = api("viewer").get(f"/api/v1/studies/{study.pk}/").json()
    assert (body["name"], body["run_count"], [r["id"] for r in body["runs"]]) == ("depth study", 1, [queued_run.pk])


def test_study_detail_has_its_side_by_side_measurement(api, study, done_run):
    body = api("viewer").get(f"/api/v1/studies/{study.pk}/").json()
    assert body["side_by_side"] is None and body["measuring"] is False
    Run.objects.filter(pk=done_run.pk).update(study=study)
    store_measurement(study, [done_run], heavy_load=True)
    pending = Measurement.objects.create(team=study.team, study=study, queue="q")  # a newer one, still queued
    body = api("viewer").get(f"/api/v1/studies/{study.pk}/").json()
    shown = body["side_by_side"]
    assert body["measuring"] is True and shown["id"] != pending.pk and shown["status"] == "succeeded"
    assert shown["faster"] == {str(done_run.pk): {"bs1": pytest.approx(3.0), "bs32": pytest.approx(3.0)}}
    assert shown["result"]["heavy_load"] is True and shown["result"]["host"] == "bench@box"
    assert shown["result"]["models"][1]["latency"]["bs1"]["p90_ms"] == pytest.approx(2.4)


def test_study_create(api, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks):
    body = {"teacher": tiny_teacher.pk, "dataset": tiny_dataset.pk, "name": "st", "sections": KD_SECTIONS}
    with django_capture_on_commit_callbacks() as callbacks:
        response = api("owner").post("/api/v1/studies/", body | {"seeds": [0, 1]}, format="json")
    assert response.status_code == 201, response.content
    kinds = sorted(r["kind"] for r in response.json()["runs"])
    assert kinds == sorted(["kd_feature", "kd_logits", "no_kd"] * 2)
    assert enqueued(callbacks) == 6
    viewer = api("viewer").post("/api/v1/studies/", body, format="json")
    assert viewer.status_code == 403


# --- schema, docs, token page ------------------------------------------------------------------------------------


def test_schema_and_docs_are_served_without_a_cdn(client):
    schema = client.get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/v1/runs/{id}/series/" in schema.json()["paths"]
    docs = client.get("/api/v1/docs/").content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in docs
    assert "cdn" not in docs.lower() and "unpkg" not in docs


def test_token_page_shows_and_regenerates_the_token(client, api, owner):
    assert client.get(reverse("api_token")).status_code == 302  # login first
    client.force_login(owner)
    page = client.get(reverse("api_token")).content.decode()
    old = Token.objects.get(user=owner).key
    assert old in page and reverse("api_token") in client.get(reverse("runs")).content.decode()
    assert client.post(reverse("api_token")).status_code == 302
    new = Token.objects.get(user=owner).key
    assert new != old
    stale = APIClient()
    stale.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert stale.get("/api/v1/runs/").status_code == 401


# --- malformed input: 400 naming the field (or 413), nothing stored, never a 500 ------------------------------

DEEP = 5_000


def _deep(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("path", ["teachers", "datasets", "runs", "studies"])  # the POSTs that read a body
@pytest.mark.parametrize("body", [_deep(), '{"name": "x", "sections": ' + _deep() + "}", '{"a": ' * DEEP + "1"])
def test_deeply_nested_json_bodies_answer_400(api, queued_run, path, body):
    response = api("owner").post(f"/api/v1/{path}/", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "nested more than" in response.json()["detail"]
    assert (Run.objects.count(), Study.objects.count(), Teacher.objects.count()) == (1, 0, 1)


def test_an_oversized_body_answers_413(api, tiny_teacher, tiny_dataset, settings):
    sections = {**KD_SECTIONS, "padding": "x" * settings.KDWEB_API_MAX_BODY_BYTES}
    body = {"teacher": tiny_teacher.pk, "dataset": tiny_dataset.pk, "kind": "kd_feature", "name": "big"}
    response = api("owner").post("/api/v1/runs/", body | {"sections": sections}, format="json")
    assert response.status_code == 413, response.content
    assert "larger than" in response.json()["detail"]
    assert not Run.objects.exists()


@pytest.mark.parametrize("source", ["package:.", "package:..", "package:a..b", "package:", "package:a.b"])
def test_teacher_package_names_that_are_no_package_answer_400(api, team, source):
    response = api("owner").post("/api/v1/teachers/", {"name": "t", "source": source}, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["source"]
    assert not Teacher.objects.exists()
