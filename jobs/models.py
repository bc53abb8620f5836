"""kdweb's data: teams and their teachers, data sets, runs, metric points, evaluations and artifacts.

Every object belongs to a team; who may see or change it is decided in ``jobs.permissions`` alone.
A run's configuration is the engine's own config (``distill.config.RunConfig``) stored as JSON.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from distill import timing


def new_token() -> str:
    """256 random bits, URL-safe: share links and invitations are found by this alone."""
    return secrets.token_urlsafe(32)


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"
        VIEWER = "viewer"  # reads only: cannot launch, cancel or register

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]

    @property
    def can_write(self) -> bool:
        return self.role != self.Role.VIEWER


class Teacher(models.Model):
    class Task(models.TextChoices):
        CLASSIFICATION = "classification", "text classification"
        CAUSAL_LM = "causal_lm", "causal language modelling"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="teachers")
    name = models.CharField(max_length=100)
    source = models.CharField(max_length=500, help_text="package:<pip-name>, a model folder, or a hub id")
    architecture = models.JSONField(help_text="distill.teachers.Architecture as a dict")
    task = models.CharField(
        max_length=20,
        choices=Task.choices,
        default=Task.CLASSIFICATION,
        help_text="what it models, read from its config: the run tasks it can teach (RunConfig.task)",
    )
    hf_config = models.JSONField(
        default=dict,
        blank=True,
        help_text="its transformers config as read at registration, so pages never open the source again",
    )
    from_run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    archived = models.BooleanField(default=False, help_text="hidden from the default lists; its URL still reads")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="unique_teacher_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def labels(self) -> list[str]:
        """The labels of its task head; empty for a backbone that must be fine-tuned first."""
        return list(self.architecture.get("labels") or [])


class DatasetSpec(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=100)
    source = models.CharField(max_length=500, help_text="packaged:<name>, a file path, or hf:<id>")
    upload = models.FileField(upload_to="uploads/%Y/%m/", blank=True)
    text_column = models.CharField(max_length=100, default="text")
    label_column = models.CharField(max_length=100, default="label")
    labels = models.JSONField(default=list)
    sizes = models.JSONField(default=dict, help_text="rows per split")
    preview = models.JSONField(default=list, help_text="the first rows, for the page")
    archived = models.BooleanField(default=False, help_text="hidden from the default lists; its URL still reads")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="unique_dataset_name")]
        verbose_name = "data set"

    def __str__(self) -> str:
        return self.name

    def data_config(self) -> dict:
        """The ``data`` section of an engine config for this set (the run adds max length and limits)."""
        return {"source": self.source, "text_column": self.text_column, "label_column": self.label_column}


class Study(models.Model):
    """Runs that are compared with each other: the full method and its baselines (``kd_feature``,
    ``kd_logits``, ``no_kd``, optional ablations) of one student shape, data, budget and seeds."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="studies")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    archived = models.BooleanField(default=False, help_text="hidden from the default lists; its URL still reads")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Run(models.Model):
    class Kind(models.TextChoices):
        TEACHER_FINETUNE = "teacher_finetune", "teacher fine-tuning"
        KD_FEATURE = "kd_feature", "feature-alignment KD"
        KD_LOGITS = "kd_logits", "logits-only KD"
        NO_KD = "no_kd", "student without KD"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    # may have stopped with a checkpoint: "resume" continues the same run where it stopped (a failed run
    # only if it has one, services.run_resume)
    RESUMABLE = (Status.FAILED, Status.CANCELLED, Status.INTERRUPTED)

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="runs")
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    archived = models.BooleanField(default=False, help_text="hidden from the default lists; its URL still reads")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    teacher = models.ForeignKey(Teacher, on_delete=models.PROTECT, related_name="runs")
    dataset = models.ForeignKey(DatasetSpec, on_delete=models.PROTECT, related_name="runs")
    config = models.JSONField(help_text="distill.config.RunConfig, validated by the engine")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    step = models.IntegerField(default=0)
    total_steps = models.IntegerField(default=0)
    eta_s = models.FloatField(null=True, blank=True)
    phase = models.CharField(max_length=12, blank=True, help_text="what the worker does: distill.callbacks.PHASES")
    phase_progress = models.FloatField(default=0.0, help_text="the share of the phase done, 0 to 1")
    error = models.TextField(blank=True)
    queue = models.CharField(max_length=100)
    host = models.CharField(max_length=200, blank=True)
    celery_task_id = models.CharField(max_length=100, blank=True)
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="when the broker took its message; unset while queued: not sent yet"
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False, help_text="read by the worker's heartbeat")
    attempts = models.IntegerField(default=0, help_text="times a worker claimed the run (1 + resumes)")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def is_resumable(self) -> bool:
        return self.status in self.RESUMABLE

    @property
    def waiting_for_broker(self) -> bool:
        """Queued, but its message never reached the broker (it was down): ``manage.py watchdog`` sends it."""
        return self.status == self.Status.QUEUED and self.enqueued_at is None

    @property
    def student_shape(self) -> str:
        s = self.config.get("student")
        if not s:
            return "—"
        arch = self.teacher.architecture
        return f"{s['layers']} x {s.get('hidden_size') or arch['hidden_size']}"


