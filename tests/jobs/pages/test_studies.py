"""Studies: a run launched with its baselines, the scorecard that compares them, and any runs compared.

Runs are created through the services (their Celery tasks captured on commit, never sent); the final
measurements a worker would store are written as ``Evaluation`` rows directly, so every number of the
scorecard can be checked against a hand computation.
"""

from __future__ import annotations

import csv
import io
import statistics

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from jobs import scorecard, selectors, services
from jobs.models import Evaluation, Measurement, MetricPoint, Run, Study
from tests.jobs.conftest import KD_SECTIONS, enqueued, teacher_row
from tests.jobs.wizard.test_wizard import url, walk

TEACHER = {"acc": 0.9, "params": 4_000, "bs1": 8.0, "bs32": 40.0}


@pytest.fixture
def make_study(owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks):
    """``make_study(ablations=..., seeds=...)``: a study of the tiny teacher on the reviews, nothing enqueued."""

    def make(**kwargs) -> Study:
        options = {"name": "tiny", "sections": KD_SECTIONS, "ablations": (), "seeds": (0,), **kwargs}
        with django_capture_on_commit_callbacks(execute=False):
            return services.study_create(user=owner, teacher=tiny_teacher, dataset=tiny_dataset, **options)

    return make


def evaluate(run: Run, accuracy: float, *, params: int = 1_000, bs1: float = 2.0, bs32: float = 10.0, **teacher):
    """Store what a worker stores at the end of a run: the student's and the teacher's measurements."""
    t = {**TEACHER, **teacher}
    run.host, run.status = "gpu-1@lab", Run.Status.SUCCEEDED
    run.save(update_fields=["host", "status"])

    def latency(ms32: float, ms1: float) -> dict:
        return {"bs1": {"median_ms": ms1, "threads": 4}, "bs32": {"median_ms": ms32, "threads": 4}}

    Evaluation.objects.create(
        run=run,
        role="student",
        split="validation",
        metrics={"accuracy": accuracy, "f1": accuracy - 0.1, "mcc": accuracy - 0.2, "loss": 0.5},
        params=params,
        bytes=params * 4,
        latency=latency(bs32, bs1),
    )
    Evaluation.objects.create(
        run=run,
        role="teacher",
        split="validation",
        metrics={"accuracy": t["acc"], "f1": 0.8, "mcc": 0.7, "loss": 0.3},
        params=t["params"],
        bytes=t["params"] * 4,
        latency=latency(t["bs32"], t["bs1"]),
    )


def by_variant(study: Study) -> dict[tuple[str, int], Run]:
    return {(scorecard.run_variant(r.config), r.config["seed"]): r for r in study.runs.all()}


# --- launching a study ---------------------------------------------------------------------------------------


def test_a_study_launches_the_full_method_its_baselines_and_ablations_per_seed(
    owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks
):
    sections = {**KD_SECTIONS, "loss": {"temperature": 3.0}}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        study = services.study_create(
            user=owner,
            teacher=tiny_teacher,
            dataset=tiny_dataset,
            name="lab",
            sections=sections,
            ablations=["output+attention", "output+feature"],
            seeds=[0, 1, 1],
        )
    runs = by_variant(study)
    variants = ["kd_feature", "output+feature", "output+attention", "kd_logits", "no_kd"]
    assert set(runs) == {(v, s) for v in variants for s in (0, 1)}
    assert enqueued(callbacks) == 10
    assert study.team == tiny_teacher.team and study.created_by == owner
    assert study.description == "kd_feature, output+feature, output+attention, kd_logits, no_kd on reviews; seeds 0, 1"
    kinds = {key: run.kind for key, run in runs.items()}
    assert kinds[("output+feature", 0)] == kinds[("output+attention", 1)] == "kd_feature"
    assert kinds[("kd_logits", 0)] == "kd_logits" and kinds[("no_kd", 1)] == "no_kd"
    assert runs[("output+feature", 0)].config["loss"]["attention"] == 0
    assert runs[("output+feature", 0)].config["loss"]["feature"] == 1
    assert runs[("output+attention", 0)].config["loss"]["feature"] == 0
    assert runs[("kd_feature", 1)].name == "lab · kd_feature · seed 1"
    for run in runs.values():  # the same shape, data, budget and queue; only kind, weights, seed, name differ
        assert run.config["student"]["layers"] == 2 and run.config["optim"]["max_steps"] == 4
        assert run.config["data"]["max_length"] == 24 and run.config["loss"]["temperature"] == 3.0
        assert run.queue == runs[("kd_feature", 0)].queue


