"""The new-run wizard, walked with the Django test client against the real database and engine.

The personas, the tiny fine-tuned BERT and its backbone (real model folders, so the engine reads their
configs) and the toy reviews set are the shared fixtures of ``conftest.py``; the local ones are prefixed
``wiz_``. Launching enqueues the Celery task on commit; the tests capture the callback instead of running
it, so no broker message is sent.
"""

from __future__ import annotations

import pytest
import yaml
from django.conf import settings
from django.core.cache import cache
from django.urls import reverse

from distill.config import StudentConfig, parse_config
from distill.students import count_student_parameters, student_config
from distill.teacher_cache import build_for_config
from distill.teachers import load_config
from jobs import selectors, services
from jobs.models import Membership, Run, Study, Teacher
from jobs.wizard import forms
from jobs.wizard.state import BY_SLUG, SESSION_KEY, error_step, steps_for
from tests.jobs.conftest import enqueued, reviews_dataset, teacher_row

# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def wiz_client(login, owner):
    return login(owner)


@pytest.fixture
def wiz_foreign_teacher(other_team, tiny_teacher) -> Teacher:
    """A teacher of the other team, of the tiny BERT's architecture."""
    return teacher_row(other_team, "foreign-bert", tiny_teacher.architecture)


# --- helpers ----------------------------------------------------------------------------------------------


def url(step: str) -> str:
    return reverse("wizard_step", kwargs={"step": step})


def post(client, step: str, data: dict):
    return client.post(url(step), data)


STUDENT = {"layers": 2, "hidden_size": "", "heads": "", "intermediate_size": "", "init": "teacher"}
DATA = {"max_length": 64, "max_train_samples": "", "max_eval_samples": "", "eval_split": "validation"}
TRAINING = {
    "task": 1,
    "output": 1,
    "feature": 1,
    "attention": 1,
    "temperature": 2,
    "feature_variant": "mse",
    "attention_variant": "kl",
    "head_mapping": "group",
    "schedule": "constant",
    "features_first_fraction": 0.3,
    "teacher_cache": "build",
    "teacher_cache_dtype": "float16",
    "top_k": 64,  # causal LMs only: a classifier's form has no such field
    "lr": 1e-4,
    "epochs": 2,
    "max_steps": "",
    "batch_size": 16,
    "grad_accum": 1,
    "warmup_ratio": 0.1,
    "scheduler": "linear",
    "weight_decay": 0.01,
    "seed": 7,
}


def assert_redirects_to(response, step: str) -> None:
    assert response.status_code == 302, getattr(response, "context", None) and response.context["form"].errors
    assert response["Location"] == url(step)


def walk(client, teacher, dataset, kind="kd_feature", until="review", layer_map=None, student=None, training=None):
    """Submit every step up to (not including) ``until`` with valid choices."""
    steps = [s.slug for s in steps_for(kind)]
    forms = {
        "teacher": {"kind": kind, "teacher": teacher.pk},
        "student": student or STUDENT,
        "layer-map": layer_map or {"preset": "uniform", "pairs": "", "map_embeddings": "on"},
        "data": {"dataset": dataset.pk, **DATA},
        "training": training or TRAINING,
        "queue": {"queue": ""},
    }
    for i, step in enumerate(steps[: steps.index(until)]):
        assert_redirects_to(post(client, step, forms[step]), steps[i + 1])


def errors(response, field: str | None = None) -> list[str]:
    form = response.context["form"]
    return form.non_field_errors() if field is None else form.errors.get(field, [])


# --- walking the steps ------------------------------------------------------------------------------------


