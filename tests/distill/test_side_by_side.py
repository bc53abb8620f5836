"""Side-by-side speed on tiny random models: the models alternate, the spread is ordered, rounds stop at the cap,
foreign load is seen and flagged, bad input is refused; and ``python -m distill evaluate`` of several exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification

from distill.config import ConfigError
from distill.side_by_side import HEAVY_FOREIGN_CORES, measure_side_by_side
from tests.conftest import tiny_bert_config, write_llama
from tests.distill.test_cli import assert_config_error, cli


def write_student(folder: Path, layers: int, vocab_size: int = 33) -> Path:
    """A tiny random classifier with ``layers`` blocks (the conftest teacher has 4), saved as an export is."""
    torch.manual_seed(layers)
    BertForSequenceClassification(tiny_bert_config(vocab_size, num_hidden_layers=layers)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("students")
    return [write_student(root / "two", 2), write_student(root / "one", 1)]


def contenders(assets, students) -> list[tuple[str, str]]:
    return [("teacher", str(assets["teacher"])), ("two", str(students[0])), ("one", str(students[1]))]


def test_the_models_alternate_within_every_round_and_the_first_rotates(assets, students):
    passes: list[tuple[str, int]] = []
    result = measure_side_by_side(
        contenders(assets, students), threads=1, min_rounds=4, max_rounds=4, tick=lambda n, bs: passes.append((n, bs))
    )
    assert result.rounds == 4 and len(passes) == 4 * 2 * 3
    rounds = [passes[i : i + 6] for i in range(0, len(passes), 6)]
    for one in rounds:  # each batch size: every model once, before any model again
        assert [bs for _, bs in one] == [1, 1, 1, 32, 32, 32]
        assert sorted(n for n, _ in one[:3]) == sorted(n for n, _ in one[3:]) == ["one", "teacher", "two"]
    assert len({one[0][0] for one in rounds[:3]}) == 3  # nobody always goes first


def test_each_model_has_an_ordered_spread_from_one_measurement(assets, students):
    result = measure_side_by_side(contenders(assets, students), threads=1, time_cap_s=5)
    assert [m.name for m in result.models] == ["teacher", "two", "one"]
    assert result.threads == 1 and result.seq_len == 64  # the tiny models' 64 positions cap the default 128
    assert result.rounds >= 5 and result.host and result.cpus >= 1 and result.load_max >= 0
    for m in result.models:
        for bs, key in ((1, "bs1"), (32, "bs32")):
            t = m.latency[key]
            assert 0 < t.p10_ms <= t.median_ms <= t.p90_ms
            assert t.samples == result.rounds
            assert t.throughput == pytest.approx(bs / (t.median_ms / 1000))
        assert m.peak_mb is None or m.peak_mb > 0
    params = [m.params for m in result.models]
    assert params[0] > params[1] > params[2]  # 4, 2 and 1 blocks
    stored = result.as_dict()
    assert stored["models"][1]["latency"]["bs32"]["p90_ms"] == result.models[1].latency["bs32"].p90_ms
    assert stored["heavy_load"] is result.heavy_load


def test_rounds_stop_at_the_time_cap_once_the_minimum_is_reached(assets, students):
    result = measure_side_by_side(contenders(assets, students)[:2], threads=1, time_cap_s=0, min_rounds=3)
    assert result.rounds == 3 and not result.stable


def test_a_busy_process_during_the_measurement_is_flagged(assets, students):
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = measure_side_by_side(
            contenders(assets, students)[:2], threads=1, tolerance=0.0, min_rounds=5, max_rounds=10_000, time_cap_s=3
        )
    finally:
        busy.kill()
        busy.wait()
    assert result.seconds >= 3
    assert result.foreign_cores >= HEAVY_FOREIGN_CORES and result.heavy_load


def test_a_causal_lm_is_measured_as_prefill(lm_assets, tmp_path):
    student = write_llama(tmp_path / "student", lm_assets["corpus"], num_hidden_layers=1)
    result = measure_side_by_side(
        [("teacher", str(lm_assets["teacher"])), ("student", str(student))], threads=1, seq_len=32, time_cap_s=0
    )
    assert result.seq_len == 32 and result.models[0].params > result.models[1].params


@pytest.mark.parametrize(
    ("which", "kwargs", "fragment"),
    [
        ("one", {}, "models: need at least two models"),
        ("same-name", {}, "models: each model needs a name of its own"),
        ("mixed", {}, "cannot compare causal LMs with classifiers"),
        ("both", {"seq_len": 100}, "seq_len: 100 tokens is more than the models' 64 positions"),
        ("both", {"threads": 0}, "threads: must be at least 1"),
    ],
)
def test_it_refuses_what_it_cannot_compare(assets, students, lm_assets, which, kwargs, fragment):
    teacher, student = ("teacher", str(assets["teacher"])), ("two", str(students[0]))
    sources = {
        "one": [teacher],
        "same-name": [teacher, ("teacher", str(students[0]))],
        "mixed": [teacher, ("lm", str(lm_assets["teacher"]))],
        "both": [teacher, student],
    }[which]
    with pytest.raises(ConfigError, match=fragment):
        measure_side_by_side(sources, **kwargs)


# --- the CLI: python -m distill evaluate A B C ------------------------------------------------------------


def test_evaluate_of_several_exports_prints_them_side_by_side(assets, students, tmp_path):
    proc = cli("evaluate", assets["teacher"], *students, "--threads", "1", "--time-cap", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "params", "bs1"] and "(p10-p90)" in lines[0]
    assert [line.split()[0] for line in lines[1:4]] == [str(assets["teacher"]), *map(str, students)]
    assert lines[1].split()[6:8] == ["1.00", "1.00"]  # the first is the reference
    assert "side by side on " in lines[4] and "1 torch thread, 64 tokens" in lines[4]
    assert "alternated rounds" in lines[4]

    proc = cli("evaluate", assets["teacher"], students[0], "--json", "--time-cap", "0.1", cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert [m["source"] for m in report["models"]] == [str(assets["teacher"]), str(students[0])]
    assert {"host", "threads", "load_max", "foreign_cores", "heavy_load", "rounds"} <= set(report)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("/nowhere/model",), "model: no model folder at /nowhere/model"),
        (("--data", "x.csv"), "--data: evaluates one model"),
        (("--threads", "0"), "--threads: must be at least 1"),
        (("--max-length", "100"), "--max-length: 100 tokens is more than the models' 64 positions"),
        (("--time-cap", "0"), "--time-cap: must be positive"),
    ],
    ids=["missing-folder", "data", "threads", "too-long", "time-cap"],
)
def test_evaluate_of_several_models_refuses_bad_input_with_exit_2(assets, students, tmp_path, extra, fragment):
    assert_config_error(cli("evaluate", assets["teacher"], students[0], *extra, cwd=tmp_path), fragment)


def test_evaluate_of_one_model_still_needs_data(assets, tmp_path):
    assert_config_error(cli("evaluate", assets["teacher"], cwd=tmp_path), "--data: required to evaluate one model")
