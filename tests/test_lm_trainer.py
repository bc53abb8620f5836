"""The training loop for causal LMs on a tiny random Llama with grouped-query attention: every kind,
perplexity validation, the final evaluation, resume, export and the errors of an LM config."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from distill.config import ConfigError, parse_config
from distill.trainer import train
from tests.recording import Recorder, assert_resume_is_bit_exact

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
    rec = Recorder()
    result = train(parse_config(lm_config), [rec])
    assert all(math.isfinite(rec.logs[-1][f"loss/{t}"]) for t in TERMS)
    assert result.efficiency["student"]["params"] < result.efficiency["teacher"]["params"]
