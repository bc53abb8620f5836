"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint holds the trained module (student + projections), the optimizer and scheduler state, the
RNG states (one per process of the run: :mod:`distill.distributed`) and the :class:`TrainState`, so a resumed
run continues exactly where it stopped. The main process writes it; every process reads it back. It is written
to a temporary folder and renamed into place, so a crash mid-write never leaves a torn checkpoint; a crash
between the renames, or while the previous checkpoint is removed, is settled on the next save or load.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from distill.callbacks import TrainState
from distill.config import ConfigError

NAME = "checkpoint"


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors in a nested structure by ``{"__tensor__": key}`` and collect them."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {str(k): _split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def _save_state_dict(state: dict, folder: Path, name: str) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors(state, name, tensors)
    save_file(tensors, folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


def _load_state_dict(folder: Path, name: str) -> Any:
    skeleton = json.loads((folder / f"{name}.json").read_text())
    return _join_tensors(skeleton, load_file(folder / f"{name}.safetensors"))


def rng_state() -> dict[str, Any]:
    """This process's random generators (python, numpy, torch and CUDA), as a checkpoint keeps them."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [v.tolist() if isinstance(v, np.ndarray) else v for v in np.random.get_state()],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: Path,
    module: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    state: TrainState,
    rng_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``output_dir/checkpoint`` atomically and return its path. ``rng_states`` holds every process's
    :func:`rng_state` in rank order (default: this process's alone)."""
    final, tmp, old = output_dir / NAME, output_dir / f"{NAME}.tmp", output_dir / f"{NAME}.old"
    _settle(output_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_model(module, str(tmp / "model.safetensors"))  # handles tied weights
        _save_state_dict(optimizer.state_dict(), tmp, "optimizer")
    except SafetensorError as exc:
        if tmp.is_dir():
            raise
        # the run folder went away mid-write: safetensors says so in its own words; report it as the file
        # system does (an OSError naming the folder), so the caller can tell the user which folder to fix
        code = errno.ENOTDIR if output_dir.exists() else errno.ENOENT
        raise OSError(code, os.strerror(code), str(tmp)) from exc
    (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
    _save_state_dict({"ranks": rng_states or [rng_state()]}, tmp, "rng")
    state.save(tmp / "state.json")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _stranded(output_dir: Path) -> Path | None:
    """The previous checkpoint, when a worker was killed between the two renames and it is the newest one."""
    old = output_dir / f"{NAME}.old"
    return old if not (output_dir / NAME).exists() and (old / "state.json").is_file() else None


def _settle(output_dir: Path) -> None:
    """Finish a replacement a killed worker left half done, so ``checkpoint`` is the last complete one."""
    old = output_dir / f"{NAME}.old"
    if _stranded(output_dir):
        old.rename(output_dir / NAME)
    shutil.rmtree(old, ignore_errors=True)  # killed while removing it: a leftover would block the next rename


def has_checkpoint(output_dir: Path) -> bool:
    """Whether a run can resume; reads only, as the web process asks while no worker holds the run."""
    return (output_dir / NAME / "state.json").is_file() or _stranded(output_dir) is not None


def load_checkpoint(
    output_dir: Path, module: torch.nn.Module, optimizer: Any, scheduler: Any, rank: int = 0, processes: int = 1
) -> TrainState:
    """Restore everything :func:`save_checkpoint` wrote, with the RNG state of process ``rank`` of ``processes``;
    returns the saved state. A checkpoint of another number of processes is refused (a ``ConfigError`` on
    ``resources.processes``): its data order and its ranks' RNG states belong to that number."""
    _settle(output_dir)
    folder = output_dir / NAME
    saved = _load_state_dict(folder, "rng")
    ranks = saved.get("ranks", [saved])  # a checkpoint older than several processes holds one
    if len(ranks) != processes:
        step = TrainState.load(folder / "state.json").step
        raise ConfigError.one(
            "resources.processes",
            f"the checkpoint at step {step} was written by {len(ranks)} process{'es' if len(ranks) > 1 else ''} and "
            f"this run has {processes}: resume it with {len(ranks)} (the data order and each process's random "
            "state belong to that number), or start the run again in another output folder",
        )
    load_model(module, str(folder / "model.safetensors"))
    optim_state = _load_state_dict(folder, "optimizer")
    optim_state["state"] = {int(k): v for k, v in optim_state["state"].items()}  # JSON made the ids str
    optimizer.load_state_dict(optim_state)
    scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))
    _set_rng_state(ranks[rank])
    return TrainState.load(folder / "state.json")