def test_it_walks_every_step_of_a_kd_feature_run(wiz_client, tiny_teacher, tiny_backbone, tiny_dataset):
    c = wiz_client
    assert_redirects_to(c.get(reverse("wizard")), "teacher")

    page = c.get(url("teacher")).content.decode()
    assert tiny_teacher.name in page and "4 layers × 32 hidden, 4 heads" in page
    assert "backbone — fine-tune first" in page  # the backbone's card
    assert reverse("teachers") in page
    assert_redirects_to(post(c, "teacher", {"kind": "kd_feature", "teacher": tiny_teacher.pk}), "student")

    page = c.get(url("student")).content.decode()
    assert "Student parameters" in page and "Compression" in page
    assert_redirects_to(post(c, "student", STUDENT), "layer-map")

    page = c.get(url("layer-map")).content.decode()
    assert 'id="layermap-svg"' in page and "layermap.js" in page
    custom = {"preset": "custom", "pairs": "[[0, 0, 1, 0], [1, 2, 1, 1], [2, 4, 0.5, 2]]", "map_embeddings": "on"}
    assert_redirects_to(post(c, "layer-map", custom), "data")

    page = c.get(url("data")).content.decode()
    assert f"<strong>{tiny_dataset.name}</strong>" in page and "train 192" in page
    assert all(row["text"] in page for row in tiny_dataset.preview)
    assert reverse("datasets") in page
    assert_redirects_to(post(c, "data", {"dataset": tiny_dataset.pk, **DATA}), "training")

    page = c.get(url("training")).content.decode()
    for name in ("task", "output", "feature", "attention", "temperature", "lr", "seed"):
        assert f'name="{name}"' in page
    assert_redirects_to(post(c, "training", TRAINING), "queue")

    response = c.get(url("queue"))
    assert response.status_code == 200
    assert f"default queue “{settings.CELERY_TASK_DEFAULT_QUEUE}”" in response.content.decode()
    assert_redirects_to(post(c, "queue", {"queue": ""}), "review")

    response = c.get(url("review"))
    page = response.content.decode()
    assert "layer_map:" in page and "kind: kd_feature" in page
    assert "≈" in page and "Compression" in page
    assert response.context["form"]["name"].value() == "tiny-bert-2x32-kd_feature"
    est = response.context["estimate"]
    assert est.teacher_params == tiny_teacher.architecture["params"] and est.total_steps == 2 * 12
    assert not Run.objects.exists()  # nothing is created before Launch


def test_it_launches_the_run_with_the_engine_validated_config(
    wiz_client, team, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks
):
    custom = {"preset": "custom", "pairs": "[[0, 0, 1, 0], [1, 2, 1, 1], [2, 4, 0.5, 2]]", "map_embeddings": "on"}
    walk(wiz_client, tiny_teacher, tiny_dataset, layer_map=custom)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = wiz_client.post(url("review"), {"name": "wiz-first"})
    run = Run.objects.get(name="wiz-first")
    assert response.status_code == 302 and response["Location"] == reverse("run_detail", kwargs={"run_id": run.pk})
    assert enqueued(callbacks) == 1  # the Celery task, enqueued on commit (not sent here)
    # the launch message carries the tag by which the run page's live view drops it once the run runs
    page = wiz_client.get(response["Location"]).content.decode()
    assert '<p class="flash queued-notice warning">“wiz-first” is queued; the broker' in page  # not sent here
    assert (run.kind, run.teacher, run.dataset, run.team) == ("kd_feature", tiny_teacher, tiny_dataset, team)
    assert run.queue == settings.CELERY_TASK_DEFAULT_QUEUE and run.status == Run.Status.QUEUED
    cfg = run.config
    assert cfg["student"]["layers"] == 2 and cfg["student"]["init"] == "teacher"
    assert cfg["student"]["layer_map"] == [
        {"student": 0, "teacher": 0, "feature_weight": 1.0, "attention_weight": 0.0},
        {"student": 1, "teacher": 2, "feature_weight": 1.0, "attention_weight": 1.0},
        {"student": 2, "teacher": 4, "feature_weight": 0.5, "attention_weight": 2.0},
    ]
    assert cfg["optim"]["lr"] == 1e-4 and cfg["optim"]["epochs"] == 2 and cfg["optim"]["batch_size"] == 16
    assert cfg["data"]["max_length"] == 64 and cfg["data"]["source"] == tiny_dataset.source
    assert cfg["teacher"]["source"] == tiny_teacher.source and cfg["seed"] == 7
    # exactly what the engine makes of these choices
    sections = {k: v for k, v in cfg.items() if k in ("student", "loss", "optim", "seed")}
    sections["data"] = {k: cfg["data"][k] for k in ("max_length", "max_train_samples", "max_eval_samples")}
    rebuilt = services.run_config_build(
        kind="kd_feature", teacher=tiny_teacher, dataset=tiny_dataset, name="wiz-first", sections=sections
    )
    assert rebuilt.model_dump(mode="json") == cfg
    assert "wizard" not in wiz_client.session  # a fresh wizard next time


