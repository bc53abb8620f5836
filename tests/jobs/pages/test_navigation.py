"""Objects that link to each other: the teacher page (architecture, origin, the runs that used it, "distil
this"), ids where the CLI needs them, the runs list's search by name, and the run page's config table."""

from __future__ import annotations

import pytest
from django.urls import reverse

from distill.config import applies
from jobs.configs import config_rows, setting_text
from jobs.formatting import compact, number
from jobs.models import Run, Study, Teacher
from tests.jobs.conftest import teacher_row
from tests.jobs.pages.test_runs import ARCH, _run

pytestmark = pytest.mark.django_db


def run_of(team, name: str, teacher: Teacher, **fields) -> Run:
    run = _run(team, name, **fields)
    run.teacher = teacher
    run.save(update_fields=["teacher"])
    return run


# --- the teacher page ------------------------------------------------------------------------------------


def test_the_teacher_page_shows_the_architecture_the_fine_tuning_run_and_the_runs_that_used_it(login, member, team):
    base = teacher_row(team, "minilm-backbone", {**ARCH, "labels": [], "params": 22_713_986})
    finetune = run_of(team, "ft-minilm", base, kind=Run.Kind.TEACHER_FINETUNE)
    tuned = teacher_row(team, "minilm-tuned", ARCH)
    tuned.from_run = finetune
    tuned.save()
    study = Study.objects.create(team=team, name="depth study")
    used = run_of(team, "kd-small", tuned, study=study)

    html = login(member).get(reverse("teacher_detail", args=[tuned.pk])).content.decode()

    assert f"id {tuned.pk}" in html and "4 × 32" in html and "1,000" in html  # shape and exact parameters
    assert "fine-tuned by a run of this workbench" in html
    assert reverse("run_detail", args=[finetune.pk]) in html  # where it came from
    assert reverse("teacher_detail", args=[base.pk]) in html and "minilm-backbone" in html  # and from what
    assert reverse("run_detail", args=[used.pk]) in html and reverse("study_detail", args=[study.pk]) in html
    distil = f"{reverse('wizard')}?teacher={tuned.pk}&amp;kind=kd_feature&amp;task=classification"
    assert f'id="distil-this" href="{distil}"' in html

    backbone = login(member).get(reverse("teacher_detail", args=[base.pk])).content.decode()
    assert 'id="distil-this"' not in backbone and "fine-tune it on labelled data first" in backbone
    assert "22.7 M" in backbone and "a Python package" in backbone  # teacher_row's source is package:<name>


def test_a_viewer_sees_the_teacher_page_without_the_launch_buttons(login, viewer, team):
    teacher = teacher_row(team, "t", ARCH)

    html = login(viewer).get(reverse("teacher_detail", args=[teacher.pk])).content.decode()

    assert "Runs that used it" in html and 'id="teacher-actions"' not in html


def test_another_teams_teacher_is_not_found(login, outsider, team):
    teacher = teacher_row(team, "t", ARCH)

    assert login(outsider).get(reverse("teacher_detail", args=[teacher.pk])).status_code == 404


def test_teacher_names_link_to_the_teacher_page_with_their_ids(login, member, team):
    run = _run(team, "kd-run")
    teacher_url = reverse("teacher_detail", args=[run.teacher_id])
    client = login(member)

    for page in (reverse("runs"), reverse("teachers"), reverse("run_detail", args=[run.pk])):
        assert teacher_url in client.get(page).content.decode(), page
    run_page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert f"id {run.teacher_id}" in run_page and f"id {run.dataset_id}" in run_page and f"id {run.pk}" in run_page


def test_a_fine_tuning_run_links_the_teacher_it_registered_and_offers_to_distil_it(login, member, team):
    finetune = _run(team, "ft", kind=Run.Kind.TEACHER_FINETUNE, status=Run.Status.SUCCEEDED)
    tuned = teacher_row(team, "tuned", ARCH)
    tuned.from_run = finetune
    tuned.save()
    plain = _run(team, "kd")

    html = login(member).get(reverse("run_detail", args=[finetune.pk])).content.decode()

    assert 'id="registered-teacher"' in html and reverse("teacher_detail", args=[tuned.pk]) in html
    assert f"?teacher={tuned.pk}&amp;kind=kd_feature" in html and "Distil this" in html
    assert 'id="registered-teacher"' not in login(member).get(reverse("run_detail", args=[plain.pk])).content.decode()


