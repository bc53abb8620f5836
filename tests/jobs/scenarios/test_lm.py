"""Causal language modelling on the web side: LM teachers, the wizard's LM steps, LoRA choices, the services'
task checks, and the LM scorecard and run page.

The tiny random Llama with grouped-query attention (``tiny_llama``, from the engine's ``lm_assets``) is a
real model folder, so the engine reads its config; the toy reviews serve as plain text (their labels are not
used by an LM run). Runs
are created through the services with their Celery tasks captured on commit; the final measurements a worker
would store are written as ``Evaluation`` rows, so each scorecard number can be checked by hand.
"""

from __future__ import annotations

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.urls import reverse

from distill.config import MAX_TOP_K, parse_config
from distill.data import encode_lm, load_text_data
from distill.teachers import load_tokenizer
from distill.trainer import total_steps
from jobs import scorecard, selectors, services
from jobs.models import Evaluation, Run, Teacher
from jobs.wizard.forms import WRONG_TASK
from jobs.wizard.review import BAD_FIX
from tests.jobs.conftest import LM_SECTIONS
from tests.jobs.wizard.test_wizard import DATA, STUDENT, TRAINING, assert_redirects_to, errors, post, url

KD_DATA = {"data": {"max_length": 24}}
LM_DATA = {**DATA, "metrics": ["perplexity", "bleu", "cer"], "samples": 4, "prompt_tokens": 6, "new_tokens": 4}


@pytest.fixture
def lm_client(login, owner):
    return login(owner)


# --- teachers ------------------------------------------------------------------------------------------------


def test_it_registers_a_causal_lm_as_an_lm_teacher(tiny_llama, tiny_teacher, tiny_backbone):
    assert tiny_llama.task == Teacher.Task.CAUSAL_LM
    assert tiny_llama.labels == [] and tiny_llama.architecture["kv_heads"] == 2
    assert tiny_llama.hf_config["model_type"] == "llama" and tiny_llama.hf_config["num_key_value_heads"] == 2
    assert tiny_teacher.task == tiny_backbone.task == Teacher.Task.CLASSIFICATION


def test_the_teachers_config_comes_from_the_row_not_the_source(tiny_llama):
    tiny_llama.source = "package:not-installed"  # a page must not need the source (a GGUF converts slowly)
    config = selectors.teacher_hf_config(tiny_llama)
    assert (config.model_type, config.num_hidden_layers, config.num_key_value_heads) == ("llama", 4, 2)


# --- the wizard ----------------------------------------------------------------------------------------------


def test_it_walks_the_lm_wizard_and_launches_an_lm_run(
    lm_client, tiny_llama, tiny_dataset, django_capture_on_commit_callbacks
):
    c = lm_client
    page = c.get(url("teacher")).content.decode()
    assert 'data-task="causal_lm"' in page and "causal language model" in page
    assert_redirects_to(
        post(c, "teacher", {"task": "causal_lm", "kind": "kd_feature", "teacher": tiny_llama.pk}), "student"
    )
    assert_redirects_to(post(c, "student", STUDENT), "layer-map")
    assert_redirects_to(post(c, "layer-map", {"preset": "uniform", "map_embeddings": "on"}), "data")
    response = c.get(url("data"))
    page = response.content.decode()
    assert "Preview the first texts" in page and 'class="lm-text"' in page  # texts, not label counts
    assert "<th>Label</th>" not in page and "must have the teacher's labels" not in page
    assert {"metrics", "samples", "prompt_tokens", "new_tokens"} <= set(response.context["form"].fields)
    assert_redirects_to(post(c, "data", {"dataset": tiny_dataset.pk, **LM_DATA}), "training")
    training = c.get(url("training")).context["form"]
    assert training.fields["task"].label == "Task (next token)" and "lora" not in training.fields
    assert_redirects_to(post(c, "training", TRAINING), "queue")
    assert_redirects_to(post(c, "queue", {"queue": ""}), "review")
    review = c.get(url("review"))
    summary = {line["step"].slug: line["text"] for line in review.context["summary"]}
    assert summary["teacher"] == "Distil a student from tiny-llama (alpha); task: causal language modelling"
    assert "metrics perplexity, BLEU, CER (4 samples, 6 prompt + 4 new tokens)" in summary["data"]
    assert "task: causal_lm" in review.content.decode()
    # the steps count the engine's examples: token windows of the train texts, as the worker cuts them
    cfg = parse_config(yaml.safe_load(review.context["config_yaml"]))
    windows = encode_lm(load_text_data(cfg.data).train, load_tokenizer(tiny_llama.source), cfg.data.max_length)
    assert review.context["train_size"] == len(windows) and review.context["estimate"].total_steps == total_steps(
        cfg, len(windows)
    )
    with django_capture_on_commit_callbacks(execute=False):
        c.post(url("review"), {"name": "lm", "baselines": "on", "seeds": "0"})
    runs = Run.objects.filter(study__name="lm")
    assert sorted(r.kind for r in runs) == ["kd_feature", "kd_logits", "no_kd"]  # baselines as for classifiers
    for run in runs:
        assert run.config["task"] == "causal_lm" and run.config["data"]["max_length"] == 64
        assert run.config["generation"] == {
            "metrics": ["perplexity", "bleu", "cer"],
            "samples": 4,
            "prompt_tokens": 6,
            "new_tokens": 4,
        }