def test_the_review_offers_only_ablations_of_terms_the_full_method_weighs(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, training={**TRAINING, "attention": 0})
    form = wiz_client.get(url("review")).context["form"]
    assert [v for v, _ in form.fields["ablations"].choices] == ["output+attention"]  # not output+feature
    response = wiz_client.post(url("review"), {"name": "a", "baselines": "on", "ablations": ["output+feature"]})
    assert_redirects_to(response, "review")
    assert not Run.objects.exists() and not Study.objects.exists()
    assert "output+feature" in str(wiz_client.get(url("review")).context["form"].errors["ablations"])


def test_it_walks_a_teacher_finetune_run_without_student_steps(
    wiz_client, tiny_backbone, tiny_dataset, django_capture_on_commit_callbacks
):
    c = wiz_client
    assert_redirects_to(post(c, "teacher", {"kind": "teacher_finetune", "teacher": tiny_backbone.pk}), "data")
    assert_redirects_to(c.get(url("student")), "data")  # not a step of this kind
    assert_redirects_to(post(c, "data", {"dataset": tiny_dataset.pk, **DATA}), "training")
    response = c.get(url("training"))
    assert list(response.context["form"].fields) == [
        "task", "lr", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_ratio", "scheduler",
        "weight_decay", "seed", "lora", "lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules",
    ]  # fmt: skip
    assert_redirects_to(post(c, "training", {**TRAINING, "task": 1}), "queue")
    assert_redirects_to(post(c, "queue", {"queue": ""}), "review")
    response = c.get(url("review"))
    assert [s["step"].slug for s in response.context["indicator"]] == ["teacher", "data", "training", "queue", "review"]
    assert "student: null" in response.content.decode()
    assert response.context["estimate"].student_params is None
    with django_capture_on_commit_callbacks(execute=False):
        c.post(url("review"), {"name": "wiz-ft"})
    run = Run.objects.get(name="wiz-ft")
    assert run.kind == "teacher_finetune" and run.config["student"] is None and run.teacher == tiny_backbone
    assert run.config["lora"] is None and run.config["task"] == "classification"


def test_it_skips_the_layer_map_and_feature_terms_for_logits_kd(wiz_client, tiny_teacher, tiny_dataset):
    c = wiz_client
    assert_redirects_to(post(c, "teacher", {"kind": "kd_logits", "teacher": tiny_teacher.pk}), "student")
    assert_redirects_to(post(c, "student", STUDENT), "data")
    assert_redirects_to(post(c, "data", {"dataset": tiny_dataset.pk, **DATA}), "training")
    fields = list(c.get(url("training")).context["form"].fields)
    assert fields[:3] == ["task", "output", "temperature"] and "feature" not in fields and "attention" not in fields


def test_it_keeps_choices_when_going_back(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="queue")
    form = wiz_client.get(url("student")).context["form"]
    assert form["layers"].value() == 2
    form = wiz_client.get(url("training")).context["form"]
    assert form["lr"].value() == 1e-4 and form["seed"].value() == 7
    indicator = wiz_client.get(url("data")).context["indicator"]
    assert [i["reachable"] for i in indicator] == [True, True, True, False, True, True, False]


def test_it_sends_unfinished_wizards_to_the_first_open_step(wiz_client, tiny_teacher):
    assert_redirects_to(wiz_client.get(url("review")), "teacher")
    post(wiz_client, "teacher", {"kind": "kd_feature", "teacher": tiny_teacher.pk})
    assert_redirects_to(wiz_client.get(url("data")), "student")
    assert wiz_client.get(reverse("wizard_step", kwargs={"step": "nope"})).status_code == 404


def test_it_preselects_a_teacher_from_a_link(wiz_client, tiny_backbone, tiny_dataset):
    response = wiz_client.get(reverse("wizard"), {"teacher": tiny_backbone.pk, "kind": "teacher_finetune"})
    assert response.status_code == 302
    form = wiz_client.get(response["Location"]).context["form"]
    assert form["teacher"].value() == str(tiny_backbone.pk) and form["kind"].value() == "teacher_finetune"


