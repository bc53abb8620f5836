"""Public, read-only pages of a share link: ``/p/<token>/`` and ``/p/<token>/artifacts/<id>/``, no login.

``permissions.shared_object`` finds the link (unknown, revoked and expired links are all 404). A run's link
shows that run's results page: status, final metrics, curves, the live chart while it runs (the socket
``/ws/public/<token>/``), and its configuration without paths. A study's link shows its runs with their
final metrics. Nothing else: no navigation, no team, no log (it names users and hosts), no error traceback,
no queue or host, and files only when the sharer allowed downloads, only the shared runs' files.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from distill.config import HOST_PATHS
from jobs import scorecard, selectors
from jobs.models import Artifact, Run, ShareLink
from jobs.pages.runs import open_artifact, run_page
from jobs.permissions import shared_object

# config values that name files or folders of the server, dropped whatever they hold
PRIVATE_CONFIG = {("teacher", "source"), ("data", "source"), *((path,) for path in HOST_PATHS)}


def _path_like(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or "\\" in value or value.startswith("~"))


def public_config(config: Any, at: tuple[str, ...] = ()) -> Any:
    """A run's config without its sources, output folder and any other value that looks like a path."""
    if not isinstance(config, dict):
        return config
    return {
        key: public_config(value, (*at, key))
        for key, value in config.items()
        if (*at, key) not in PRIVATE_CONFIG and not _path_like(value)
    }


@require_GET
def public_page(request: HttpRequest, token: str) -> HttpResponse:
    link = shared_object(token)
    if link.run_id:
        return _run_page(request, link)
    return _study_page(request, link)


def _run_page(request: HttpRequest, link: ShareLink) -> HttpResponse:
    run = Run.objects.select_related("teacher", "dataset").get(pk=link.run_id)
    return run_page(
        request,
        run,
        "jobs/public_run.html",
        public_config(run.config),
        shared=link,
        socket_path=f"/ws/public/{link.token}/",
        log_tail=[],  # log lines name users and hosts
        artifacts=run.artifacts.order_by("kind", "created_at") if link.allow_downloads else [],
    )


def _study_page(request: HttpRequest, link: ShareLink) -> HttpResponse:
    """A minimal read-only list of the study's runs and their final metrics; × faster from the study's
    side-by-side measurement only (``scorecard.side_by_side_faster``), never from figures of different runs."""
    runs = list(selectors.shared_runs(link).select_related("teacher", "dataset").prefetch_related("evaluations"))
    shown = selectors.side_by_side(study=link.study)["shown"]
    faster = scorecard.side_by_side_faster(shown.result) if shown else {}
    for run in runs:
        run.faster_bs1 = faster.get(run.pk, {}).get("bs1")
        evaluations = list(run.evaluations.all())
        run.final_score = scorecard.final_score(run, evaluations)
        run.final_metric = scorecard.primary_metric(scorecard.run_task(run.config))
        run.comparisons = scorecard.evaluation_table(evaluations)["comparisons"]
        run.shared_artifacts = list(run.artifacts.all()) if link.allow_downloads else []
    return render(request, "jobs/public_study.html", {"study": link.study, "runs": runs, "shared": link})


@require_GET
def public_artifact(request: HttpRequest, token: str, artifact_id: int) -> FileResponse:
    """A file of a shared run, when the link allows downloads; 404 otherwise, as for any other file."""
    link = shared_object(token)
    if not link.allow_downloads:
        raise Http404("This link does not share files.")
    artifact = get_object_or_404(Artifact, run__in=selectors.shared_runs(link), pk=artifact_id)
    return FileResponse(open_artifact(artifact), as_attachment=True, filename=PurePosixPath(artifact.path).name)