def test_it_refuses_a_classifier_for_an_lm_task_and_an_lm_for_classification(lm_client, tiny_teacher, tiny_llama):
    response = post(lm_client, "teacher", {"task": "causal_lm", "kind": "kd_feature", "teacher": tiny_teacher.pk})
    assert errors(response, "teacher") == [
        WRONG_TASK.format(name="tiny-bert", have="text classification", want="causal language modelling")
    ]
    response = post(lm_client, "teacher", {"task": "classification", "kind": "kd_feature", "teacher": tiny_llama.pk})
    assert errors(response, "teacher") == [
        WRONG_TASK.format(name="tiny-llama", have="causal language modelling", want="text classification")
    ]


def test_an_lm_run_keeps_the_teachers_top_k_tokens_bounded_by_the_engine(lm_client, tiny_llama, tiny_dataset):
    assert_redirects_to(post(lm_client, "teacher", {"kind": "kd_logits", "teacher": tiny_llama.pk}), "student")
    assert_redirects_to(post(lm_client, "student", STUDENT), "data")
    assert_redirects_to(post(lm_client, "data", {"dataset": tiny_dataset.pk, **LM_DATA}), "training")
    field = lm_client.get(url("training")).context["form"].fields["top_k"]
    assert field.label == "Top-k tokens kept" and field.widget.attrs["max"] == str(MAX_TOP_K)  # the engine's bound
    response = post(lm_client, "training", {**TRAINING, "top_k": 0, "teacher_cache": "x"})
    assert errors(response, "top_k") == ["Input should be greater than 0"] and errors(response, "teacher_cache")
    assert "top_k" not in lm_client.session["wizard"]["config"].get("loss", {})
    assert_redirects_to(post(lm_client, "training", {**TRAINING, "top_k": 8}), "queue")
    assert lm_client.session["wizard"]["config"]["loss"]["top_k"] == 8


def test_an_lm_teacher_needs_no_task_head_and_its_task_is_the_default(lm_client, tiny_llama):
    # without a task radio (an old form, a link), the teacher's own task is taken: an LM teacher distils
    assert_redirects_to(post(lm_client, "teacher", {"kind": "kd_logits", "teacher": tiny_llama.pk}), "student")
    assert lm_client.session["wizard"]["config"]["task"] == "causal_lm"


def test_the_lm_data_step_needs_a_metric_and_checks_the_generation_lengths(lm_client, tiny_llama, tiny_dataset):
    assert_redirects_to(
        post(lm_client, "teacher", {"task": "causal_lm", "kind": "no_kd", "teacher": tiny_llama.pk}), "student"
    )
    assert_redirects_to(post(lm_client, "student", STUDENT), "data")
    response = post(lm_client, "data", {"dataset": tiny_dataset.pk, **LM_DATA, "metrics": []})
    assert errors(response, "metrics") == ["Choose at least one metric to compute."]
    response = post(lm_client, "data", {"dataset": tiny_dataset.pk, **LM_DATA, "new_tokens": 0, "samples": -1})
    assert errors(response, "new_tokens") == ["Input should be greater than 0"]
    assert errors(response, "samples") == ["Input should be greater than 0"]
    response = post(lm_client, "data", {"dataset": tiny_dataset.pk, **LM_DATA, "metrics": ["perplexity", "meteor"]})
    assert "meteor is not one of the available choices" in errors(response, "metrics")[0]