def test_a_study_is_created_whole_or_not_at_all(make_study):
    # no task weight: fine for the KD runs, but no_kd would train on nothing
    with pytest.raises(ValidationError) as caught:
        make_study(sections={**KD_SECTIONS, "loss": {"task": 0.0}})
    assert caught.value.message_dict == {"loss": ["no_kd, seed 0: every term used by kind no_kd has weight 0"]}
    assert not Study.objects.exists() and not Run.objects.exists()
    with pytest.raises(ValidationError) as caught:
        make_study(ablations=["output-only"])
    assert "ablations" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        make_study(seeds=[])
    assert "seeds" in caught.value.message_dict
    # an ablation of a term the full method already weighs 0 would train the full method twice
    with pytest.raises(ValidationError) as caught:
        make_study(sections={**KD_SECTIONS, "loss": {"attention": 0.0}}, ablations=["output+feature"])
    assert caught.value.message_dict == {
        "ablations": [
            "output+feature switches the attention term off, and its weight is already 0: the run would repeat "
            "the full method."
        ]
    }
    assert not Study.objects.exists() and not Run.objects.exists()


def test_a_long_study_name_is_shortened_in_its_runs_names(make_study):
    study = make_study(name="x" * 100)
    assert {len(r.name) for r in study.runs.all()} == {100}
    assert all(r.name.endswith(" · seed 0") for r in study.runs.all())


def test_viewers_cannot_launch_a_study(viewer, tiny_teacher, tiny_dataset):
    with pytest.raises(PermissionDenied):
        services.study_create(
            user=viewer, teacher=tiny_teacher, dataset=tiny_dataset, name="v", sections=KD_SECTIONS, seeds=[0]
        )
    assert not Study.objects.exists()


# --- the scorecard -------------------------------------------------------------------------------------------


def test_the_scorecard_compares_each_student_with_its_teacher(make_study):
    study = make_study(ablations=["output+feature"])
    runs = by_variant(study)
    evaluate(runs[("kd_feature", 0)], 0.85, params=1_000, bs1=2.0, bs32=8.0)
    evaluate(runs[("output+feature", 0)], 0.87, params=1_000, bs1=2.0, bs32=8.0)
    evaluate(runs[("kd_logits", 0)], 0.80, params=1_000, bs1=4.0, bs32=10.0, acc=0.92)  # its teacher measured higher
    # no_kd still queued: a row without numbers

    card = scorecard.study_scorecard(selectors.scorecard_runs(study.runs.all()))
    rows = {row["variant"]: row for row in card["rows"]}
    assert [row["variant"] for row in card["rows"]] == ["kd_feature", "output+feature", "kd_logits", "no_kd"]
    assert card["metrics"] == ["accuracy", "f1", "mcc"] and card["primary"] == "accuracy"
    assert rows["kd_feature"]["retention"] == pytest.approx(0.85 / 0.9)
    assert rows["kd_logits"]["retention"] == pytest.approx(0.80 / 0.92)  # against the teacher of its own run
    assert rows["kd_feature"]["smaller"] == pytest.approx(4.0)
    # speed comes from a side-by-side measurement only: none yet, so no × faster from the in-run latencies
    assert rows["kd_feature"]["faster_bs1"] is rows["kd_logits"]["faster_bs32"] is rows["kd_feature"]["bs1_ms"] is None
    assert rows["kd_feature"]["mb"] == pytest.approx(0.004)
    assert rows["no_kd"]["measured"] is False and rows["no_kd"]["retention"] is None
    assert [row["best"] for row in card["rows"]] == [False, True, False, False]  # output+feature, 0.87
    assert card["groups"] == []  # one seed per variant
    # the teacher shown is the one measured at the end of the full method's run
    assert card["teacher"]["run"] == runs[("kd_feature", 0)] and card["teacher"]["metrics"]["accuracy"] == 0.9
    assert card["side_by_side"] is None and card["speed_note"] == scorecard.NOT_MEASURED
    assert rows["kd_feature"]["host"] == "gpu-1@lab"
    diff = {d["key"]: d["values"] for d in card["diff"]}
    assert diff["kind"] == ["kd_feature", "kd_feature", "kd_logits", "no_kd"]
    assert diff["loss.attention"] == [1.0, 0.0, None, None]  # the baselines have no attention term
    assert "name" not in diff and "student.layers" not in diff


