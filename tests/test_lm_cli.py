"""The command line for causal LMs: run an LM config, evaluate an export on text, prepare a source."""

from __future__ import annotations

import json

import yaml

from distill.cli import main


def test_run_then_evaluate_an_lm_export(lm_config, tmp_path, capsys):
    lm_config["kind"] = "kd_logits"
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(lm_config))
    assert main(["run", str(path), "--set", "optim.max_steps=2"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{") :])
    assert set(result["metrics"]["student"]) == {"split", "perplexity", "nll", "bleu", "rouge_l", "cer"}
    export = tmp_path / "run" / "export"
    assert result["export_dir"] == str(export)
    args = ["evaluate", str(export), "--task", "causal_lm", "--data", lm_config["data"]["source"], "--max-length", "32"]
    assert main([*args, "--split", "validation", "--batch-size", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["metrics"]) == {"split", "perplexity", "nll", "bleu", "rouge_l", "cer"}
    assert report["efficiency"]["bytes"] > 0


def test_prepare_prints_the_folder_of_a_source(lm_assets, capsys):
    assert main(["prepare", str(lm_assets["teacher"])]) == 0
    assert capsys.readouterr().out.strip() == str(lm_assets["teacher"])
    assert main(["prepare", "package:no-such-package-kdweb"]) == 2
    assert "teacher.source: package 'no-such-package-kdweb' is not installed" in capsys.readouterr().err