def test_it_starts_over(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="data")
    assert_redirects_to(wiz_client.post(reverse("wizard_reset")), "teacher")
    assert "wizard" not in wiz_client.session


# --- invalid choices, shown at their fields ---------------------------------------------------------------


def test_it_hides_teachers_of_other_teams(wiz_client, tiny_teacher, wiz_foreign_teacher):
    page = wiz_client.get(url("teacher")).content.decode()
    assert "tiny-bert" in page and "foreign-bert" not in page
    response = post(wiz_client, "teacher", {"kind": "kd_feature", "teacher": wiz_foreign_teacher.pk})
    assert response.status_code == 200
    assert errors(response, "teacher") == ["Select a valid choice. That choice is not one of the available choices."]
    assert "wizard" not in wiz_client.session or not wiz_client.session["wizard"].get("teacher")


def test_it_rejects_a_backbone_teacher_for_a_kd_kind(wiz_client, tiny_backbone):
    for kind in ("kd_feature", "kd_logits", "no_kd"):
        response = post(wiz_client, "teacher", {"kind": kind, "teacher": tiny_backbone.pk})
        assert response.status_code == 200
        (message,) = errors(response, "teacher")
        assert "tiny-backbone is a backbone without a task head: fine-tune it first" in message
    assert_redirects_to(post(wiz_client, "teacher", {"kind": "teacher_finetune", "teacher": tiny_backbone.pk}), "data")


def test_it_shows_the_engines_student_errors_at_their_fields(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="student")
    response = post(wiz_client, "student", {**STUDENT, "hidden_size": 30, "heads": 4, "init": "random"})
    assert errors(response, "heads") == ["hidden size 30 is not divisible by 4 heads"]
    response = post(wiz_client, "student", {**STUDENT, "hidden_size": 16, "heads": 4, "init": "teacher"})
    assert errors(response, "init") == [
        "cannot copy teacher layers into width 16 (the teacher's is 32); use init: random"
    ]
    response = post(wiz_client, "student", {**STUDENT, "layers": 0})
    assert errors(response, "layers") == ["Input should be greater than 0"]
    response = post(wiz_client, "student", {**STUDENT, "layers": 6})
    assert errors(response, "layers") == ["6 blocks but the teacher has 4"]
    assert 'class="field wz-field has-error" id="field-layers"' in response.content.decode()


def test_it_rejects_a_teacher_layer_out_of_range(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="layer-map")
    bad = {"preset": "custom", "pairs": "[[0, 0], [1, 2], [2, 7]]", "map_embeddings": "on"}
    response = post(wiz_client, "layer-map", bad)
    assert response.status_code == 200
    assert errors(response, "pairs") == ["student.layer_map[2]: teacher layer 7 out of range 0..4"]
    assert response.context["bad_rows"] == [2]
    assert "student.layer_map[2]: teacher layer 7 out of range 0..4" in response.content.decode()
    response = post(wiz_client, "layer-map", {**bad, "pairs": "[]"})
    assert errors(response, "pairs") == ["student.layer_map: the layer map has no pairs"]
    response = post(wiz_client, "layer-map", {**bad, "pairs": "[[1, 1], [1, 2]]"})
    assert errors(response, "pairs") == ["student.layer_map[1]: student layer 1 is mapped twice"]
    response = post(wiz_client, "layer-map", {**bad, "pairs": "[[1, -1]]"})
    assert errors(response, "pairs") == ["student.layer_map[0].teacher: Input should be greater than or equal to 0"]


def test_layer_map_pairs_nested_too_deeply_are_a_field_error(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="layer-map")
    deep = {"preset": "custom", "pairs": "[" * 5_000 + "]" * 5_000, "map_embeddings": "on"}
    response = post(wiz_client, "layer-map", deep)
    assert response.status_code == 200
    assert errors(response, "pairs") == [forms.BAD_PAIRS.format(error="nested more than 32 levels deep")]


