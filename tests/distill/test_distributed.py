"""One run on two real processes (torchrun, gloo on the CPU) with the tiny models: one run folder, the same
training as one process with twice the batch, a stop that reaches both ranks at one step, and resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from distill.cli import main as cli_main
from distill.config import ConfigError, parse_config
from distill.trainer import EpochBatches, train
from tests.conftest import write_model
from tests.recording import Recorder

REPO = Path(__file__).resolve().parents[2]
STEPS, STOP_AT = 6, 3
# float32 on both sides; the two runs differ only in how the batch's sums are split (per process, then averaged)
LOSS_TOLERANCE, WEIGHT_TOLERANCE = 1e-6, 1e-5


def launch(processes: int, *args: str) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node <processes> <args>`` from the repository, one thread per
    process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def run_ranks(config: dict, folder: Path, *flags: str) -> list[dict]:
    """Train ``config`` on its ``resources.processes`` processes (tests/distill/ranks.py); each rank's record."""
    path = folder / "config.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    done = launch(config["resources"]["processes"], "-m", "tests.distill.ranks", str(path), str(folder), *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((folder / f"rank-{r}.json").read_text()) for r in range(config["resources"]["processes"])]


def weights(output_dir: str) -> dict[str, torch.Tensor]:
    return load_file(Path(output_dir) / "checkpoint" / "model.safetensors")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """The tiny teacher without dropout: one process's dropout masks over a batch cannot be the two processes'."""
    folder = tmp_path_factory.mktemp("teacher") / "teacher"
    return write_model(folder, head=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def config(teacher, assets, tmp_path_factory) -> dict:
    """A kd_logits run on 2 processes × 4 texts; every term a mean over the batch's texts (see the README on
    terms averaged over tokens)."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "kind": "kd_logits",
        "seed": 3,
        "teacher": {"source": str(teacher)},
        "student": {"layers": 2, "hidden_size": 16, "heads": 2, "init": "random"},
        "data": {
            "source": str(assets["reviews"]),
            "text_column": "review",
            "label_column": "sentiment",
            "max_length": 24,
            "max_train_samples": 32,
        },
        "optim": {"batch_size": 4, "max_steps": STEPS, "lr": 1e-3},
        "resources": {"processes": 2},
        "output_dir": str(root / "run"),
        "cache_dir": str(root / "teacher-cache"),
        "checkpoint_every": 1000,
        "latency_repeats": 1,
        "eval_batch_size": 32,
    }


@pytest.fixture(scope="module")
def straight(config, tmp_path_factory) -> tuple[dict, list[dict]]:
    """The config trained on two processes without a stop: the config and each rank's record."""
    folder = tmp_path_factory.mktemp("straight")
    cfg = {**config, "output_dir": str(folder / "run")}
    return cfg, run_ranks(cfg, folder)


def test_the_sampler_gives_each_process_its_share_of_the_batch_one_process_reads():
    one = list(EpochBatches(30, 8, seed=1))
    two = [list(EpochBatches(30, 4, seed=1, rank=r, processes=2)) for r in range(2)]
    assert len(two[0]) == len(two[1]) == len(EpochBatches(30, 4, seed=1, rank=1, processes=2)) == 4
    for batch, part0, part1 in zip(one, *two, strict=True):
        assert sorted(part0 + part1) == sorted(batch) and len(part0) == len(part1)  # the tail: 6 = 3 + 3
    odd = [list(EpochBatches(7, 4, seed=1, rank=r, processes=2)) for r in range(2)]
    assert [len(b) for b in odd[0]] == [len(b) for b in odd[1]] == [4]  # 7 completed to 8 with the first one
    resumed = EpochBatches(30, 4, seed=1, rank=1, processes=2)
    resumed.start(epoch=0, skip=2)
    assert list(resumed) == two[1][2:] and len(resumed) == 2


def test_two_processes_make_one_run_folder(config, tmp_path):
    cfg = {
        **config,
        "kind": "kd_feature",
        "student": {"layers": 2, "layer_map": "uniform"},
        "output_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "teacher-cache"),  # 6 steps read the 32 texts more than once: the cache is built
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done = launch(2, "-m", "distill", "run", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"export_dir"') == 1  # the main process reports for the run
    run = Path(cfg["output_dir"])
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "export", "results.json"]
    assert len(list((run / "export").glob("*.safetensors"))) == 1
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == STEPS
    rng = json.loads((run / "checkpoint" / "rng.json").read_text())
    assert len(rng["ranks"]) == 2  # each process's random state, for a resume
    built = [p.name for p in Path(cfg["cache_dir"]).iterdir() if p.is_dir()]
    assert len(built) == 1 and ".tmp-" not in built[0]  # built once, by the main process


def test_two_processes_train_as_one_with_twice_the_batch(config, straight, tmp_path):
    two_cfg, ranks = straight
    assert [r["step"] for r in ranks] == [STEPS, STEPS] and not any(r["stopped"] for r in ranks)
    assert ranks[1]["events"] == []  # callbacks run on the main process only
    one = Recorder()
    optim = {**config["optim"], "batch_size": 8}
    train(parse_config({**config, "optim": optim, "resources": {"processes": 1}, "output_dir": str(tmp_path)}), [one])
    assert len(one.logs) == len(ranks[0]["logs"]) == STEPS
    for mine, theirs in zip(one.logs, ranks[0]["logs"], strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            assert theirs[key] == pytest.approx(value, abs=LOSS_TOLERANCE), key
    two = weights(two_cfg["output_dir"])
    for name, tensor in weights(str(tmp_path)).items():
        assert torch.allclose(two[name], tensor, rtol=0, atol=WEIGHT_TOLERANCE), name


def test_a_stop_on_the_main_process_stops_both_at_its_step_and_they_resume(config, straight, tmp_path):
    cfg = {**config, "output_dir": str(tmp_path / "run")}
    stopped = run_ranks(cfg, tmp_path / "stopped", "--stop-at", str(STOP_AT))
    assert [(r["step"], r["stopped"]) for r in stopped] == [(STOP_AT, True), (STOP_AT, True)]
    run = Path(cfg["output_dir"])
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]  # one checkpoint, no export
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == STOP_AT
    shutil.copytree(run, tmp_path / "copy")

    resumed = run_ranks(cfg, tmp_path / "resumed", "--resume")
    assert [(r["step"], r["stopped"]) for r in resumed] == [(STEPS, False), (STEPS, False)]
    straight_cfg, straight_ranks = straight
    assert stopped[0]["logs"] + resumed[0]["logs"] == straight_ranks[0]["logs"]
    unstopped = weights(straight_cfg["output_dir"])
    assert all(torch.equal(unstopped[k], v) for k, v in weights(cfg["output_dir"]).items())

    # another number of processes: refused, naming the field and the checkpoint's count
    with pytest.raises(ConfigError) as err:
        one = {**config, "resources": {"processes": 1}, "output_dir": str(tmp_path / "copy")}
        train(parse_config(one), resume=True)
    assert err.value.errors[0][0] == "resources.processes"
    assert f"checkpoint at step {STOP_AT} was written by 2 processes and this run has 1" in err.value.errors[0][1]


def test_a_launch_of_another_size_than_the_config_is_a_config_error(config, tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**config, "output_dir": str(tmp_path / "run")}))
    assert cli_main(["run", str(path)]) == 2
    error = capsys.readouterr().err
    assert "resources.processes: the run is configured for 2 processes and was launched with 1" in error
