"""The API's serializers: the shape of each request and answer; a run's ``sections`` are checked for their
outer shape here and validated by the engine in ``services.run_create``.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from distill.config import ABLATIONS
from jobs import scorecard, selectors
from jobs.api.schema import OBJECT_SECTIONS, SECTIONS_SCHEMA
from jobs.downsample import DEFAULT_MAX_POINTS
from jobs.models import Artifact, DatasetSpec, Evaluation, Measurement, Run, Study, Teacher, Team

# ids are bigint columns: larger numbers cannot name anything
MAX_ID = 2**63 - 1
# steps are int columns
MIN_STEP, MAX_STEP = -(2**31), 2**31 - 1
MAX_SERIES_POINTS = 20_000


def _id_field(**kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)


class TeamSerializer(serializers.ModelSerializer):
    role = serializers.CharField(read_only=True, help_text="Your role: owner, member or viewer.")
    member_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Team
        fields = ["id", "name", "role", "member_count"]


class TeacherSerializer(serializers.ModelSerializer):
    labels = serializers.ListField(child=serializers.CharField(), read_only=True, help_text="Empty for a backbone.")

    class Meta:
        model = Teacher
        fields = ["id", "team", "name", "source", "architecture", "task", "labels", "from_run", "archived"]
        fields += ["created_at"]


class TeacherCreateSerializer(serializers.Serializer):
    team = _id_field(required=False, help_text="Optional when you may write to one team only.")
    name = serializers.CharField(max_length=100)
    source = serializers.CharField(max_length=500, help_text="package:<pip-name>, a model folder or a hub id.")


class DatasetSerializer(serializers.ModelSerializer):
    class Meta:
        model = DatasetSpec
        fields = ["id", "team", "name", "source", "text_column", "label_column", "labels", "sizes", "preview"]
        fields += ["archived", "created_at"]


class DatasetCreateSerializer(serializers.Serializer):
    team = _id_field(required=False, help_text="Optional when you may write to one team only.")
    name = serializers.CharField(max_length=100)
    source = serializers.CharField(max_length=500, help_text="packaged:<name>, a .csv/.jsonl path or hf:<id>.")
    text_column = serializers.CharField(max_length=100, default="text")
    label_column = serializers.CharField(max_length=100, default="label")
    task = serializers.ChoiceField(
        choices=Teacher.Task.choices,
        default=Teacher.Task.CLASSIFICATION,
        help_text="causal_lm: plain text for language models, read without labels (a .txt file also works).",
    )


class EvaluationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Evaluation
        fields = ["role", "split", "metrics", "params", "bytes", "latency"]


class ArtifactSerializer(serializers.ModelSerializer):
    name = serializers.SerializerMethodField()
    download = serializers.SerializerMethodField(help_text="The URL of the file.")

    class Meta:
        model = Artifact
        fields = ["id", "kind", "name", "bytes", "sha256", "created_at", "download"]

    def get_name(self, artifact: Artifact) -> str:
        return PurePosixPath(artifact.path).name

    def get_download(self, artifact: Artifact) -> str:
        return reverse("api-run-download", kwargs={"pk": artifact.run_id, "artifact_id": artifact.pk})


class RunSerializer(serializers.ModelSerializer):
    waiting_for_broker = serializers.BooleanField(
        read_only=True,
        help_text="Queued, but not sent to its queue yet: the broker did not answer. It is sent when it does.",
    )

    class Meta:
        model = Run
        fields = ["id", "team", "study", "name", "kind", "status", "teacher", "dataset", "queue", "progress"]
        fields += ["step", "total_steps", "eta_s", "phase", "phase_progress", "attempts", "created_at"]
        fields += ["started_at", "finished_at", "waiting_for_broker", "archived"]


class RunDetailSerializer(RunSerializer):
    evaluations = EvaluationSerializer(many=True, read_only=True, help_text="Final measurements, once it succeeded.")
    artifacts = ArtifactSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "config", "error", "host", "evaluations", "artifacts"]


def _no_nul(value: Any, path: str) -> None:
    """PostgreSQL's JSON cannot store the NUL character: refuse it at its path rather than fail on save."""
    if isinstance(value, str) and "\x00" in value:
        raise serializers.ValidationError({path: ["Null characters are not allowed."]})
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, path)
            _no_nul(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_nul(item, f"{path}[{i}]")


def _check_sections(sections: Any) -> None:
    """The wizard's ``sections`` shape: an object whose engine sections are objects (the engine checks the rest)."""
    if not isinstance(sections, dict):
        raise serializers.ValidationError({"sections": ["Expected an object of config sections."]})
    for name, nullable in OBJECT_SECTIONS.items():
        if name in sections and not isinstance(sections[name], dict) and not (nullable and sections[name] is None):
            raise serializers.ValidationError({name: ["Expected an object."]})
    _no_nul(sections, "")


@extend_schema_field(SECTIONS_SCHEMA)
class SectionsField(serializers.JSONField):
    """Checked by the serializer's ``validate``, so its errors keep their config paths as top-level keys."""


class RunCreateSerializer(serializers.Serializer):
    teacher = _id_field()
    dataset = _id_field()
    kind = serializers.ChoiceField(choices=Run.Kind.choices)
    name = serializers.CharField(max_length=100)
    sections = SectionsField(default=dict)
    queue = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)

    def validate(self, attrs: dict) -> dict:
        _check_sections(attrs["sections"])
        return attrs