class MetricPoint(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="points")
    name = models.CharField(max_length=50)
    step = models.IntegerField()
    value = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name", "step"], name="one_point_per_step")]


class LogLine(models.Model):
    """One line of a run's log (worker and service events), for the log tail of the run page."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="log_lines")
    created_at = models.DateTimeField(auto_now_add=True)
    text = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["run", "id"])]


class Evaluation(models.Model):
    """Final measurements of one model of a run (the trained model, or the teacher) on one split."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="evaluations")
    role = models.CharField(max_length=10, help_text="student or teacher")
    split = models.CharField(max_length=20)
    metrics = models.JSONField()
    params = models.BigIntegerField()
    bytes = models.BigIntegerField(null=True)
    latency = models.JSONField(help_text="batch size -> median ms, throughput, threads")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "role", "split"], name="one_evaluation")]


class Artifact(models.Model):
    class Kind(models.TextChoices):
        STUDENT = "student", "exported model (zip)"
        CHECKPOINT = "checkpoint"
        REPORT = "report"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    path = models.CharField(max_length=500, help_text="name in the default storage")
    bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)


class Measurement(models.Model):
    """The speed of a study's teacher and students (or of any runs compared) measured side by side: one worker
    task loads them all and times them alternately in one process (``distill.side_by_side``). The scorecard's ×
    faster comes from here, never from dividing figures measured in different runs.

    ``result`` is ``SideBySide.as_dict()``: the conditions (host, threads, load, ``heavy_load``) and one entry
    per model, each with ``run`` (the run's id; None for the teacher). Written once and always read whole, so
    one JSON document rather than a table of rows; ``runs`` says which runs it covers, to find it from a
    comparison of runs."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    PENDING = (Status.QUEUED, Status.RUNNING)
    # a measurement running this much longer than its time cap lost its worker (killed, host down)
    STALE_MARGIN_S = 600

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="measurements")
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.CASCADE, related_name="measurements")
    runs = models.ManyToManyField(Run, related_name="measurements")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    queue = models.CharField(max_length=100)
    host = models.CharField(max_length=200, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="distill.side_by_side.SideBySide.as_dict()")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="when a worker claimed it")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    @property
    def is_pending(self) -> bool:
        """Queued, or running on a worker that may still finish it (within its time cap and a margin)."""
        if self.status == self.Status.RUNNING and self.started_at is not None:
            limit = settings.KDWEB_MEASURE_CAP_S + self.STALE_MARGIN_S
            return (timezone.now() - self.started_at).total_seconds() < limit
        return self.status in self.PENDING


class Invitation(models.Model):
    """An invitation into a team, by e-mail, for someone who may not have an account yet: the link
    ``/invites/<token>/`` is the secret (mailed to the address, shown to the inviter); the first one to use it
    (logged in, or signing up on its page) joins with ``role``, once, within ``KDWEB_INVITATION_DAYS``."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token = models.CharField(max_length=64, unique=True, default=new_token)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accepted_at = models.DateTimeField(null=True, blank=True)

    @property
    def expires_at(self) -> datetime:
        """The link works until then: ``KDWEB_INVITATION_DAYS`` after it was made."""
        return self.created_at + timedelta(days=settings.KDWEB_INVITATION_DAYS)


class ShareLink(models.Model):
    """A public, read-only link to one run or one study: unguessable, revocable, optionally expiring."""

    token = models.CharField(max_length=64, unique=True, default=new_token)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="share_links")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="share_links")
    study = models.ForeignKey(Study, null=True, blank=True, on_delete=models.CASCADE, related_name="share_links")
    allow_downloads = models.BooleanField(default=False, help_text="the exported students may be downloaded")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(run__isnull=False, study__isnull=True)
                | models.Q(run__isnull=True, study__isnull=False),
                name="share_link_one_target",
            )
        ]

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


class StepTime(models.Model):
    """What a finished run measured on its worker: seconds per optimizer step and per finish phase, beside the
    engine's analytic figures for the same run (``distill.timing``). An estimate scales its own analytic figures
    by the ratios of the nearest record (``selectors.step_time_nearest``): same teacher and task first, then the
    closest kind, student shape, batch, length and queue."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="step_time")
    teacher = models.ForeignKey(Teacher, on_delete=models.CASCADE, related_name="+")
    task = models.CharField(max_length=20)
    kind = models.CharField(max_length=20, choices=Run.Kind.choices)
    student_layers = models.IntegerField(null=True, blank=True, help_text="None when the teacher was fine-tuned")
    student_hidden = models.IntegerField(null=True, blank=True)
    batch_size = models.IntegerField()
    max_length = models.IntegerField()
    host = models.CharField(max_length=200)
    queue = models.CharField(max_length=100)
    measured = models.JSONField(help_text="seconds: step_s and each finish phase (distill.callbacks.FINISH_PHASES)")
    analytic = models.JSONField(help_text="the engine's analytic seconds of the same, at distill.timing.CPU_FLOPS")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["teacher", "task"])]

    def ratios(self) -> dict[str, float]:
        """Measured / analytic seconds of each part both hold (step_s, evaluating, measuring, exporting)."""
        return timing.ratios(self.measured, self.analytic)