def test_it_fine_tunes_an_lm_teacher_with_lora_defaults_of_its_architecture(
    lm_client, tiny_llama, tiny_dataset, django_capture_on_commit_callbacks
):
    lora = {"lora": "on", "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.1, "lora_target_modules": ""}
    assert_redirects_to(
        post(lm_client, "teacher", {"task": "causal_lm", "kind": "teacher_finetune", "teacher": tiny_llama.pk}), "data"
    )
    assert_redirects_to(post(lm_client, "data", {"dataset": tiny_dataset.pk, **LM_DATA}), "training")
    form = lm_client.get(url("training")).context["form"]
    assert "q_proj, v_proj (the default for llama)" in form.fields["lora_target_modules"].help_text
    response = post(lm_client, "training", {**TRAINING, **lora, "lora_rank": 0, "lora_dropout": 1.5})
    assert errors(response, "lora_rank") == ["Input should be greater than 0"]
    assert errors(response, "lora_dropout") == ["Input should be less than 1"]
    assert_redirects_to(post(lm_client, "training", {**TRAINING, **lora}), "queue")
    assert_redirects_to(post(lm_client, "queue", {"queue": ""}), "review")
    review = lm_client.get(url("review"))
    summary = {line["step"].slug: line["text"] for line in review.context["summary"]}
    assert summary["training"].endswith("LoRA rank 4, alpha 8 on q_proj, v_proj")
    with django_capture_on_commit_callbacks(execute=False):
        lm_client.post(url("review"), {"name": "lm-lora"})
    run = Run.objects.get(name="lm-lora")
    assert run.config["lora"] == {"rank": 4, "alpha": 8.0, "dropout": 0.1, "target_modules": None}
    assert run.config["task"] == "causal_lm" and run.config["student"] is None


def test_named_lora_target_modules_are_kept(lm_client, tiny_backbone, tiny_dataset):
    lora = {
        "lora": "on",
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target_modules": "query, key ,value",
    }
    assert_redirects_to(post(lm_client, "teacher", {"kind": "teacher_finetune", "teacher": tiny_backbone.pk}), "data")
    assert_redirects_to(post(lm_client, "data", {"dataset": tiny_dataset.pk, **DATA}), "training")
    assert (
        "query, value (the default for bert)"
        in lm_client.get(url("training")).context["form"].fields["lora_target_modules"].help_text
    )
    assert_redirects_to(post(lm_client, "training", {**TRAINING, **lora}), "queue")
    assert lm_client.session["wizard"]["config"]["lora"]["target_modules"] == ["query", "key", "value"]


# --- services ------------------------------------------------------------------------------------------------


def test_run_create_takes_the_task_from_the_teacher(
    owner, tiny_llama, tiny_dataset, django_capture_on_commit_callbacks
):
    sections = {k: v for k, v in LM_SECTIONS.items() if k != "task"}
    with django_capture_on_commit_callbacks(execute=False):
        run = services.run_create(
            user=owner, teacher=tiny_llama, dataset=tiny_dataset, kind="kd_feature", name="lm", sections=sections
        )
    assert run.config["task"] == "causal_lm" and run.config["generation"]["new_tokens"] == 4


def test_run_create_refuses_a_task_the_teacher_does_not_teach(owner, tiny_llama, tiny_teacher, tiny_dataset):
    with pytest.raises(ValidationError) as caught:
        services.run_create(
            user=owner, teacher=tiny_teacher, dataset=tiny_dataset, kind="kd_logits", name="x", sections=LM_SECTIONS
        )
    assert caught.value.message_dict == {
        "task": [
            services.TASK_MISMATCH.format(
                teacher="tiny-bert", have="text classification", want="causal language modelling"
            )
        ]
    }
    with pytest.raises(ValidationError) as caught:
        services.run_create(
            user=owner, teacher=tiny_llama, dataset=tiny_dataset, kind="no_kd", name="x",
            sections={**LM_SECTIONS, "task": "classification"},
        )  # fmt: skip
    assert list(caught.value.message_dict) == ["task"]


def test_run_create_refuses_lora_outside_teacher_fine_tuning(owner, tiny_llama, tiny_dataset):
    with pytest.raises(ValidationError) as caught:
        services.run_create(
            user=owner, teacher=tiny_llama, dataset=tiny_dataset, kind="kd_feature", name="x",
            sections={**LM_SECTIONS, "lora": {"rank": 4}},
        )  # fmt: skip
    assert caught.value.message_dict == {"lora": ["LoRA adapters fine-tune a teacher; use kind teacher_finetune"]}


def test_run_create_refuses_lora_targets_the_teacher_lacks(owner, tiny_llama, tiny_dataset):
    """Checked on the teacher's architecture at launch (meta device), not when the worker loads it."""
    with pytest.raises(ValidationError) as caught:
        services.run_create(
            user=owner, teacher=tiny_llama, dataset=tiny_dataset, kind="teacher_finetune", name="x",
            sections={**LM_SECTIONS, "student": None, "lora": {"target_modules": ["query"]}},
        )  # fmt: skip
    [message] = caught.value.message_dict["lora.target_modules"]
    assert message.startswith("no layer named 'query' in llama (linear layers: ") and "q_proj" in message
    assert not Run.objects.exists()


# --- scorecard and run page ----------------------------------------------------------------------------------

LM_TEACHER = {"perplexity": 20.0, "nll": 2.996, "bleu": 30.0, "rouge_l": 0.5, "cer": 0.4}


def lm_evaluate(run: Run, perplexity: float, *, bleu: float = 20.0, cer: float = 0.5, params: int = 1_000) -> None:
    """Store what a worker stores at the end of an LM run: the student's and the teacher's measurements."""
    run.host, run.status = "cpu-1@lab", Run.Status.SUCCEEDED
    run.save(update_fields=["host", "status"])
    latency = {"bs1": {"median_ms": 2.0, "threads": 2}, "bs32": {"median_ms": 10.0, "threads": 2}}
    student = {"perplexity": perplexity, "nll": 3.0, "bleu": bleu, "rouge_l": 0.4, "cer": cer}
    Evaluation.objects.create(
        run=run, role="student", split="validation", metrics=student, params=params, bytes=4 * params, latency=latency
    )
    teacher_latency = {"bs1": {"median_ms": 8.0, "threads": 2}, "bs32": {"median_ms": 40.0, "threads": 2}}
    Evaluation.objects.create(
        run=run, role="teacher", split="validation", metrics=LM_TEACHER, params=4_000, bytes=16_000,
        latency=teacher_latency,
    )  # fmt: skip


@pytest.fixture
def lm_study(owner, tiny_llama, tiny_dataset, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        study = services.study_create(
            user=owner, teacher=tiny_llama, dataset=tiny_dataset, name="lm", sections=LM_SECTIONS
        )
    runs = {r.kind: r for r in study.runs.all()}
    lm_evaluate(runs["kd_feature"], 25.0, bleu=22.0, cer=0.45)
    lm_evaluate(runs["kd_logits"], 40.0, bleu=24.0, cer=0.55)
    lm_evaluate(runs["no_kd"], 80.0, bleu=10.0, cer=0.7)
    return study


def test_the_lm_scorecard_ranks_by_the_lowest_perplexity(lm_study):
    card = scorecard.study_scorecard(selectors.scorecard_runs(lm_study.runs.all()))
    assert card["metrics"] == ["perplexity", "bleu", "rouge_l", "cer"]  # nll is the log of perplexity: not shown
    assert card["primary"] == "perplexity" and card["lower_is_better"]
    assert [card["metric_labels"][m] for m in card["metrics"]] == ["perplexity", "BLEU", "ROUGE-L", "CER"]
    rows = {row["variant"]: row for row in card["rows"]}
    assert [v for v, row in rows.items() if row["best"]] == ["kd_feature"]  # 25 < 40 < 80, though its BLEU is not best
    assert rows["kd_feature"]["retention"] == pytest.approx(20.0 / 25.0)  # teacher / student: 80% of the teacher
    assert rows["no_kd"]["retention"] == pytest.approx(20.0 / 80.0)
    assert rows["kd_feature"]["smaller"] == 4.0 and rows["kd_feature"]["faster_bs1"] is None  # side by side only
    assert card["teacher"]["metrics"]["perplexity"] == 20.0
    plots = selectors.scorecard_plots(card)
    assert (plots["metric"], plots["label"], plots["lower_is_better"]) == ("perplexity", "perplexity", True)
    assert sorted(p["value"] for p in plots["points"]) == [25.0, 40.0, 80.0]
    assert plots["teacher"]["value"] == 20.0


def test_the_lm_study_page_shows_the_lm_columns(login, owner, lm_study):
    page = login(owner).get(reverse("study_detail", kwargs={"study_id": lm_study.pk})).content.decode()
    for label in ("perplexity", "BLEU", "ROUGE-L", "CER"):
        assert f">{label}</th>" in page
    assert "lowest perplexity" in page and "teacher perplexity / student perplexity" in page
    assert "80.0%" in page  # kd_feature: 20 / 25 of the teacher's level
    assert ">nll<" not in page


def test_the_lm_run_page_shows_perplexity_and_the_generation_metrics(login, owner, lm_study):
    run = lm_study.runs.get(kind="kd_feature")
    page = login(owner).get(reverse("run_detail", kwargs={"run_id": run.pk})).content.decode()
    assert 'data-metric="perplexity">perplexity</th>' in page and 'data-metric="rouge_l">ROUGE-L</th>' in page
    assert 'data-metric="perplexity">25.0000</td>' in page and 'data-metric="perplexity">20.0000</td>' in page
    assert "Perplexity retention" in page and "Accuracy" not in page
    runs_page = login(owner).get(reverse("runs")).content.decode()
    assert "25.00 ppl" in runs_page


def test_the_api_creates_lm_runs(owner, tiny_llama, tiny_dataset, django_capture_on_commit_callbacks):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")
    body = {"teacher": tiny_llama.pk, "dataset": tiny_dataset.pk, "kind": "kd_logits", "name": "api-lm"}
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post("/api/v1/runs/", {**body, "sections": LM_SECTIONS}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["config"]["task"] == "causal_lm"
    response = client.post("/api/v1/runs/", {**body, "sections": {"generation": [1]}}, format="json")
    assert response.status_code == 400 and response.json() == {"generation": ["Expected an object."]}
    teacher = client.get(f"/api/v1/teachers/{tiny_llama.pk}/").json()
    assert teacher["task"] == "causal_lm"


# --- plain text and the LM student ---------------------------------------------------------------------------


@pytest.fixture
def corpus(owner, team, lm_assets):
    """The engine's toy corpus (.txt, documents separated by blank lines), registered as plain text."""
    return services.dataset_create(
        user=owner, team=team, name="corpus", source=str(lm_assets["corpus"]), task="causal_lm"
    )


def test_plain_text_registers_without_labels_and_serves_lm_runs_only(
    owner, corpus, tiny_llama, tiny_teacher, django_capture_on_commit_callbacks
):
    assert corpus.labels == [] and corpus.sizes["train"] > corpus.sizes["validation"] > 0
    assert set(corpus.preview[0]) == {"text"} and corpus.preview[0]["text"].endswith(".")
    with django_capture_on_commit_callbacks(execute=False):
        run = services.run_create(
            user=owner, teacher=tiny_llama, dataset=corpus, kind="no_kd", name="lm", sections=LM_SECTIONS
        )
    assert run.config["data"]["source"] == corpus.source
    with pytest.raises(ValidationError) as caught:
        services.run_create(
            user=owner, teacher=tiny_teacher, dataset=corpus, kind="teacher_finetune", name="x", sections=KD_DATA
        )
    assert caught.value.message_dict == {"dataset": ["corpus is plain text without labels: it serves language models"]}


def test_a_txt_file_is_refused_as_labelled_data(owner, team, lm_assets):
    with pytest.raises(ValidationError) as caught:
        services.dataset_create(user=owner, team=team, name="txt", source=str(lm_assets["corpus"]))
    assert list(caught.value.message_dict) == ["source"]


def test_the_lm_student_step_offers_kv_heads(lm_client, tiny_llama, tiny_teacher, corpus):
    assert_redirects_to(post(lm_client, "teacher", {"kind": "kd_logits", "teacher": tiny_teacher.pk}), "student")
    assert "kv_heads" not in lm_client.get(url("student")).context["form"].fields  # BERT has no GQA
    assert_redirects_to(
        post(lm_client, "teacher", {"task": "causal_lm", "kind": "kd_logits", "teacher": tiny_llama.pk}), "student"
    )
    form = lm_client.get(url("student")).context["form"]
    assert "4 query heads share 2" in form.fields["kv_heads"].help_text
    response = post(lm_client, "student", {**STUDENT, "kv_heads": 3})
    assert errors(response, "kv_heads") == ["3 kv heads do not divide 4 query heads"]
    assert_redirects_to(post(lm_client, "student", {**STUDENT, "kv_heads": 1}), "data")
    assert_redirects_to(post(lm_client, "data", {"dataset": corpus.pk, **LM_DATA}), "training")
    assert_redirects_to(post(lm_client, "training", TRAINING), "queue")
    assert_redirects_to(post(lm_client, "queue", {"queue": ""}), "review")
    review = lm_client.get(url("review"))
    summary = {line["step"].slug: line["text"] for line in review.context["summary"]}
    assert summary["student"].startswith("2 blocks × 64 hidden, 4 heads sharing 1 key/value heads")
    assert "kv_heads: 1" in review.content.decode()


# --- the memory estimate and its fixes -----------------------------------------------------------------------


def test_the_review_offers_memory_fixes_and_applies_one(lm_client, tiny_llama, corpus, settings):
    assert_redirects_to(
        post(lm_client, "teacher", {"task": "causal_lm", "kind": "kd_feature", "teacher": tiny_llama.pk}), "student"
    )
    assert_redirects_to(post(lm_client, "student", STUDENT), "layer-map")
    assert_redirects_to(post(lm_client, "layer-map", {"preset": "uniform", "map_embeddings": "on"}), "data")
    assert_redirects_to(post(lm_client, "data", {"dataset": corpus.pk, **LM_DATA}), "training")
    assert_redirects_to(post(lm_client, "training", TRAINING), "queue")
    assert_redirects_to(post(lm_client, "queue", {"queue": ""}), "review")
    settings.KDWEB_WORKER_MEMORY_BYTES = 10 * 2**30
    review = lm_client.get(url("review"))
    assert not review.context["over_budget"] and review.context["fixes"] == []
    assert "memory-fixes" not in review.content.decode()

    peak = review.context["estimate"].peak_bytes
    settings.KDWEB_WORKER_MEMORY_BYTES = peak - 1  # one byte short: the mildest fixes fit
    review = lm_client.get(url("review"))
    page = review.content.decode()
    assert review.context["over_budget"] and 'id="memory-fixes"' in page
    fixes = review.context["fixes"]
    assert fixes[0]["title"] == "Batch 8 with 2 accumulation steps (same effective batch of 16)" and fixes[0]["fits"]
    assert {"Teacher in bfloat16 (halves its weights)", "Attention term off (no attention maps kept)"} <= {
        f["title"] for f in fixes
    }
    for fix in fixes:  # each new peak is below the run's
        assert fix["title"] in page and f"≈ {fix['peak_text']}" in page

    bf16 = next(f for f in fixes if f["title"].startswith("Teacher in bfloat16"))
    response = lm_client.post(reverse("wizard_fix"), {"changes": bf16["changes"], "title": bf16["title"]})
    assert response.status_code == 302 and response["Location"] == url("review")
    response = lm_client.post(reverse("wizard_fix"), {"changes": fixes[0]["changes"], "title": fixes[0]["title"]})
    review = lm_client.get(url("review"))
    assert not review.context["over_budget"]
    assert "grad_accum: 2" in review.content.decode() and "dtype: bfloat16" in review.content.decode()
    config = lm_client.session["wizard"]["config"]
    assert config["optim"]["batch_size"] == 8 and config["teacher"]["dtype"] == "bfloat16"
    assert "Applied: Batch 8 with 2 accumulation steps" in review.content.decode()


def test_a_fix_of_another_path_is_refused(lm_client, tiny_llama):
    assert_redirects_to(
        post(lm_client, "teacher", {"task": "causal_lm", "kind": "no_kd", "teacher": tiny_llama.pk}), "student"
    )
    for changes in ('{"teacher.source": "/etc"}', '{"kind": "kd_feature"}', "[1]", "not json"):
        response = lm_client.post(reverse("wizard_fix"), {"changes": changes}, follow=True)
        assert BAD_FIX in response.content.decode(), changes
    config = lm_client.session["wizard"]["config"]
    assert config["kind"] == "no_kd" and "dtype" not in config.get("teacher", {})


def test_the_teachers_page_marks_lm_teachers(login, owner, tiny_llama, tiny_backbone):
    page = login(owner).get(reverse("teachers")).content.decode()
    assert "causal language model" in page and "backbone: fine-tune first" in page
    assert "(2 kv)" in page  # grouped-query attention
