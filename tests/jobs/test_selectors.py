"""Reads (jobs.selectors) that no page test pins down: teams and their members, invitations and share links,
studies with their counts, a run's log tail and backfill, and the queues workers consume."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from distill.config import parse_config
from jobs import selectors, services
from jobs.models import Invitation, LogLine, MetricPoint, Run, ShareLink, StepTime, Study
from tests.jobs.conftest import KD_SECTIONS


def test_my_teams_carry_my_role_and_their_member_count(owner, member, viewer, team, outsider, other_team):
    assert [(t.name, t.role, t.member_count) for t in selectors.team_list(viewer)] == [("alpha", "viewer", 3)]
    assert [(t.name, t.role) for t in selectors.team_list(outsider)] == [("beta", "owner")]


def test_a_teams_members_are_listed_owners_first_then_by_name(owner, member, viewer, team, outsider):
    services.member_invite(user=owner, team=team, who="oscar")

    assert [(m.user.username, m.role) for m in selectors.team_members(team)] == [
        ("olivia", "owner"),
        ("mateo", "member"),
        ("oscar", "member"),
        ("vera", "viewer"),
    ]


def test_pending_invitations_are_the_unaccepted_ones_newest_first(owner, team):
    first = Invitation.objects.create(team=team, email="a@example.org", invited_by=owner)
    second = Invitation.objects.create(team=team, email="b@example.org", invited_by=owner)
    Invitation.objects.create(team=team, email="c@example.org", invited_by=owner, accepted_at=timezone.now())

    assert list(selectors.invitations_pending(team)) == [second, first]


def test_the_active_links_of_a_run_are_neither_revoked_nor_expired(owner, team, queued_run):
    now = timezone.now()
    links = {
        name: ShareLink.objects.create(team=team, run=queued_run, created_by=owner, **fields)
        for name, fields in {
            "open": {},
            "later": {"expires_at": now + timedelta(days=1)},
            "expired": {"expires_at": now - timedelta(seconds=1)},
            "revoked": {"revoked_at": now},
        }.items()
    }

    assert list(selectors.share_links_active(queued_run)) == [links["later"], links["open"]]
    assert list(selectors.shared_runs(links["open"])) == [queued_run]


@pytest.fixture
def study(owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks) -> Study:
    """A one-seed study of the tiny teacher on the reviews (three runs), nothing sent to a broker."""
    with django_capture_on_commit_callbacks(execute=False):
        return services.study_create(
            user=owner, teacher=tiny_teacher, dataset=tiny_dataset, name="s", sections=KD_SECTIONS, ablations=()
        )


def test_a_studys_runs_are_counted_and_so_are_the_finished_ones(owner, outsider, study):
    study.runs.filter(kind="no_kd").update(status=Run.Status.SUCCEEDED)
    study.runs.filter(kind="kd_logits").update(status=Run.Status.FAILED)

    [listed] = selectors.study_list(owner)

    assert (listed, listed.run_count, listed.finished_count) == (study, 3, 2)
    assert not selectors.study_list(outsider).exists()
    link = ShareLink.objects.create(team=study.team, study=study)
    assert set(selectors.shared_runs(link)) == set(study.runs.all())


def test_the_log_tail_is_the_last_lines_oldest_first_with_the_newest_id(queued_run):
    LogLine.objects.filter(run=queued_run).delete()
    assert selectors.run_log_tail(queued_run) == ([], 0)
    lines = LogLine.objects.bulk_create([LogLine(run=queued_run, text=f"line {i}") for i in range(5)])

    assert selectors.run_log_tail(queued_run, lines=3) == (["line 2", "line 3", "line 4"], lines[-1].pk)


def test_the_backfill_downsamples_each_series_and_nulls_what_is_not_finite(queued_run):
    points = [MetricPoint(run=queued_run, name="loss/task", step=s, value=1.0 / s) for s in range(1, 101)]
    points += [MetricPoint(run=queued_run, name="val/accuracy", step=50, value=float("nan"))]
    MetricPoint.objects.bulk_create(points)

    backfill = selectors.run_backfill(queued_run, max_points=10)

    assert backfill["type"] == "backfill" and backfill["last_step"] == 100
    task = backfill["series"]["loss/task"]
    assert len(task) == 10 and task[0] == [1, 1.0] and task[-1] == [100, 0.01]
    assert backfill["series"]["val/accuracy"] == [[50, None]]
    after = selectors.run_backfill(queued_run, after_step=99)
    assert after["series"] == {"loss/task": [[99, 1.0 / 99], [100, 0.01]]} and after["last_step"] == 100


def test_live_queues_add_the_queues_of_runs_heartbeating_now(queued_run, tiny_teacher, tiny_dataset):
    cache.set(selectors.LIVE_QUEUES_KEY, ["gpu"], 60)  # what workers answered a moment ago
    try:
        Run.objects.filter(pk=queued_run.pk).update(
            status=Run.Status.RUNNING, queue="busy", heartbeat_at=timezone.now()
        )
        assert selectors.live_queues() == ["busy", "gpu"]
        Run.objects.filter(pk=queued_run.pk).update(heartbeat_at=timezone.now() - timedelta(days=1))
        assert selectors.live_queues() == ["gpu"]  # a stale heartbeat: that worker is gone
    finally:
        cache.delete(selectors.LIVE_QUEUES_KEY)


def timed_run(base: Run, queue: str, **record) -> StepTime:
    """A finished copy of ``base`` on ``queue`` with its measured times (``record`` overrides the fields)."""
    run = Run.objects.get(pk=base.pk)
    run.pk, run.queue, run.status = None, queue, Run.Status.SUCCEEDED
    run.save()
    fields = {
        "teacher": base.teacher,
        "task": "classification",
        "kind": "kd_feature",
        "student_layers": 2,
        "student_hidden": base.teacher.architecture["hidden_size"],
        "batch_size": 8,
        "max_length": 24,
        "host": f"celery@{queue}",
        "queue": queue,
        "measured": {"step_s": 2.0, "measuring": 30.0},
        "analytic": {"step_s": 1.0, "measuring": 10.0},
    }
    return StepTime.objects.create(run=run, **(fields | record))


def test_the_nearest_step_time_is_the_closest_shape_kind_and_queue(queued_run):
    cfg = parse_config(queued_run.config)  # kd_feature, 2 blocks, batch 8 x 24 (KD_SECTIONS)
    assert selectors.step_time_nearest(queued_run.teacher, cfg, "cpu") is None  # nothing measured yet: analytic
    far = timed_run(queued_run, "cpu", batch_size=64, max_length=128)
    assert selectors.step_time_nearest(queued_run.teacher, cfg, "cpu") == far  # the only one, however far
    other_kind = timed_run(queued_run, "cpu", kind="no_kd")
    assert selectors.step_time_nearest(queued_run.teacher, cfg, "cpu") == other_kind
    other_queue = timed_run(queued_run, "gpu")
    same = timed_run(queued_run, "cpu", student_layers=3)  # log(3/2) = 0.41 < the other queue's 0.5
    assert selectors.step_time_nearest(queued_run.teacher, cfg, "cpu") == same
    assert selectors.step_time_nearest(queued_run.teacher, cfg, "gpu") == other_queue
    assert same.ratios() == {"step_s": 2.0, "measuring": 3.0}
    assert selectors.step_time_nearest(queued_run.teacher, cfg.model_copy(update={"task": "causal_lm"}), "cpu") is None


def test_queue_workers_count_the_workers_that_answer_and_those_heartbeating(queued_run):
    cache.set(selectors.QUEUE_WORKERS_KEY, {"gpu": 2, "cpu": 1}, 60)  # what workers answered a moment ago
    try:
        assert selectors.queue_workers("gpu") == 2
        assert selectors.queue_workers("busy") == 0
        Run.objects.filter(pk=queued_run.pk).update(
            status=Run.Status.RUNNING, queue="busy", host="celery@a", heartbeat_at=timezone.now()
        )
        assert selectors.queue_workers("busy") == 1  # too busy training to answer, but there
    finally:
        cache.delete(selectors.QUEUE_WORKERS_KEY)


@pytest.mark.django_db
def test_a_studys_runs_build_the_full_methods_cache_in_their_teams_folder_unless_resumed(
    owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks
):
    study = services.study_create(
        user=owner, teacher=tiny_teacher, dataset=tiny_dataset, name="s", sections=KD_SECTIONS, seeds=[0, 1]
    )
    runs = {(run.kind, run.config["seed"]): run for run in study.runs.all()}
    widest = selectors.study_cache_config(runs["kd_logits", 1])
    assert (widest.kind, widest.seed, widest.name) == ("kd_feature", 1, runs["kd_feature", 1].name)
    assert widest.cache_dir == str(selectors.team_cache_dir(tiny_teacher.team_id))
    assert selectors.study_cache_config(runs["no_kd", 0]) is None  # no teacher to cache
    folder = selectors.run_output_dir(runs["kd_logits", 1]) / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{}")
    assert selectors.study_cache_config(runs["kd_logits", 1]) is None  # resumed: its trainer decides
    single = services.run_create(
        user=owner, teacher=tiny_teacher, dataset=tiny_dataset, kind="kd_logits", name="r", sections=KD_SECTIONS
    )
    assert selectors.study_cache_config(single) is None