def test_it_accepts_a_preset_alone_without_javascript(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="layer-map")
    # a browser without JS submits the radio and whatever the hidden input held
    assert_redirects_to(post(wiz_client, "layer-map", {"preset": "last", "pairs": "garbage?"}), "data")
    student = wiz_client.session["wizard"]["config"]["student"]
    assert (student["layer_map"], student["map_embeddings"]) == ("last", False)
    page = wiz_client.get(url("layer-map"))
    assert [[row["pair"].student, row["pair"].teacher] for row in page.context["rows"]] == [[2, 4]]
    assert page.context["presets"] == {"uniform": [[1, 2], [2, 4]], "last": [[2, 4]]}
    assert len(page.context["drawing"]["lines"]) == 1 and len(page.context["drawing"]["teacher"]) == 5


def test_it_rejects_a_negative_learning_rate(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="training")
    response = post(wiz_client, "training", {**TRAINING, "lr": -1})
    assert errors(response, "lr") == ["Input should be greater than 0"]
    response = post(wiz_client, "training", {**TRAINING, "warmup_ratio": 1.5, "temperature": 0})
    assert errors(response, "warmup_ratio") == ["Input should be less than 1"]
    assert errors(response, "temperature") == ["Input should be greater than 0"]
    zero = {**TRAINING, "task": 0, "output": 0, "feature": 0, "attention": 0}
    assert errors(post(wiz_client, "training", zero)) == ["every term used by kind kd_feature has weight 0"]


def test_the_teacher_cache_settings_are_offered_and_checked(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="training")
    form = wiz_client.get(url("training")).context["form"]
    assert form.fields["teacher_cache"].label == "Teacher-output cache" and "top_k" not in form.fields  # a classifier
    response = post(wiz_client, "training", {**TRAINING, "teacher_cache": "x", "teacher_cache_dtype": "int8"})
    assert errors(response, "teacher_cache") and errors(response, "teacher_cache_dtype")
    assert "teacher_cache" not in wiz_client.session["wizard"]["config"].get("loss", {})  # nothing stored
    assert_redirects_to(post(wiz_client, "training", {**TRAINING, "teacher_cache": "off"}), "queue")
    assert wiz_client.session["wizard"]["config"]["loss"]["teacher_cache"] == "off"


def test_it_rejects_a_max_length_beyond_the_teachers_positions(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="data")
    assert wiz_client.get(url("data")).context["form"]["max_length"].value() == 64  # min(128, positions)
    response = post(wiz_client, "data", {**DATA, "dataset": tiny_dataset.pk, "max_length": 65})
    assert errors(response, "max_length") == ["65 is more than the teacher's 64 positions"]
    response = post(wiz_client, "data", {**DATA, "dataset": tiny_dataset.pk, "max_train_samples": 0})
    assert errors(response, "max_train_samples") == ["Input should be greater than 0"]


def test_it_only_offers_data_of_the_teachers_team_with_its_labels(
    wiz_client, owner, outsider, team, other_team, tiny_teacher, tiny_dataset, assets
):
    foreign = reviews_dataset(outsider, other_team, name="their-reviews", source=str(assets["reviews"]))
    other_labels = services.dataset_create(user=owner, team=team, name="rt", source="packaged:rotten_tomatoes")
    walk(wiz_client, tiny_teacher, tiny_dataset, until="data")
    page = wiz_client.get(url("data")).content.decode()
    assert "<strong>reviews</strong>" in page and "<strong>rt</strong>" in page and "their-reviews" not in page
    response = post(wiz_client, "data", {**DATA, "dataset": foreign.pk})
    assert errors(response, "dataset") == ["Select a valid choice. That choice is not one of the available choices."]
    response = post(wiz_client, "data", {**DATA, "dataset": other_labels.pk})
    (message,) = errors(response, "dataset")
    assert message.startswith("tiny-bert is fine-tuned for ['neg', 'pos'], but this data set has ['rotten', 'fresh']")


# --- the live parameter count -----------------------------------------------------------------------------


def test_it_counts_the_students_parameters_live(wiz_client, tiny_teacher, tiny_dataset, assets):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="student")
    live = reverse("wizard_student_live")
    response = wiz_client.get(
        live, {"layers": 2, "hidden_size": 16, "heads": 2, "intermediate_size": "", "init": "random"}
    )
    arch = selectors.teacher_architecture(tiny_teacher)
    shape = StudentConfig(layers=2, hidden_size=16, heads=2, init="random")
    expected = count_student_parameters(
        student_config(load_config(str(assets["teacher"])), shape, arch, attentions=False)
    )
    page = response.content.decode()
    assert response.context["live"]["student_params"] == expected
    assert f'data-student-params="{expected}"' in page and f"{expected:,}" in page
    assert f"{arch.params / expected:.2f}×" in page
    # the same count the review shows for that shape, and the engine's for the teacher's own shape
    response = wiz_client.get(live, {**STUDENT, "layers": 4})
    assert response.context["live"]["student_params"] == arch.params


