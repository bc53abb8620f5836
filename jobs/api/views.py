"""The API's views (``/api/v1/``): teams, teachers, data sets, runs, their metric series and exported students,
studies; the error handlers; and the page that shows a user's API token.

Views stay as thin as the pages': a serializer checks the shape of the input, ``jobs.permissions`` decides
access (other teams' objects answer 404, viewers 403 on writes), one selector or service does the work. A run is
created with the wizard's own call, ``services.run_create``, so the engine validates it the same way; its
errors, keyed by config path (``student.layer_map[2]``), answer 400 as ``{"field": ["message"]}``.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Prefetch, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods
from django.views.defaults import page_not_found
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from jobs import selectors, services
from jobs.api.serializers import (
    ArchivedQuerySerializer,
    DatasetCreateSerializer,
    DatasetSerializer,
    ManageSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunFilterSerializer,
    RunSerializer,
    SeriesQuerySerializer,
    SeriesSerializer,
    StudyCreateSerializer,
    StudyDeleteQuerySerializer,
    StudyDetailSerializer,
    StudySerializer,
    TeacherCreateSerializer,
    TeacherSerializer,
    TeamSerializer,
)
from jobs.models import DatasetSpec, Evaluation, Run, Study, Teacher, Team
from jobs.permissions import READ_ONLY, get_for_user, teams_for_user

NON_FIELD = "non_field_errors"  # DRF's key for errors of no one field


# --- errors ---------------------------------------------------------------------------------------------------


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus the services' Django ``ValidationError``: 400 ``{"field": ["message"]}``, keyed by
    the service's field (a config path for the engine's errors), ``non_field_errors`` for the others; and their
    ``Conflict`` (a run queued or running cannot be deleted): 409 ``{"detail": "message"}``."""
    if isinstance(exc, services.Conflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            data = {(NON_FIELD if key == "__all__" else key): messages for key, messages in exc.message_dict.items()}
        else:
            data = {NON_FIELD: exc.messages}
        return Response(data, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 404 of a URL that matches nothing (``handler404``): JSON under ``/api/``, as the schema documents
    (``/api/v1/runs/1/artifacts/-1/download/``), kdweb's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return page_not_found(request, exception)


# --- pagination ----------------------------------------------------------------------------------------------


class Pages(LimitOffsetPagination):
    """``?limit=&offset=``, bounded so that no number reaches the database's limits."""

    default_limit = 50
    max_limit = 500
    max_offset = 10**9

    def get_offset(self, request: Request) -> int:
        return min(super().get_offset(request), self.max_offset)

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, self.max_offset)}
        for parameter in parameters:
            low, high = bounds[parameter["name"]]
            parameter["schema"].update(minimum=low, maximum=high)
        return parameters


# --- views ---------------------------------------------------------------------------------------------------


def _checked(serializer_class: type[serializers.Serializer], data: Any) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _team_for_write(user, team_id: int | None) -> Team:
    """The team named in the body (one of the user's), or the only team the user may write to."""
    if team_id is not None:
        team = teams_for_user(user).filter(pk=team_id).first()
        if team is None:
            raise serializers.ValidationError({"team": [f"You are in no team with id {team_id}."]})
        return team
    writable = list(teams_for_user(user, write=True)[:2])
    if not writable:
        raise PermissionDenied(READ_ONLY)
    if len(writable) > 1:
        raise serializers.ValidationError({"team": ["You may write to several teams: choose one."]})
    return writable[0]


def _visible(queryset: QuerySet, pk: int, field: str):
    """A teacher or data set the body names, among those the user may see; 400 at ``field`` otherwise."""
    obj = queryset.filter(pk=pk).first()
    if obj is None:
        raise serializers.ValidationError({field: [f"You have no {field} with id {pk}."]})
    return obj


class TeamViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Your teams and your role in each."""

    serializer_class = TeamSerializer
    pagination_class = Pages
    queryset = Team.objects.none()  # for the schema; get_queryset reads the user's

    def get_queryset(self) -> QuerySet[Team]:
        return selectors.team_list(self.request.user)


class TeamObjectViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """List and get objects of the user's teams; one object through ``get_for_user`` (404 for other teams).
    Rename or archive one (PATCH), delete it (DELETE): ``services.object_rename``, ``object_archive`` and
    ``object_delete`` decide who may."""

    pagination_class = Pages
    lookup_value_regex = "[0-9]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]  # no PUT: names and flags only

    def get_object(self):
        obj, _ = get_for_user(self.get_queryset(), self.request.user, self.kwargs["pk"])
        return obj

    def delete_options(self) -> dict[str, Any]:
        """What ``services.object_delete`` takes beside the object, from the query (studies: ``with_runs``)."""
        return {}

    def with_archived(self) -> bool:
        """Whether the queryset keeps archived objects: always for one object (its URL still reads), for a
        list with ``?archived=1``."""
        return self.action != "list" or _checked(ArchivedQuerySerializer, self.request.query_params)["archived"]

    @extend_schema(request=ManageSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        """Rename (owners and members) or archive and unarchive (owners); 400 at ``name`` for an empty, too
        long or (teachers, data sets) taken name."""
        data = _checked(ManageSerializer, request.data)
        obj = self.get_object()
        with transaction.atomic():  # both or neither: a member's rename is undone with a refused archive
            if "name" in data:
                services.object_rename(user=request.user, obj=obj, name=data["name"])
            if "archived" in data:
                services.object_archive(user=request.user, obj=obj, archived=data["archived"])
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(parameters=[ArchivedQuerySerializer])
    def list(self, request: Request) -> Response:
        """The objects of your teams (archived ones too with ``?archived=1``)."""
        return super().list(request)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        """Delete (owners), with the files it holds. A teacher or data set that runs use is archived instead,
        and a run queued or running is refused: 409 with the reason."""
        done = services.object_delete(user=request.user, obj=self.get_object(), **self.delete_options())
        if not done.deleted:
            return Response({"detail": done.message}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TeacherViewSet(TeamObjectViewSet):
    """Teachers: registered from a package, a model folder or a hub id; fine-tuning runs add theirs."""

    serializer_class = TeacherSerializer
    queryset = Teacher.objects.none()

    def get_queryset(self) -> QuerySet[Teacher]:
        return selectors.teacher_list(self.request.user, archived=self.with_archived())

    @extend_schema(request=TeacherCreateSerializer, responses={201: TeacherSerializer})
    def create(self, request: Request) -> Response:
        """Register a teacher (owners and members): its architecture is read from the source first."""
        data = _checked(TeacherCreateSerializer, request.data)
        team = _team_for_write(request.user, data.get("team"))
        teacher = services.teacher_register(user=request.user, team=team, name=data["name"], source=data["source"])
        return Response(TeacherSerializer(teacher).data, status=status.HTTP_201_CREATED)


class DatasetViewSet(TeamObjectViewSet):
    """Data sets: packaged, a file on the server, or a hub id; each is read and split when added."""

    serializer_class = DatasetSerializer
    queryset = DatasetSpec.objects.none()

    def get_queryset(self) -> QuerySet[DatasetSpec]:
        return selectors.dataset_list(self.request.user, archived=self.with_archived())

    @extend_schema(request=DatasetCreateSerializer, responses={201: DatasetSerializer})
    def create(self, request: Request) -> Response:
        """Add a data set (owners and members) by source: its labels, splits and preview are read at once."""
        data = _checked(DatasetCreateSerializer, request.data)
        team = _team_for_write(request.user, data.pop("team", None))
        dataset = services.dataset_create(user=request.user, team=team, **data)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class RunViewSet(TeamObjectViewSet):
    """Runs: launch with the wizard's config and validation, follow, cancel, resume, download the student."""

    queryset = Run.objects.none()

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return RunSerializer if self.action == "list" else RunDetailSerializer

    def get_queryset(self) -> QuerySet[Run]:
        if self.action == "list":
            filters = _checked(RunFilterSerializer, self.request.query_params)
            study, archived = filters.pop("study", None), filters.pop("archived")
            runs = selectors.run_list(self.request.user, archived=archived, **{k: str(v) for k, v in filters.items()})
            return runs.filter(study_id=study) if study else runs
        evaluations = Prefetch("evaluations", queryset=Evaluation.objects.order_by("split", "-role"))
        return Run.objects.select_related("team").prefetch_related(evaluations, "artifacts")

    @extend_schema(parameters=[RunFilterSerializer])
    def list(self, request: Request) -> Response:
        """Your runs, newest first; filter by status, kind, teacher, team or study (archived ones: ``?archived=1``)."""
        return super().list(request)

    @extend_schema(request=RunCreateSerializer, responses={201: RunDetailSerializer})
    def create(self, request: Request) -> Response:
        """Validate a run as the wizard does (``services.run_create``) and queue it."""
        data = _checked(RunCreateSerializer, request.data)
        teacher = _visible(selectors.teacher_list(request.user, archived=True), data["teacher"], "teacher")
        dataset = _visible(selectors.dataset_list(request.user, archived=True), data["dataset"], "dataset")
        run = services.run_create(
            user=request.user,
            teacher=teacher,
            dataset=dataset,
            kind=data["kind"],
            name=data["name"],
            sections=data["sections"],
            queue=data["queue"],
        )
        return Response(RunDetailSerializer(run).data, status=status.HTTP_201_CREATED)

    def _act(self, service: Any) -> Response:
        run, _ = get_for_user(Run, self.request.user, self.kwargs["pk"])
        service(user=self.request.user, run=run)
        return Response(RunDetailSerializer(self.get_object()).data)

    @extend_schema(request=None, responses=RunDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        """Cancel (owners and members): a queued run at once, a running one at its next step."""
        return self._act(services.run_cancel)

    @extend_schema(request=None, responses=RunDetailSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        """Queue a failed, cancelled or interrupted run again; it continues from its last checkpoint."""
        return self._act(services.run_resume)

    @extend_schema(parameters=[SeriesQuerySerializer], responses=SeriesSerializer)
    @action(detail=True, methods=["get"])
    def series(self, request: Request, pk: str) -> Response:
        """Every metric series of the run, downsampled (LTTB) to ``max_points``, and the log's tail."""
        query = _checked(SeriesQuerySerializer, request.query_params)
        run, _ = get_for_user(Run, request.user, pk)
        backfill = selectors.run_backfill(run, after_step=query.get("after"), max_points=query["max_points"])
        return Response(SeriesSerializer(backfill).data)

    @extend_schema(
        parameters=[OpenApiParameter("artifact_id", OpenApiTypes.INT, OpenApiParameter.PATH)],
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
    )
    @action(detail=True, methods=["get"], url_path=r"artifacts/(?P<artifact_id>[0-9]+)/download", url_name="download")
    def download(self, request: Request, pk: str, artifact_id: str) -> FileResponse:
        """The artifact's file (the exported student: a zip)."""
        run, _ = get_for_user(Run, request.user, pk)
        artifact = get_object_or_404(run.artifacts, pk=artifact_id)
        try:
            handle = default_storage.open(artifact.path, "rb")
        except FileNotFoundError:
            raise Http404("The artifact's file is no longer in storage.") from None
        return FileResponse(handle, as_attachment=True, filename=PurePosixPath(artifact.path).name)


class StudyViewSet(TeamObjectViewSet):
    """Studies: the full method, its ablations and baselines, over seeds, with one student shape and budget."""

    queryset = Study.objects.none()

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return StudySerializer if self.action == "list" else StudyDetailSerializer

    def get_queryset(self) -> QuerySet[Study]:
        return selectors.study_list(self.request.user, archived=self.with_archived())

    def delete_options(self) -> dict[str, Any]:
        return _checked(StudyDeleteQuerySerializer, self.request.query_params)

    @extend_schema(parameters=[StudyDeleteQuerySerializer], request=None, responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        """Delete the study (owners); with ``?with_runs=1`` its runs and their files too, else they stay."""
        return super().destroy(request, pk)

    @extend_schema(request=StudyCreateSerializer, responses={201: StudyDetailSerializer})
    def create(self, request: Request) -> Response:
        """Launch a study (``services.study_create``): one run per variant and seed, validated as the wizard's."""
        data = _checked(StudyCreateSerializer, request.data)
        teacher = _visible(selectors.teacher_list(request.user, archived=True), data.pop("teacher"), "teacher")
        dataset = _visible(selectors.dataset_list(request.user, archived=True), data.pop("dataset"), "dataset")
        study = services.study_create(user=request.user, teacher=teacher, dataset=dataset, **data)
        return Response(StudyDetailSerializer(self.get_queryset().get(pk=study.pk)).data, status=201)


# --- the token page ------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def token_page(request: HttpRequest) -> HttpResponse:
    """``/account/token/``: the user's API token; POST replaces it (the old one stops working)."""
    if request.method == "POST":
        Token.objects.filter(user=request.user).delete()
        Token.objects.create(user=request.user)
        return redirect("api_token")
    token, _ = Token.objects.get_or_create(user=request.user)
    return render(request, "jobs/api_token.html", {"token": token, "api_root": request.build_absolute_uri("/")})