def test_the_run_page_links_its_study(login, member, team):
    study = Study.objects.create(team=team, name="depth study")
    run = _run(team, "kd", study=study)

    html = login(member).get(reverse("run_detail", args=[run.pk])).content.decode()

    assert f'study <a href="{reverse("study_detail", args=[study.pk])}">depth study</a>' in html


# --- search by name ----------------------------------------------------------------------------------------


def test_the_runs_list_searches_by_name_in_any_case(login, member, team, other_team):
    for name in ("minilm-kd-4x384", "MiniLM-no_kd", "bert-base-ft"):
        _run(team, name)
    _run(other_team, "minilm-secret")
    client = login(member)

    found = client.get(reverse("runs"), {"q": "minilm"})

    assert sorted(r.name for r in found.context["runs"]) == ["MiniLM-no_kd", "minilm-kd-4x384"]
    assert 'name="q" value="minilm"' in found.content.decode()  # the search stays in its box
    assert [r.name for r in client.get(reverse("runs"), {"q": "nothing"}).context["runs"]] == []
    assert len(client.get(reverse("runs"), {"q": "  "}).context["runs"]) == 3  # blank: no filter


# --- the config table ----------------------------------------------------------------------------------------


def full_config(kind: str, task: str = "classification", **extra) -> dict:
    config = {
        "kind": kind,
        "task": task,
        "name": "r",
        "teacher": {"source": "package:x", "dtype": "float32"},
        "data": {"source": "packaged:y", "label_column": "label", "max_length": 128},
        "loss": {"task": 1.0, "output": 1.0, "feature": 1.0, "attention": 1.0, "temperature": 2.0},
        "generation": {"samples": 32},
        "optim": {"lr": 5e-05, "max_steps": None},
        **extra,
    }
    if kind != "teacher_finetune":
        pairs = [{"student": 0, "teacher": 0}, [1, 2, 0.5, 1.0]]  # as stored, and the YAML shorthand
        config["student"] = {"layers": 2, "layer_map": pairs, "map_embeddings": True}
    return config


def keys(config: dict) -> set[str]:
    return {row["key"] for row in config_rows(config)}


def test_the_config_table_shows_only_what_the_kind_and_task_read():
    feature = keys(full_config("kd_feature"))
    assert {"loss.feature", "loss.attention", "loss.temperature", "student.layer_map", "data.label_column"} <= feature
    assert not any(key.startswith("generation") for key in feature)  # classification generates nothing

    no_kd = keys(full_config("no_kd"))
    assert "loss.task" in no_kd and "student.layers" in no_kd
    assert not {"loss.output", "loss.feature", "loss.attention", "loss.temperature", "student.layer_map"} & no_kd

    finetune = keys(full_config("teacher_finetune", lora={"rank": 8}))
    assert "lora.rank" in finetune and "teacher.dtype" not in finetune and "loss.output" not in finetune

    lm = keys(full_config("kd_logits", task="causal_lm"))
    assert "generation.samples" in lm and "data.label_column" not in lm and "loss.temperature" in lm


def test_the_config_table_writes_values_as_text_not_python():
    rows = {row["key"]: row["value"] for row in config_rows(full_config("kd_feature"))}

    assert rows["student.layer_map"] == "0→0, 1→2 (0.5, 1)"
    assert rows["student.map_embeddings"] == "yes" and rows["optim.max_steps"] == "—"
    assert rows["optim.lr"] == "5e-05" and rows["data.max_length"] == "128"
    assert [r["section"] for r in config_rows(full_config("kd_feature"))][:2] == ["", ""]  # kind, task first
    assert setting_text(["perplexity", "bleu"]) == "perplexity, bleu" and setting_text([]) == "none"


def test_an_unknown_kind_keeps_every_setting():
    assert applies("loss.attention", "some_future_kind", "classification")
    assert not applies("loss.attention", "no_kd", "classification")


# --- numbers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (22713986, 4, "22,713,986"),
        (0.812549, 4, "0.8125"),
        (1234.56, 4, "1,235"),
        (12.5, 3, "12.5"),
        (0.00005, 4, "5e-05"),
        (0, 4, "0"),
        (None, 4, "—"),
        ("", 4, "—"),
        ("n/a", 4, "n/a"),
        (True, 4, "True"),
    ],
)
def test_number_separates_thousands_and_keeps_significant_digits(value, digits, text):
    assert number(value, digits) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(22_713_986, "22.7 M"), (410_512, "410.5 k"), (1_500_000_000, "1.5 B"), (950, "950"), (None, "—")],
)
def test_compact_writes_counts_in_a_few_characters(value, text):
    assert compact(value) == text