def test_it_reports_live_errors_at_their_fields(wiz_client, tiny_teacher, tiny_dataset):
    walk(wiz_client, tiny_teacher, tiny_dataset, until="student")
    response = wiz_client.get(reverse("wizard_student_live"), {**STUDENT, "heads": 5})
    page = response.content.decode()
    assert "student_params" not in response.context["live"]
    assert '<div class="wz-field-errors" id="err-heads" hx-swap-oob="true">' in page
    assert "hidden size 32 is not divisible by 5 heads" in page


# --- launching -----------------------------------------------------------------------------------------


def test_it_takes_launch_errors_back_to_their_step(
    wiz_client, tiny_teacher, tiny_dataset, django_capture_on_commit_callbacks
):
    custom = {"preset": "custom", "pairs": "[[0, 0], [1, 2], [2, 4]]", "map_embeddings": "on"}
    walk(wiz_client, tiny_teacher, tiny_dataset, layer_map=custom)
    # a later change of the student's depth leaves the custom pairs out of range
    assert_redirects_to(post(wiz_client, "student", {**STUDENT, "layers": 1}), "layer-map")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = wiz_client.post(url("review"), {"name": "wiz-broken"})
    assert_redirects_to(response, "layer-map")
    assert not callbacks and not Run.objects.filter(name="wiz-broken").exists()
    response = wiz_client.get(url("layer-map"))
    assert errors(response, "pairs") == ["student.layer_map[2]: student layer 2 out of range 0..1"]
    assert response.context["bad_rows"] == [2]
    review = wiz_client.get(url("review"))
    assert review.context["problems"][0]["step"].slug == "layer-map"
    assert "config_yaml" not in review.context
    assert [i["has_errors"] for i in review.context["indicator"]] == [False, False, True, False, False, False, False]
    # redrawing the map clears the error, and the run launches
    fixed = {**custom, "pairs": "[[0, 0], [1, 4]]"}
    assert_redirects_to(post(wiz_client, "layer-map", fixed), "data")
    with django_capture_on_commit_callbacks(execute=False):
        response = wiz_client.post(url("review"), {"name": "wiz-fixed"})
    assert Run.objects.get(name="wiz-fixed").config["student"]["layer_map"][1]["teacher"] == 4


@pytest.mark.parametrize(
    ("key", "kind", "where"),
    [
        ("teacher.source", "kd_feature", ("teacher", "teacher")),
        ("student.layers", "kd_feature", ("student", "layers")),
        ("student.layer_map[2]", "kd_feature", ("layer-map", "pairs")),
        ("student.layer_map[2]", "kd_logits", ("student", None)),
        ("data.max_length", "kd_feature", ("data", "max_length")),
        ("dataset", "kd_feature", ("data", "dataset")),
        ("optim.lr", "kd_feature", ("training", "lr")),
        ("loss", "kd_feature", ("training", None)),
        ("seed", "kd_feature", ("training", "seed")),
        ("name", "kd_feature", ("review", "name")),
    ],
)
def test_it_maps_service_errors_to_steps_and_fields(key, kind, where):
    assert error_step(key, kind) == where


def test_it_forbids_viewers_to_launch(login, owner, viewer, tiny_teacher, tiny_dataset, team):
    client = login(owner)
    walk(client, tiny_teacher, tiny_dataset)
    # the owner becomes a viewer with the wizard filled in
    Membership.objects.filter(user=owner, team=team).update(role=Membership.Role.VIEWER)
    assert client.post(url("review"), {"name": "wiz-nope"}).status_code == 403
    assert not Run.objects.filter(name="wiz-nope").exists()
    # a viewer from the start is told so, and sees no teacher to pick
    login(viewer)
    response = client.get(url("teacher"))
    assert "you are a viewer in all your teams" in response.content.decode()
    assert response.context["teacher_cards"] == []
    session = client.session
    session["wizard"] = {"teacher": tiny_teacher.pk, "config": {"kind": "kd_feature"}, "done": list(BY_SLUG)}
    session.save()
    assert client.post(url("review"), {"name": "wiz-nope"}).status_code == 403