def test_several_seeds_give_each_variant_its_mean_and_spread(make_study):
    study = make_study(seeds=[0, 1, 2])
    runs = by_variant(study)
    accuracies = {"kd_feature": [0.80, 0.84, 0.88], "kd_logits": [0.81, 0.82, 0.83], "no_kd": [0.70, 0.75, 0.71]}
    for variant, values in accuracies.items():
        for seed, accuracy in enumerate(values):
            evaluate(runs[(variant, seed)], accuracy, bs1=1.0 + seed)

    card = scorecard.study_scorecard(selectors.scorecard_runs(study.runs.all()))
    groups = {g["variant"]: g for g in card["groups"]}
    assert list(groups) == ["kd_feature", "kd_logits", "no_kd"]
    feature = groups["kd_feature"]
    assert feature["n"] == 3 and feature["seeds"] == [0, 1, 2]
    assert feature["stats"]["accuracy"]["mean"] == pytest.approx(0.84)
    assert feature["stats"]["accuracy"]["std"] == pytest.approx(statistics.stdev([0.80, 0.84, 0.88]))
    assert feature["stats"]["retention"]["mean"] == pytest.approx(0.84 / 0.9)
    assert "bs1_ms" not in feature["stats"]  # in-run latencies stay on each run's page
    assert [g["best"] for g in card["groups"]] == [True, False, False]
    best = [row for row in card["rows"] if row["best"]]
    assert [(b["variant"], b["seed"]) for b in best] == [("kd_feature", 2)]


