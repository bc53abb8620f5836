"""Checkpoints: a run folder that goes away while one is written is reported as that folder, as the file system
reports it, so the run's error can say which folder to fix; each process of a run resumes its own random state."""

import json
import shutil

import pytest
import torch

from distill.callbacks import TrainState
from distill.checkpoint import has_checkpoint, load_checkpoint, rng_state, save_checkpoint
from distill.config import ConfigError


def parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    return module, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def test_it_writes_a_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "run", *parts(), TrainState(total_steps=1))
    assert has_checkpoint(tmp_path / "run")


def test_a_folder_replaced_by_a_file_mid_write_is_reported_as_the_folder(tmp_path):
    folder = tmp_path / "run"
    module, optimizer, scheduler = parts()

    def vanish(*args, **kwargs):  # the disk goes away while the weights are being written
        shutil.rmtree(folder)
        folder.write_text("not a folder")

    module.register_state_dict_pre_hook(vanish)
    with pytest.raises(NotADirectoryError) as raised:
        save_checkpoint(folder, module, optimizer, scheduler, TrainState(total_steps=1))
    assert raised.value.filename == str(folder / "checkpoint.tmp")
    assert raised.value.strerror == "Not a directory"


def saved_step(folder) -> int:
    module, optimizer, scheduler = parts()
    return load_checkpoint(folder, module, optimizer, scheduler).step


def test_a_worker_killed_while_removing_the_previous_checkpoint_does_not_block_the_next(tmp_path):
    folder = tmp_path / "run"
    save_checkpoint(folder, *parts(), TrainState(step=1, total_steps=3))
    shutil.copytree(folder / "checkpoint", folder / "checkpoint.old")  # rmtree cut short: files remain
    (folder / "checkpoint.old" / "model.safetensors").unlink()

    save_checkpoint(folder, *parts(), TrainState(step=2, total_steps=3))
    assert saved_step(folder) == 2 and not (folder / "checkpoint.old").exists()


def test_a_worker_killed_between_the_renames_resumes_from_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "run"
    save_checkpoint(folder, *parts(), TrainState(step=1, total_steps=3))
    (folder / "checkpoint").rename(folder / "checkpoint.old")  # the new one never made it out of .tmp
    (folder / "checkpoint.tmp").mkdir()

    assert has_checkpoint(folder) and not (folder / "checkpoint").exists()  # asking changes nothing
    assert saved_step(folder) == 1
    save_checkpoint(folder, *parts(), TrainState(step=2, total_steps=3))
    assert saved_step(folder) == 2 and sorted(p.name for p in folder.iterdir()) == ["checkpoint"]


def test_each_process_resumes_its_own_random_state_and_another_count_is_refused(tmp_path):
    folder = tmp_path / "run"
    states = []
    for seed in (1, 2):  # two processes' generators, in rank order
        torch.manual_seed(seed)
        states.append(rng_state())
    save_checkpoint(folder, *parts(), TrainState(step=4, total_steps=8), states)
    for rank in (0, 1):
        torch.manual_seed(99)
        load_checkpoint(folder, *parts(), rank=rank, processes=2)
        assert torch.equal(torch.get_rng_state(), states[rank]["torch"])
    with pytest.raises(ConfigError) as refused:
        load_checkpoint(folder, *parts(), rank=0, processes=1)
    assert refused.value.errors == [
        (
            "resources.processes",
            "the checkpoint at step 4 was written by 2 processes and this run has 1: resume it with 2 (the data "
            "order and each process's random state belong to that number), or start the run again in another "
            "output folder",
        )
    ]


def test_a_checkpoint_from_before_several_processes_resumes_on_one(tmp_path):
    folder = tmp_path / "run"
    save_checkpoint(folder, *parts(), TrainState(step=1, total_steps=3))
    rng = folder / "checkpoint" / "rng.json"
    rng.write_text(json.dumps(json.loads(rng.read_text())["ranks"][0]))  # the single state older checkpoints hold
    assert saved_step(folder) == 1
