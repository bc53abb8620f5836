"""Schemathesis against the API's own OpenAPI schema, in process (WSGI), with a token: for every operation,
generated requests (random ids and ones of real objects, random bodies and valid ones) must never answer 5xx,
and every answer must be one the schema documents, in status, content type, headers and body. Operations that
take a body also get bodies nested too deeply (400) and too large (413).

``CASES`` generated cases per operation, ≥ 1,000 in all (the schema has 25 operations); about 40 s.
"""

from __future__ import annotations

import datasets.config
import huggingface_hub.constants
import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs.models import Artifact, MetricPoint, Run, Study
from jobs.safejson import MAX_DEPTH
from tests.jobs.conftest import KD_SECTIONS

pytestmark = pytest.mark.django_db

CASES = 64
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
APP = get_wsgi_application()
SCHEMA = schemathesis.openapi.from_wsgi("/api/v1/schema/", APP)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Random teacher and data sources look like hub ids: answer at once instead of trying the network."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@pytest.fixture(autouse=True)
def keep_connection():
    """As Django's test client does: the in-process requests must not close the test's connection (its
    transaction holds the fixtures' data)."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def real(owner, tiny_teacher, tiny_dataset, queued_run) -> dict:
    """Real objects for the path parameters and bodies: a succeeded run with curves and its zip, a queued run
    (to cancel), a cancelled one (to resume), a study."""
    done = Run.objects.create(
        team=queued_run.team,
        name="done",
        kind=queued_run.kind,
        teacher=tiny_teacher,
        dataset=tiny_dataset,
        config=queued_run.config,
        status=Run.Status.SUCCEEDED,
        progress=1.0,
        queue="default",
    )
    MetricPoint.objects.bulk_create(
        MetricPoint(run=done, name=name, step=step, value=1.0 / step)
        for name in ("loss/total", "loss/task")
        for step in range(1, 50)
    )
    stored = default_storage.save(f"runs/{done.pk}/done-export.zip", ContentFile(b"PK\x05\x06" + bytes(18)))
    artifact = Artifact.objects.create(run=done, kind=Artifact.Kind.STUDENT, path=stored, bytes=22, sha256="0" * 64)
    stopped = Run.objects.create(
        team=queued_run.team,
        name="stopped",
        kind=queued_run.kind,
        teacher=tiny_teacher,
        dataset=tiny_dataset,
        config=queued_run.config,
        status=Run.Status.CANCELLED,
        queue="default",
    )
    study = Study.objects.create(team=queued_run.team, name="s")
    Run.objects.filter(pk__in=[done.pk, queued_run.pk]).update(study=study)
    return {
        "token": Token.objects.create(user=owner).key,
        "ids": {
            "/api/v1/teachers/{id}/": tiny_teacher.pk,
            "/api/v1/datasets/{id}/": tiny_dataset.pk,
            "/api/v1/studies/{id}/": study.pk,
            "/api/v1/runs/{id}/cancel/": queued_run.pk,
            "/api/v1/runs/{id}/resume/": stopped.pk,
        },
        "run": done.pk,
        "artifact": artifact.pk,
        "run_body": {
            "teacher": tiny_teacher.pk,
            "dataset": tiny_dataset.pk,
            "kind": "kd_feature",
            "name": "api",
            "sections": KD_SECTIONS,
        },
    }


def _nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return {"name": "deep", "sections": value}


# Hostile bodies for every operation that takes one: nested past jobs.safejson.MAX_DEPTH (up to a depth the
# client's own JSON encoder can still write), and larger than KDWEB_API_MAX_BODY_BYTES.
NESTED = st.integers(MAX_DEPTH + 1, 400).map(_nested)
OVERSIZED = st.integers(1, 2**16).map(lambda extra: {"name": "x" * (django_settings.KDWEB_API_MAX_BODY_BYTES + extra)})


def _strategy(operation, real: dict) -> st.SearchStrategy:
    """Fully generated cases, and (half of them) cases aimed at real objects or with a valid run body, and for
    operations with a body, nested and oversized ones."""
    aimed = []
    if list(operation.body):
        hostile = st.one_of(NESTED, OVERSIZED)
        aimed.append(hostile.flatmap(lambda body: operation.as_strategy(body=body, media_type="application/json")))
    if "{id}" in operation.path:
        ids = {"id": real["ids"].get(operation.path, real["run"])}
        if "{artifact_id}" in operation.path:
            ids["artifact_id"] = real["artifact"]
        aimed.append(operation.as_strategy(path_parameters=ids))
    if operation.path in ("/api/v1/runs/", "/api/v1/studies/") and operation.method.upper() == "POST":
        body = dict(real["run_body"])
        if "studies" in operation.path:
            body.pop("kind")
        aimed.append(operation.as_strategy(body=body, media_type="application/json"))
    generated = operation.as_strategy()
    return st.one_of(generated, *aimed) if aimed else generated


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_operation_conforms(operation, real):
    headers = {"Authorization": f"Token {real['token']}"}
    calls = 0

    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,  # nothing written to .hypothesis/
        derandomize=True,  # the same cases every run: CI fails only on a real regression
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, real))
    def check(case):
        nonlocal calls
        calls += 1
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        refused[response.status_code] = refused.get(response.status_code, 0) + 1

    refused: dict[int, int] = {}
    check()
    assert calls >= CASES
    if list(operation.body):  # the hostile bodies were sent, and refused as such
        assert refused.get(400) and refused.get(413), refused