class StudySerializer(serializers.ModelSerializer):
    run_count = serializers.IntegerField(read_only=True)
    finished_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Study
        fields = ["id", "team", "name", "description", "archived", "created_at", "run_count", "finished_count"]


class MeasurementSerializer(serializers.ModelSerializer):
    """A side-by-side measurement: ``result`` as the engine gives it (``SideBySide.as_dict()``: host, threads,
    load, ``heavy_load``, per model its run id, latency median and p10-p90 per batch, throughput, peak memory)
    and ``faster``: each run's × faster at batch 1 and 32 against the measurement's one teacher figure."""

    faster = serializers.SerializerMethodField()

    class Meta:
        model = Measurement
        fields = ["id", "status", "host", "created_at", "finished_at", "error", "result", "faster"]

    def get_faster(self, measurement: Measurement) -> dict[str, dict[str, float | None]]:
        return {str(run): ratios for run, ratios in scorecard.side_by_side_faster(measurement.result or {}).items()}


class StudyDetailSerializer(StudySerializer):
    runs = serializers.SerializerMethodField()
    side_by_side = serializers.SerializerMethodField()
    measuring = serializers.SerializerMethodField()

    class Meta(StudySerializer.Meta):
        fields = [*StudySerializer.Meta.fields, "runs", "side_by_side", "measuring"]

    @extend_schema_field(RunSerializer(many=True))
    def get_runs(self, study: Study) -> list[dict]:
        return RunSerializer(study.runs.order_by("created_at", "pk"), many=True).data

    @extend_schema_field(MeasurementSerializer(allow_null=True))
    def get_side_by_side(self, study: Study) -> dict | None:
        """The newest side-by-side measurement that succeeded: the only source of the study's × faster."""
        shown = selectors.side_by_side(study=study)["shown"]
        return MeasurementSerializer(shown).data if shown else None

    def get_measuring(self, study: Study) -> bool:
        """A side-by-side measurement of the study is queued or running."""
        latest = selectors.side_by_side(study=study)["latest"]
        return bool(latest and latest.is_pending)


class StudyCreateSerializer(serializers.Serializer):
    teacher = _id_field()
    dataset = _id_field()
    name = serializers.CharField(max_length=100)
    sections = SectionsField(default=dict)
    ablations = serializers.ListField(
        child=serializers.ChoiceField(choices=list(ABLATIONS)), default=list, max_length=10
    )
    seeds = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=MAX_STEP), default=lambda: [0], max_length=100
    )
    queue = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)

    def validate(self, attrs: dict) -> dict:
        _check_sections(attrs["sections"])
        return attrs


class ManageSerializer(serializers.Serializer):
    """A PATCH of a run, study, teacher or data set: a new name (owners and members), archived or not (owners)."""

    # the service checks the name (empty, too long, taken), so the API and the pages say the same
    name = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    archived = serializers.BooleanField(
        required=False, help_text="Archived objects leave the default lists (?archived=1 lists them too)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError("Give a name, or archived: true or false.")
        return attrs


class ArchivedQuerySerializer(serializers.Serializer):
    archived = serializers.BooleanField(default=False, help_text="List the archived ones too.")


class StudyDeleteQuerySerializer(serializers.Serializer):
    with_runs = serializers.BooleanField(
        default=False, help_text="Delete the study's runs too (with their files); else they stay, in no study."
    )


class RunFilterSerializer(ArchivedQuerySerializer):
    status = serializers.ChoiceField(choices=Run.Status.choices, required=False)
    kind = serializers.ChoiceField(choices=Run.Kind.choices, required=False)
    teacher = _id_field(required=False)
    team = _id_field(required=False)
    study = _id_field(required=False)


class SeriesQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(
        min_value=MIN_STEP, max_value=MAX_STEP, required=False, help_text="Only the points from this step on."
    )
    max_points = serializers.IntegerField(
        min_value=2, max_value=MAX_SERIES_POINTS, default=DEFAULT_MAX_POINTS, help_text="Per series (LTTB)."
    )


@extend_schema_field(
    {
        "type": "object",
        "description": "name (loss/total, loss/feature, val/accuracy, ...) -> [[step, value or null], ...]",
        "additionalProperties": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "number", "nullable": True}, "minItems": 2, "maxItems": 2},
        },
    }
)
class SeriesField(serializers.DictField):
    pass


class SeriesSerializer(serializers.Serializer):
    series = SeriesField()
    last_step = serializers.IntegerField(help_text="Send it back as ?after= for what follows.")
    log = serializers.ListField(child=serializers.CharField(allow_blank=True), help_text="The log's last lines.")