def test_the_study_page_shows_the_scorecard_plots_and_downloads(login, viewer, make_study):
    study = make_study(seeds=[0, 1])
    runs = by_variant(study)
    for (variant, seed), run in runs.items():
        evaluate(run, {"kd_feature": 0.86, "kd_logits": 0.82, "no_kd": 0.75}[variant] + seed / 100)
        MetricPoint.objects.bulk_create(
            [
                MetricPoint(run=run, name=n, step=s, value=1.0 / s)
                for n in ("loss/total", "val/accuracy")
                for s in (1, 2)
            ]
        )
    page = login(viewer).get(reverse("study_detail", args=[study.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="run-row') == 6 and 'data-role="teacher"' in html
    assert 'class="run-row best"' in html and html.count("best-tag") == 2  # the best run and the best variant
    assert "Speed: not measured side by side yet." in html
    assert "0.865 ± 0.007" in html  # kd_feature over seeds 0 and 1: 0.86, 0.87
    assert "96.7%" in html  # 0.87 / 0.9
    assert "4.0×" in html
    assert 'id="study-plots"' in html and "study_charts.js" in html and "plotly.min.js" in html
    plots = page.context["plots"]
    assert len(plots["points"]) == 6 and plots["teacher"]["params"] == 4_000
    assert set(plots["curves"]) == {"loss/total", "val/accuracy"} and len(plots["curves"]["loss/total"]) == 6
    assert reverse("study_scorecard_csv", args=[study.pk]) in html
    assert 'id="config-diff"' in html and "<code>seed</code>" in html
    assert 'id="share-links"' not in html  # viewers cannot share


def test_the_study_page_links_each_students_zip(login, owner, make_study):
    study = make_study()
    run = by_variant(study)[("kd_feature", 0)]
    evaluate(run, 0.8)
    artifact = run.artifacts.create(kind="student", path="runs/x/export.zip", bytes=2048, sha256="0" * 64)
    html = login(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    assert reverse("artifact_download", args=[run.pk, artifact.pk]) in html
    assert 'id="share-links"' in html and reverse("share_link_create", args=["study", study.pk]) in html


def test_the_scorecard_downloads_as_csv(login, member, make_study):
    study = make_study(seeds=[0, 1])
    runs = by_variant(study)
    for (_, seed), run in runs.items():
        evaluate(run, 0.8 + seed / 10, bs1=2.0)
    response = login(member).get(reverse("study_scorecard_csv", args=[study.pk]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert 'filename="tiny-scorecard.csv"' in response["Content-Disposition"]
    table = list(csv.reader(io.StringIO(response.content.decode())))
    header, *lines = table
    assert header[:10] == ["run", "run id", "variant", "seed", "status", "role", "split", "accuracy", "f1", "mcc"]
    assert header[10:] == [
        "% of teacher",
        "params",
        "MB",
        "x smaller",
        "latency bs1 (ms)",
        "bs1 p10 (ms)",
        "bs1 p90 (ms)",
        "latency bs32 (ms)",
        "bs32 p10 (ms)",
        "bs32 p90 (ms)",
        "x faster bs1",
        "x faster bs32",
        "teacher bs1 (ms)",
        "teacher bs32 (ms)",
        "peak MB",
        "trained on",
        "measured on",
        "threads",
        "load average",
        "other processes (cores)",
        "heavy load",
        "best",
    ]
    assert len(lines) == 6 + 1 + 3 * 2  # runs, the teacher, mean and std per variant
    first = dict(zip(header, lines[0], strict=True))
    assert first["run"] == "tiny · kd_feature · seed 0" and first["accuracy"] == "0.8"
    assert first["% of teacher"] == "88.89" and first["x smaller"] == "4"
    assert first["x faster bs1"] == first["latency bs1 (ms)"] == ""  # not measured side by side yet
    assert first["trained on"] == "gpu-1@lab" and first["measured on"] == first["heavy load"] == ""
    teacher = dict(zip(header, lines[6], strict=True))
    assert teacher["variant"] == "teacher" and teacher["accuracy"] == "0.9" and teacher["params"] == "4000"
    mean = dict(zip(header, lines[7], strict=True))
    assert mean["run"] == "kd_feature (mean of 2 seeds)" and mean["accuracy"] == "0.85"
    std = dict(zip(header, lines[8], strict=True))
    assert float(std["accuracy"]) == pytest.approx(statistics.stdev([0.8, 0.9]))
    assert [line[-1] for line in lines].count("yes") == 2  # the best run and the best variant


def test_other_teams_studies_answer_404(login, outsider, make_study):
    study = make_study()
    client = login(outsider)
    for name in ("study_detail", "study_scorecard_csv"):
        assert client.get(reverse(name, args=[study.pk])).status_code == 404
    assert "tiny" not in client.get(reverse("studies")).content.decode()


def test_the_studies_list(login, viewer, make_study):
    study = make_study()
    html = login(viewer).get(reverse("studies")).content.decode()
    assert reverse("study_detail", args=[study.pk]) in html and "kd_feature, kd_logits, no_kd on reviews" in html
    assert f'href="{reverse("studies")}">Studies</a>' in html  # the nav link


# --- comparing any runs ---------------------------------------------------------------------------------------


def test_any_runs_compare_on_the_same_page(login, owner, make_study):
    runs = by_variant(make_study())
    evaluate(runs[("kd_feature", 0)], 0.85)
    evaluate(runs[("no_kd", 0)], 0.75)
    ids = f"{runs[('kd_feature', 0)].pk},{runs[('no_kd', 0)].pk}"
    client = login(owner)
    page = client.get(f"{reverse('compare')}?runs={ids}")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Comparison of 2 runs" in html and html.count('class="run-row') == 2
    # the runs list's checkboxes send ?runs=1&runs=2: the same page
    checked = client.get(reverse("compare"), {"runs": ids.split(",")})
    assert checked.content.decode().count('class="run-row') == 2
    table = list(csv.reader(io.StringIO(client.get(f"{reverse('compare_csv')}?runs={ids}").content.decode())))
    assert len(table) == 1 + 2 + 1


@pytest.mark.parametrize("name", ['=HYPERLINK("https://evil.example","x")', "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_start_with_a_quote(login, owner, make_study, name):
    runs = by_variant(make_study())
    run = runs[("kd_feature", 0)]
    Run.objects.filter(pk=run.pk).update(name=name)
    evaluate(run, 0.85)
    table = list(csv.reader(io.StringIO(login(owner).get(f"{reverse('compare_csv')}?runs={run.pk}").content.decode())))
    assert table[1][0] == f"'{name}"
    assert table[1][table[0].index("accuracy")] == "0.85"  # numbers stay numbers


def test_comparing_runs_of_another_team_answers_404(login, owner, outsider, other_team, tiny_teacher, make_study):
    mine = by_variant(make_study())[("kd_feature", 0)]
    foreign_teacher = teacher_row(other_team, "foreign", tiny_teacher.architecture)
    theirs = Run.objects.create(
        team=other_team,
        name="theirs",
        kind="no_kd",
        teacher=foreign_teacher,
        dataset=mine.dataset,  # the row only: what matters is the run's team
        config=mine.config,
        queue="q",
    )
    client = login(owner)
    assert client.get(f"{reverse('compare')}?runs={mine.pk},{theirs.pk}").status_code == 404
    assert client.get(f"{reverse('compare_csv')}?runs={mine.pk},{theirs.pk}").status_code == 404
    assert client.get(f"{reverse('compare')}?runs={mine.pk},999999").status_code == 404
    assert client.get(f"{reverse('compare')}?runs=abc").status_code == 404
    assert client.get(reverse("compare")).status_code == 404
    assert login(outsider).get(f"{reverse('compare')}?runs={theirs.pk}").status_code == 200


def test_the_runs_list_selects_runs_to_compare(login, owner, make_study):
    runs = by_variant(make_study())
    html = login(owner).get(reverse("runs")).content.decode()
    assert f'<form id="compare-form" class="compare-selected" method="get" action="{reverse("compare")}">' in html
    for run in runs.values():
        assert f'name="runs" value="{run.pk}" form="compare-form"' in html


# --- the wizard -----------------------------------------------------------------------------------------------


def test_the_wizard_launches_a_study_by_default(
    login, owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks
):
    client = login(owner)
    walk(client, tiny_teacher, tiny_dataset)
    review = client.get(url("review")).content.decode()
    assert 'id="id_baselines" checked' in review and 'value="output+feature"' in review
    assert 'name="seeds" value="7"' in review  # the training step's seed
    data = {"name": "lab", "baselines": "on", "ablations": ["output+attention"], "seeds": "3, 4"}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(url("review"), data)
    study = Study.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("study_detail", args=[study.pk])
    assert set(by_variant(study)) == {
        (v, s) for v in ("kd_feature", "output+attention", "kd_logits", "no_kd") for s in (3, 4)
    }
    assert enqueued(callbacks) == 8
    assert by_variant(study)[("kd_logits", 3)].config["optim"]["batch_size"] == 16  # the wizard's choices


def test_the_wizard_launches_one_run_without_baselines(
    login, owner, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks
):
    client = login(owner)
    walk(client, tiny_teacher, tiny_dataset)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(url("review"), {"name": "single", "seeds": "0,1"})
    run = Run.objects.get()
    assert response["Location"] == reverse("run_detail", args=[run.pk]) and run.study is None
    assert not Study.objects.exists()


def test_the_wizard_takes_bad_seeds_back_to_the_review(login, owner, tiny_teacher, tiny_dataset):
    client = login(owner)
    walk(client, tiny_teacher, tiny_dataset)
    response = client.post(url("review"), {"name": "lab", "baselines": "on", "seeds": "0, one"})
    assert response["Location"] == url("review")
    page = client.get(url("review"))
    assert page.context["form"].errors["seeds"] == ["Seeds are whole numbers separated by commas, e.g. 0,1,2."]
    assert page.context["form"]["baselines"].value() is True
    assert not Run.objects.exists()


def test_fine_tuning_offers_no_baselines(login, owner, tiny_backbone, tiny_dataset):
    client = login(owner)
    walk(client, tiny_backbone, tiny_dataset, kind="teacher_finetune")
    review = client.get(url("review")).content.decode()
    assert 'name="baselines"' not in review and "Launch the run" in review


# --- speed measured side by side -------------------------------------------------------------------------------


def store_measurement(study: Study | None, runs: list[Run], **conditions) -> Measurement:
    """A succeeded side-by-side measurement as the worker stores it: teacher 6 ms (bs1) and 30 ms (bs32),
    the students 2 and 10 ms, then 3 and 15 ms..."""

    def timing(median: float) -> dict:
        return {"median_ms": median, "p10_ms": median * 0.9, "p90_ms": median * 1.2, "throughput": 1.0, "samples": 9}

    models = [{"run": None, "params": 4000, "peak_mb": 50.0, "latency": {"bs1": timing(6.0), "bs32": timing(30.0)}}]
    for n, run in enumerate(runs):
        latency = {"bs1": timing(2.0 + n), "bs32": timing(10.0 + 5 * n)}
        models.append({"run": run.pk, "params": 1000, "peak_mb": 20.0, "latency": latency})
    result = {
        "models": models,
        "host": "bench@box",
        "threads": 1,
        "seq_len": 24,
        "rounds": 9,
        "stable": True,
        "seconds": 4.0,
        "cpus": 2,
        "load_max": 0.4,
        "foreign_cores": 0.1,
        "heavy_load": False,
        **conditions,
    }
    measurement = Measurement.objects.create(
        team=runs[0].team, study=study, queue="q", status=Measurement.Status.SUCCEEDED, host="bench@box", result=result
    )
    measurement.runs.set(runs)
    return measurement


def test_the_study_page_takes_every_speed_from_one_side_by_side_measurement(login, owner, make_study):
    study = make_study()
    runs = by_variant(study)
    ordered = [runs[("kd_feature", 0)], runs[("kd_logits", 0)], runs[("no_kd", 0)]]
    for run in ordered:
        evaluate(run, 0.8, bs1=1.0)  # in-run: 8 ms teacher / 1 ms student, which the scorecard must not divide
    store_measurement(study, ordered)
    page = login(owner).get(reverse("study_detail", args=[study.pk]))
    html = page.content.decode()
    assert "Speed measured <strong>side by side</strong> on <strong>bench@box</strong>" in html
    assert 'data-heavy-load="false"' in html and 'id="heavy-load"' not in html
    assert html.count('data-teacher-bs1="6.0" data-teacher-bs32="30.0"') == 3  # the same teacher on every row
    rows = {row["run"].pk: row for row in page.context["card"]["rows"]}
    assert [rows[r.pk]["faster_bs1"] for r in ordered] == [pytest.approx(3.0), pytest.approx(2.0), pytest.approx(1.5)]
    assert "3.0×" in html and '<span class="sub spread">1.8–2.4</span>' in html  # p10-p90 of 2 ms
    assert 'id="measure-button"' in html and "Measure side by side again" in html

    table = list(
        csv.reader(io.StringIO(login(owner).get(reverse("study_scorecard_csv", args=[study.pk])).content.decode()))
    )
    first = dict(zip(table[0], table[1], strict=True))
    assert first["x faster bs1"] == "3" and first["teacher bs1 (ms)"] == "6" and first["bs1 p90 (ms)"] == "2.4"
    assert first["measured on"] == "bench@box" and first["threads"] == "1" and first["heavy load"] == "no"


def test_a_measurement_under_heavy_load_is_flagged_on_the_page(login, viewer, make_study):
    study = make_study()
    run = by_variant(study)[("kd_feature", 0)]
    evaluate(run, 0.8)
    store_measurement(study, [run], heavy_load=True, foreign_cores=1.3)
    html = login(viewer).get(reverse("study_detail", args=[study.pk])).content.decode()
    assert 'data-heavy-load="true"' in html and 'id="heavy-load"' in html and "1.30 cores busy" in html
    assert 'id="measure-button"' not in html  # viewers cannot ask for a measurement


def test_measure_buttons_queue_a_measurement_or_say_why_not(
    login, owner, viewer, make_study, django_capture_on_commit_callbacks
):
    study = make_study()
    runs = by_variant(study)
    client = login(owner)
    answer = client.post(reverse("study_measure", args=[study.pk]), follow=True)
    assert services.NOTHING_TO_MEASURE in answer.content.decode() and not Measurement.objects.exists()

    run = runs[("kd_feature", 0)]
    evaluate(run, 0.8)
    run.artifacts.create(kind="student", path="runs/x/export.zip", bytes=1, sha256="0" * 64)
    with django_capture_on_commit_callbacks(execute=False):
        answer = client.post(reverse("study_measure", args=[study.pk]), follow=True)
    html = answer.content.decode()
    measurement = Measurement.objects.get()
    assert measurement.study == study and list(measurement.runs.all()) == [run] and measurement.created_by == owner
    assert 'id="measuring" data-status="queued"' in html and "Measuring side by side…" in html
    assert 'http-equiv="refresh"' in html and 'id="measure-button"' not in html
    assert login(viewer).post(reverse("study_measure", args=[study.pk])).status_code == 403

    # from the compare page: a measurement of just the compared runs, found again by them
    with django_capture_on_commit_callbacks(execute=False):
        client = login(owner)
        client.post(f"{reverse('compare_measure')}?runs={run.pk}")
    compared = Measurement.objects.get(study=None)
    assert list(compared.runs.all()) == [run]
    Measurement.objects.filter(pk=compared.pk).update(status=Measurement.Status.SUCCEEDED)
    assert selectors.side_by_side(runs=[run])["shown"] == compared
