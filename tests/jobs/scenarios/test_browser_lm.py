"""Causal language modelling end to end: LM runs trained by the real Celery worker, and the LM wizard, run page
and scorecard in a real browser.

The teacher is the engine's tiny random Llama with grouped-query attention (``tiny_llama``), the text the
engine's toy corpus registered as plain text; both are real files read by the worker. Screenshots land in
``test-artifacts/browser/lm-*.png``.
"""

from __future__ import annotations

import math
import re
import zipfile

import pytest
from django.core.files.storage import default_storage
from playwright.sync_api import expect
from transformers import AutoModelForCausalLM

from jobs import services
from jobs.models import Artifact, Evaluation, MetricPoint, Run, Study, Teacher
from tests.jobs.browser import chromium_session, open_as, session_cookie
from tests.jobs.scenarios.test_browser_live import expect_clean

pytestmark = pytest.mark.django_db(transaction=True)

LM_RUN = {
    "task": "causal_lm",
    "latency_repeats": 1,
    "checkpoint_every": 1000,
    "eval_every": 3,
    "student": {"layers": 2},
    "data": {"max_length": 32},
    "optim": {"max_steps": 6, "batch_size": 8, "lr": 1e-3},
    "generation": {"samples": 4, "prompt_tokens": 8, "new_tokens": 6},
}
LM_METRICS = {"perplexity", "nll", "bleu", "rouge_l", "cer"}


@pytest.fixture
def corpus(owner, team, lm_assets):
    return services.dataset_create(
        user=owner, team=team, name="corpus", source=str(lm_assets["corpus"]), task="causal_lm"
    )


def test_an_lm_kd_run_trains_on_the_worker_and_exports_a_causal_lm(
    celery_worker_process, owner, tiny_llama, corpus, tmp_path
):
    worker = celery_worker_process
    run = services.run_create(
        user=owner, teacher=tiny_llama, dataset=corpus, kind="kd_feature", name="lm", sections=LM_RUN,
        queue=worker.queue,
    )  # fmt: skip
    run = worker.wait_for(run)
    assert run.status == Run.Status.SUCCEEDED, f"{run.error}\n{worker.log()}"
    steps = sorted(MetricPoint.objects.filter(run=run, name="loss/output").values_list("step", flat=True))
    assert steps == [1, 2, 3, 4, 5, 6]
    perplexity = dict(MetricPoint.objects.filter(run=run, name="val/perplexity").values_list("step", "value"))
    nll = dict(MetricPoint.objects.filter(run=run, name="val/nll").values_list("step", "value"))
    assert sorted(perplexity) == sorted(nll) == [3, 6]
    assert perplexity[6] == pytest.approx(math.exp(nll[6]))

    evaluations = {e.role: e for e in Evaluation.objects.filter(run=run)}
    assert set(evaluations) == {"student", "teacher"}
    for ev in evaluations.values():
        assert set(ev.metrics) == LM_METRICS and ev.split == "validation"
        assert ev.metrics["perplexity"] > 1 and 0 <= ev.metrics["rouge_l"] <= 1
    assert 0 < evaluations["student"].params < evaluations["teacher"].params

    artifact = Artifact.objects.get(run=run, kind=Artifact.Kind.STUDENT)
    with default_storage.open(artifact.path) as f:
        zipfile.ZipFile(f).extractall(tmp_path / "student")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert (model.config.num_hidden_layers, model.config.num_key_value_heads) == (2, 2)