def test_the_review_scales_its_times_by_the_nearest_measured_run_and_counts_the_study(
    wiz_client, queued_run, tiny_teacher, tiny_dataset
):
    walk(wiz_client, tiny_teacher, tiny_dataset)
    cache.set(selectors.QUEUE_WORKERS_KEY, {settings.CELERY_TASK_DEFAULT_QUEUE: 3}, 60)  # as workers answered
    try:
        analytic = wiz_client.get(url("review")).context
        assert analytic["calibrated_by"] is None and analytic["estimate"].finish_seconds["measuring"] > 0
        # a run of this teacher measured 4x the analytic step time and twice the evaluation on a worker
        Run.objects.filter(pk=queued_run.pk).update(status=Run.Status.SUCCEEDED, host="celery@cpu-1")
        parts = ("step_s", "evaluating", "measuring", "exporting")
        timings = {
            "analytic": dict.fromkeys(parts, 1.0),
            "measured": dict(zip(parts, (4.0, 2.0, 1.0, 1.0), strict=True)),
        }
        record = services.step_time_record(queued_run.pk, timings)
        response = wiz_client.get(url("review"))
    finally:
        cache.delete(selectors.QUEUE_WORKERS_KEY)
    est, before = response.context["estimate"], analytic["estimate"]
    assert response.context["calibrated_by"] == record
    assert est.seconds_per_step == pytest.approx(4 * before.seconds_per_step)
    assert est.finish_seconds["evaluating"] == pytest.approx(2 * before.finish_seconds["evaluating"])
    assert est.finish_seconds["measuring"] == pytest.approx(before.finish_seconds["measuring"])
    page = response.content.decode()
    assert "measured on celery@cpu-1" in page and "Evaluation, latency, export" in page
    study = response.context["study_time"]  # the full method and its two baselines, on three workers
    assert study["runs"] == 3 and study["workers"] == 3
    assert "3 runs" in page and "3 workers serve the queue" in page


def test_the_review_says_whether_the_teacher_outputs_are_cached_built_first_or_live(
    wiz_client, team, tiny_teacher, tiny_dataset
):
    walk(wiz_client, tiny_teacher, tiny_dataset)  # 2 epochs, launched as a study (the default)
    review = wiz_client.get(url("review"))
    said, page = review.context["teacher_cache"], review.content.decode()
    assert said["state"] == "build" and said["text"].startswith("The study computes the teacher's outputs once")
    assert "on disk" in said["text"] and review.context["caching_text"] and 'data-estimate="caching"' in page
    assert str(settings.RUNS_DIR) not in page and str(settings.DATA_DIR) not in page

    shown = yaml.safe_load(review.context["config_yaml"])  # the config the review validated, as a run builds it
    build_for_config(parse_config(shown | {"cache_dir": str(services.team_cache_dir(team.pk))}), built_by="first")
    said = wiz_client.get(url("review")).context["teacher_cache"]
    assert said["state"] == "cached" and "built by first on " in said["text"], said
    assert "every run of the study reads them" in said["text"]

    session = wiz_client.session
    session[SESSION_KEY]["study"] = {"baselines": False}  # a single run of one epoch: it would not build
    session[SESSION_KEY]["config"]["optim"]["epochs"] = 1
    session[SESSION_KEY]["config"]["loss"]["feature"] = 0.0  # reads less of the teacher: the cache serves it
    session.save()
    assert wiz_client.get(url("review")).context["teacher_cache"]["state"] == "cached"
    session[SESSION_KEY]["config"]["data"]["max_length"] = 8  # cut shorter: no cache has these examples
    session.save()
    review = wiz_client.get(url("review")).context
    assert review["teacher_cache"]["state"] == "live" and "reads its examples once" in review["teacher_cache"]["text"]
    assert not review["caching_text"]
    session[SESSION_KEY]["config"]["loss"]["teacher_cache"] = "off"
    session.save()
    assert "cache: off" in wiz_client.get(url("review")).context["teacher_cache"]["text"]
