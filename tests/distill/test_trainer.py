"""The training loop on tiny real models: every kind, callbacks, checkpoints, resume and export; for causal LMs on
a tiny random Llama with grouped-query attention: every kind, perplexity validation, the final evaluation,
resume, export and the errors of an LM config."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from distill.callbacks import EVALUATING, EXPORTING, MEASURING, TRAINING, VALIDATING, Callback
from distill.checkpoint import has_checkpoint
from distill.config import ConfigError, parse_config
from distill.trainer import train
from tests.recording import Recorder, assert_resume_is_bit_exact


def test_it_calls_callbacks_in_order(base_config):
    base_config.update(eval_every=3, checkpoint_every=4)
    rec = Recorder()
    result = train(parse_config(base_config), [rec])
    assert rec.events == [
        "train_begin",
        "step_end:1",
        "step_end:2",
        "step_end:3",
        "evaluate:3",
        "step_end:4",
        "save:4",  # before the checkpoint is written: callbacks make what they keep durable first
        "step_end:5",
        "step_end:6",
        "evaluate:6",
        "save:6",
        "train_end",
    ]
    assert not result.stopped and result.state.step == 6
    terms = ("task", "output", "feature", "attention")
    assert set(rec.logs[0]) == {*(f"loss/{t}" for t in terms), *(f"share/{t}" for t in terms), "loss/total", "lr"}


def test_it_logs_only_the_terms_of_its_kind(base_config):
    for kind, terms in [("no_kd", {"task"}), ("kd_logits", {"task", "output"})]:
        rec = Recorder()
        train(parse_config({**base_config, "kind": kind, "optim": {**base_config["optim"], "max_steps": 1}}), [rec])
        assert {k.removeprefix("loss/") for k in rec.logs[0] if k.startswith("loss/")} == terms | {"total"}
        # a share only where two or more terms make up the total
        assert {k.removeprefix("share/") for k in rec.logs[0] if k.startswith("share/")} == (
            terms if len(terms) > 1 else set()
        )


def test_it_weights_the_total_from_the_unweighted_terms(base_config):
    base_config["loss"] = {"task": 0.5, "output": 2.0, "feature": 3.0, "attention": 0.25}
    base_config["optim"]["max_steps"] = 2
    rec = Recorder()
    train(parse_config(base_config), [rec])
    logs = rec.logs[0]
    terms = {"task": 0.5, "output": 2.0, "feature": 3.0, "attention": 0.25}
    expected = sum(weight * logs[f"loss/{name}"] for name, weight in terms.items())
    assert logs["loss/total"] == pytest.approx(expected, rel=1e-5)
    for name, weight in terms.items():  # the share plotted as a stacked area: weighted term over total
        assert logs[f"share/{name}"] == pytest.approx(weight * logs[f"loss/{name}"] / expected, rel=1e-5)
    assert sum(v for k, v in logs.items() if k.startswith("share/")) == pytest.approx(1.0)


def test_it_learns_the_task_without_a_teacher(base_config):
    base_config.update(kind="no_kd", optim={"batch_size": 16, "epochs": 4, "lr": 2e-3})
    result = train(parse_config(base_config))
    assert result.metrics["student"]["accuracy"] > 0.9


def test_it_pulls_the_student_towards_the_teacher(base_config):
    base_config["student"]["init"] = "random"
    base_config["optim"] = {"batch_size": 16, "epochs": 3, "lr": 2e-3}
    rec = Recorder()
    train(parse_config(base_config), [rec])
    for term in ("output", "feature", "attention"):
        assert rec.logs[-1][f"loss/{term}"] < 0.7 * rec.logs[0][f"loss/{term}"], term


def test_it_resumes_to_the_same_losses_as_an_uninterrupted_run(base_config, tmp_path):
    base_config["student"] = {"layers": 2, "hidden_size": 16, "heads": 2, "init": "random"}  # projections too
    base_config["optim"]["max_steps"] = 8
    assert assert_resume_is_bit_exact(base_config, tmp_path).export_dir is None  # a stopped run exports nothing


class StopIn(Callback):
    """Records every phase report ``(phase, done, total)``; asks to stop once ``phase`` has done ``after`` units."""

    def __init__(self, phase: str | None = None, after: int = 0):
        self.phase, self.after, self.reports = phase, after, []

    def on_phase(self, state, control, phase, done, total):
        self.reports.append((phase, done, total))
        if phase == self.phase and done >= self.after:
            control.should_stop = True


@pytest.mark.parametrize(("phase", "after"), [(EVALUATING, 1), (MEASURING, 5), (EXPORTING, 1)])
def test_a_stop_in_the_finish_stops_it_and_a_resume_redoes_only_the_finish(base_config, phase, after):
    base_config["latency_repeats"] = 50
    stop = StopIn(phase, after)
    stopped = train(parse_config(base_config), [stop])
    assert stopped.stopped and stopped.state.step == 6 and stopped.export_dir is None
    assert stop.reports[-1] == (phase, after, stop.reports[-1][2])  # not one unit more
    assert has_checkpoint(Path(base_config["output_dir"])) and not (Path(base_config["output_dir"]) / "export").exists()

    rec, phases = Recorder(), StopIn()
    result = train(parse_config(base_config), [rec, phases], resume=True)
    assert not result.stopped and result.export_dir.is_dir() and result.metrics["student"]["accuracy"] >= 0
    assert not any(e.startswith("step_end") for e in rec.events)  # the final checkpoint: no step trained again
    started = [(p, total) for p, done, total in phases.reports if done == 0]
    # 24 validation rows in one batch, for student and teacher; 2 batch sizes × (3 warm-up + 50) passes each
    assert started == [(EVALUATING, 2), (MEASURING, 2 * 2 * 53), (EXPORTING, 2)]
    assert phases.reports[0] == (TRAINING, 6, 6)  # then each phase counts to its total
    assert [r for r in phases.reports if r[0] == MEASURING][-1] == (MEASURING, 212, 212)


class EtaIn(Callback):
    """Records ``(phase, done, total, eta_s)`` at every phase report and ``(step, eta_s)`` at every step end."""

    def __init__(self):
        self.reports, self.steps = [], []

    def on_phase(self, state, control, phase, done, total):
        self.reports.append((phase, done, total, state.eta_s))

    def on_step_end(self, state, control, logs):
        self.steps.append((state.step, state.eta_s))


def test_the_eta_counts_the_finish_down_to_the_export(base_config):
    base_config["latency_repeats"] = 50
    eta = EtaIn()
    result = train(parse_config(base_config), [eta])
    last_step, eta_at_last_step = eta.steps[-1]
    assert last_step == 6 and eta_at_last_step > 0  # training done, the finish still ahead: no "ETA 0 s"
    finish = [r for r in eta.reports if r[0] in (EVALUATING, MEASURING, EXPORTING)]
    assert all(r[3] is not None and r[3] >= 0 for r in finish)
    measuring = [r[3] for r in finish if r[0] == MEASURING]
    assert measuring[1] > measuring[-1]  # it counts down through the 212 timed passes
    first_of = {phase: next(r[3] for r in finish if r[0] == phase) for phase in (EVALUATING, MEASURING, EXPORTING)}
    assert first_of[EVALUATING] > first_of[EXPORTING]
    for part in ("measured", "analytic"):  # what a worker records to calibrate later estimates
        assert set(result.timings[part]) == {"step_s", EVALUATING, MEASURING, EXPORTING}
        assert all(seconds > 0 for seconds in result.timings[part].values())
    assert json.loads((Path(base_config["output_dir"]) / "results.json").read_text())["timings"] == result.timings


def test_it_reports_validation_as_a_phase_of_training(base_config):
    base_config["eval_every"] = 3
    phases = StopIn(VALIDATING, 0)  # a stop asked during training's validation waits for the step's end
    result = train(parse_config(base_config), [phases])
    assert result.stopped and result.state.step == 3
    assert phases.reports[:3] == [(TRAINING, 0, 6), (VALIDATING, 0, 1), (VALIDATING, 1, 1)]
    assert phases.reports[3] == (TRAINING, 3, 6)


def test_it_exports_a_student_transformers_loads(base_config, assets):
    base_config["student"] = {"layers": 2, "hidden_size": 16, "heads": 2, "intermediate_size": 32, "init": "random"}
    result = train(parse_config(base_config))
    export = result.export_dir
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "distill.json"} <= {
        p.name for p in export.iterdir()
    }
    assert not any(k.startswith("projections") for k in load_file(export / "model.safetensors"))
    model = AutoModelForSequenceClassification.from_pretrained(export)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 16
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert "| student |" in (export / "README.md").read_text()
    record = json.loads((export / "distill.json").read_text())
    assert record["config"]["kind"] == "kd_feature" and record["metrics"]["student"]["split"] == "validation"
    # The exported weights give the same predictions as the trained student did.
    ids = torch.tensor([[2, 5, 20, 3]])
    assert torch.isfinite(model(input_ids=ids).logits).all()
    saved = json.loads((tmp := result.export_dir.parent / "results.json").read_text())
    assert saved["metrics"]["student"]["accuracy"] == result.metrics["student"]["accuracy"]
    assert tmp.is_file()


def test_it_reports_teacher_and_student_on_the_same_split(base_config):
    base_config["data"]["max_eval_samples"] = 20
    base_config["data"]["eval_split"] = "test"
    result = train(parse_config(base_config))
    assert result.metrics["teacher"]["split"] == result.metrics["student"]["split"] == "test"
    eff = result.efficiency
    assert eff["student"]["params"] < eff["teacher"]["params"]
    assert eff["student"]["bytes"] > 0 and eff["teacher"]["bytes"] > 0
    assert eff["student"]["latency"]["bs32"]["threads"] == torch.get_num_threads()


def test_it_copies_mapped_teacher_layers_into_the_student(base_config, assets):
    from distill.students import build_student, student_config
    from distill.teachers import describe, load_classifier, load_config

    cfg = parse_config(base_config)
    t_config = load_config(str(assets["teacher"]))
    teacher = load_classifier(str(assets["teacher"]), ("neg", "pos"), attentions=False)
    pairs = ()  # no custom map: blocks are copied spread from the first to the last
    s_config = student_config(t_config, cfg.student, describe(t_config), attentions=False)
    student = build_student(s_config, cfg.student, pairs, teacher, attentions=False)
    s, t = student.state_dict(), teacher.state_dict()
    # 2 of 4: student block 1 <- teacher block 1, student block 2 <- teacher block 4
    assert torch.equal(s["bert.encoder.layer.0.output.dense.weight"], t["bert.encoder.layer.0.output.dense.weight"])
    assert torch.equal(s["bert.encoder.layer.1.output.dense.weight"], t["bert.encoder.layer.3.output.dense.weight"])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])


def test_it_finetunes_a_backbone_into_a_teacher_for_kd(base_config, assets, tmp_path):
    finetune = {
        **base_config,
        "kind": "teacher_finetune",
        "teacher": {"source": str(assets["backbone"])},
        "output_dir": str(tmp_path / "ft"),
    }
    del finetune["student"]
    result = train(parse_config(finetune))
    assert set(result.metrics) == {"teacher"}
    kd = {**base_config, "teacher": {"source": str(result.export_dir)}}
    assert train(parse_config(kd)).metrics["student"]["split"] == "validation"


def test_it_refuses_to_distil_from_a_teacher_without_a_head(base_config, assets):
    base_config["teacher"] = {"source": str(assets["backbone"])}
    rec = Recorder()
    with pytest.raises(ConfigError, match="has no classification head"):
        train(parse_config(base_config), [rec])
    assert rec.events == ["exception:ConfigError"]


TERMS = ("task", "output", "feature", "attention")
LM_METRICS = {"split", "perplexity", "nll", "bleu", "rouge_l", "cer"}


@pytest.mark.parametrize(
    ("kind", "terms"),
    [
        ("kd_feature", set(TERMS)),
        ("kd_logits", {"task", "output"}),
        ("no_kd", {"task"}),
        ("teacher_finetune", {"task"}),
    ],
)
def test_it_trains_every_kind_on_text(lm_config, kind, terms):
    lm_config["kind"] = kind
    if kind == "teacher_finetune":
        del lm_config["student"]
    lm_config["loss"] = {"attention": 1.0}  # off by an LM's defaults: on here, to train with every term
    lm_config["eval_every"] = 3
    rec = Recorder()
    result = train(parse_config(lm_config), [rec])
    assert {k.removeprefix("loss/") for k in rec.logs[0] if k.startswith("loss/")} == terms | {"total"}
    assert all(math.isfinite(v) for logs in rec.logs for v in logs.values())
    # validation is perplexity, stored by the web as val/perplexity and val/nll
    assert [set(e) for e in rec.evaluations] == [{"split", "perplexity", "nll"}] * 2
    assert rec.evaluations[-1]["perplexity"] == pytest.approx(math.exp(rec.evaluations[-1]["nll"]))
    roles = {"teacher"} if kind == "teacher_finetune" else {"student", "teacher"}
    assert set(result.metrics) == roles
    for role in roles:
        metrics = result.metrics[role]
        assert set(metrics) == LM_METRICS and metrics["split"] == "validation"
        assert 1 < metrics["perplexity"] < 400  # a 300-token vocabulary: random guessing is ~300
        assert 0 <= metrics["bleu"] <= 100 and 0 <= metrics["rouge_l"] <= 1 and metrics["cer"] >= 0
        assert result.efficiency[role]["params"] > 0 and "bs32" in result.efficiency[role]["latency"]


def test_it_learns_the_text_and_distils_the_teacher(lm_config, tmp_path):
    # a teacher fine-tuned on the corpus, then a random-init student distilled from it
    finetune = {**lm_config, "kind": "teacher_finetune", "output_dir": str(tmp_path / "ft")}
    del finetune["student"]
    finetune["optim"] = {"batch_size": 8, "epochs": 4, "lr": 3e-3}
    teacher = train(parse_config(finetune))
    assert teacher.metrics["teacher"]["perplexity"] < 20  # the Markov chain has 3 successors per word
    kd = {**lm_config, "teacher": {"source": str(teacher.export_dir)}, "student": {"layers": 2, "init": "random"}}
    kd["optim"] = {"batch_size": 8, "max_steps": 30, "lr": 3e-3}
    kd["eval_every"] = 10
    rec = Recorder()
    result = train(parse_config(kd), [rec])
    assert rec.logs[-1]["loss/output"] < 0.5 * rec.logs[0]["loss/output"]
    perplexities = [e["perplexity"] for e in rec.evaluations]
    assert perplexities == sorted(perplexities, reverse=True)
    assert result.metrics["student"]["perplexity"] < 50  # from ~300 (a random student over 300 tokens)


def test_it_selects_metrics_and_generation_settings(lm_config):
    lm_config["kind"] = "no_kd"
    lm_config["generation"] = {"metrics": ["perplexity"], "samples": 2}
    result = train(parse_config(lm_config))
    assert set(result.metrics["student"]) == {"split", "perplexity", "nll"}
    lm_config["generation"] = {"metrics": ["cer"], "samples": 2, "prompt_tokens": 4, "new_tokens": 3}
    lm_config["data"]["eval_split"] = "test"
    result = train(parse_config(lm_config))
    assert set(result.metrics["student"]) == {"split", "cer"} and result.metrics["student"]["split"] == "test"


def test_it_resumes_an_lm_run_bit_for_bit(lm_config, tmp_path):
    lm_config["student"] = {"layers": 2, "hidden_size": 32, "heads": 2, "init": "random"}  # projections too
    lm_config["optim"]["max_steps"] = 8
    assert_resume_is_bit_exact(lm_config, tmp_path)


def test_it_exports_a_causal_lm_that_loads_offline(lm_config):
    lm_config["kind"] = "kd_logits"
    result = train(parse_config(lm_config))
    export = result.export_dir
    assert "pipeline_tag: text-generation" in (export / "README.md").read_text()
    assert "| perplexity |" in (export / "README.md").read_text().replace(" BLEU |", " |")
    record = json.loads((export / "distill.json").read_text())
    assert record["metrics"]["student"]["perplexity"] == result.metrics["student"]["perplexity"]
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "ids = t('the market rose today', return_tensors='pt').input_ids\n"
        "out = m.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=t.pad_token_id)\n"
        "print(m.config.num_hidden_layers, m.config.num_key_value_heads, out.shape[1] - ids.shape[1])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(export)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "2", "3"]


def test_it_loads_the_frozen_teacher_in_bfloat16(lm_config):
    from distill.trainer import build_models

    lm_config["teacher"]["dtype"] = "bfloat16"
    m = build_models(parse_config(lm_config), ())
    assert m.teacher.dtype == torch.bfloat16 and m.distiller.student.dtype == torch.float32
    lm_config["optim"]["max_steps"] = 2
    result = train(parse_config(lm_config))
    assert math.isfinite(result.metrics["teacher"]["perplexity"])


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"student": {"layers": 2, "kv_heads": 3}}, "student.kv_heads", "3 kv heads do not divide 4 query heads"),
        ({"student": {"layers": 2, "heads": 2, "kv_heads": 4}}, "student.kv_heads", "do not divide 2"),
        ({"data": {"source": "reviews.parquet"}}, "data.source", "unsupported file type"),
    ],
)
def test_it_names_the_field_of_an_lm_config_error(lm_config, change, field, message):
    lm_config.update(change)
    with pytest.raises(ConfigError) as err:
        train(parse_config(lm_config))
    assert err.value.errors[0][0] == field and message in err.value.errors[0][1]


def test_it_refuses_a_classifier_as_causal_lm_teacher(lm_config, assets):
    lm_config["teacher"] = {"source": str(assets["teacher"])}
    with pytest.raises(ConfigError, match=r"teacher\.source: task causal_lm needs a causal language model"):
        train(parse_config(lm_config))


def test_it_distils_a_gpt2_teacher_too(lm_assets, lm_config, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.conftest import lm_tokenizer

    folder = tmp_path / "gpt2"
    tokenizer = lm_tokenizer(lm_assets["corpus"])
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=4, n_head=4, n_positions=64, bos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    lm_config["teacher"] = {"source": str(folder)}
    lm_config["loss"] = {"attention": 1.0}  # every term, GPT-2's attention maps included
    rec = Recorder()
    result = train(parse_config(lm_config), [rec])
    assert all(math.isfinite(rec.logs[-1][f"loss/{t}"]) for t in TERMS)
    assert result.efficiency["student"]["params"] < result.efficiency["teacher"]["params"]