def test_a_user_walks_the_lm_wizard_and_reads_the_lm_scorecard(
    celery_worker_process, asgi_server, owner, tiny_llama, corpus
):
    worker = celery_worker_process
    cookie = session_cookie(owner)
    with chromium_session(prefix="lm-") as s:
        page = open_as(s, asgi_server, cookie, "/runs/new/teacher/")
        s.click(page.get_by_label("Causal language modelling"))
        card = page.locator('.wz-card[data-task="causal_lm"]', has_text="tiny-llama")
        expect(card).to_be_visible()
        s.click(card)
        s.click(page.get_by_role("button", name="Next"))
        expect(page.locator("h2")).to_have_text("Student")
        expect(page.get_by_label("Key/value heads")).to_be_visible()  # the teacher has grouped-query attention
        page.locator("#id_layers").fill("2")
        s.click(page.get_by_role("button", name="Next"))
        expect(page.locator("h2")).to_have_text("Layer map")
        s.click(page.get_by_role("button", name="Next"))

        expect(page.locator("h2")).to_have_text("Data")
        expect(page.locator(".lm-preview blockquote.lm-text").first).to_be_visible()  # texts, not labels
        expect(page.locator("#lm-metrics")).to_contain_text("Perplexity")
        s.click(page.get_by_text("corpus", exact=True))
        page.get_by_label("Max length").fill("32")
        page.get_by_label("CER: character error rate").uncheck()
        page.get_by_label("Generation samples").fill("4")
        page.get_by_label("Prompt tokens").fill("8")
        page.get_by_label("New tokens").fill("6")
        s.shot("wizard-data")
        s.click(page.get_by_role("button", name="Next"))

        expect(page.locator("h2")).to_have_text("Losses & optimizer")
        expect(page.get_by_label("Task (next token)")).to_be_visible()
        page.get_by_label("Max steps").fill("6")
        page.get_by_label("Batch size").fill("8")
        page.get_by_label("Learning rate").fill("0.001")
        s.click(page.get_by_role("button", name="Next"))
        s.click(page.get_by_label(f"{worker.queue} (a worker is listening)"))
        s.click(page.get_by_role("button", name="Next"))

        expect(page.locator("h2")).to_have_text("Review")
        expect(page.locator(".wz-summary")).to_contain_text("task: causal language modelling")
        expect(page.locator(".wz-summary")).to_contain_text("metrics perplexity, BLEU, ROUGE-L")
        expect(page.locator("pre.config")).to_contain_text("task: causal_lm")
        page.get_by_label("Name").fill("lm study")
        expect(page.get_by_label("Compare with baselines")).to_be_checked()
        s.shot("wizard-review")
        s.click(page.get_by_role("button", name="Launch"))
        expect(page).to_have_url(re.compile(r"/studies/\d+/$"))
        expect_clean(s)

    study = Study.objects.get(name="lm study")
    runs = list(study.runs.order_by("pk"))
    assert sorted(r.kind for r in runs) == ["kd_feature", "kd_logits", "no_kd"]
    for run in runs:
        assert worker.wait_for(run).status == Run.Status.SUCCEEDED, run.error
        assert run.config["generation"]["metrics"] == ["perplexity", "bleu", "rouge_l"]

    with chromium_session(prefix="lm-", keep=True) as s:
        page = open_as(s, asgi_server, cookie, f"/studies/{study.pk}/")
        scorecard = page.locator("#scorecard")
        for label in ("perplexity", "BLEU", "ROUGE-L"):
            expect(scorecard.locator(f"th:text-is('{label}')")).to_have_count(1)
        expect(scorecard.locator("th:text-is('CER')")).to_have_count(0)  # not computed
        expect(scorecard.locator("tr.run-row")).to_have_count(3)
        expect(scorecard.locator("tr.run-row.best")).to_have_count(1)
        expect(page.locator("#scorecard-help")).to_contain_text("lowest perplexity")
        size = page.locator("#plot-size.js-plotly-plot")
        expect(size).to_have_attribute("data-metric", "perplexity")
        expect(size).to_have_attribute("data-points", "3")
        expect(size).to_have_attribute("data-teacher", "1")
        expect(page.locator("#plot-val")).to_have_attribute("data-traces", "3")  # val/perplexity per run
        s.shot("scorecard")

        s.click(scorecard.locator("tr.run-row a").first)
        expect(page.locator('table.metrics th[data-metric="perplexity"]')).to_have_text("perplexity")
        expect(page.locator("table.compare")).to_contain_text("Perplexity retention")
        expect(page.locator('#charts .chart[data-group="perplexity"]')).to_have_attribute(
            "data-series", "val/perplexity"
        )
        expect(page.locator('#charts .chart[data-group="loss/output"]')).to_be_visible()  # the per-term curves
        s.shot("run")
        expect_clean(s)


def test_a_lora_fine_tuned_lm_becomes_an_lm_teacher(celery_worker_process, owner, team, tiny_llama, corpus):
    worker = celery_worker_process
    sections = {
        **{k: v for k, v in LM_RUN.items() if k != "student"},
        "optim": {"max_steps": 3, "batch_size": 8, "lr": 1e-3},
        "lora": {"rank": 4, "alpha": 8},
    }
    run = services.run_create(
        user=owner, teacher=tiny_llama, dataset=corpus, kind="teacher_finetune", name="lora", sections=sections,
        queue=worker.queue,
    )  # fmt: skip
    run = worker.wait_for(run)
    assert run.status == Run.Status.SUCCEEDED, f"{run.error}\n{worker.log()}"
    assert list(Evaluation.objects.filter(run=run).values_list("role", flat=True)) == ["teacher"]
    new = Teacher.objects.get(from_run=run)
    assert (new.name, new.task, new.labels) == ("lora (fine-tuned)", Teacher.Task.CAUSAL_LM, [])
    tiny_llama.refresh_from_db()
    assert new.architecture == tiny_llama.architecture  # adapters merged: the same plain model
    assert new.hf_config["num_key_value_heads"] == 2
