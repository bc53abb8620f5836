"""One run on several processes: what each rank does, and the few collectives the trainer needs.

``torchrun --nproc_per_node N -m distill run <config>`` (or ``accelerate launch``) starts N ranks of one run
(data parallel, DDP: gloo on CPU, NCCL on GPUs). Every rank trains on its share of each global batch
(:class:`distill.trainer.EpochBatches`); the main rank alone runs the callbacks, builds the teacher-output cache,
validates, writes checkpoints and finishes (evaluation, latency, export) while the others wait for it. Whatever
the main rank decides (stop, use a cache) reaches the others through :func:`broadcast_flag`, so every rank
leaves the loop at the same step. With one process every helper here is a no-op.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from distill.config import ConfigError

# How long a rank waits for the main one at a barrier: the main rank builds the teacher cache, validates and
# finishes alone, which on a large run takes far longer than torch's 30-minute default.
WAIT_FOR_MAIN = timedelta(hours=12)


def world_size() -> int:
    """The number of processes of this run (1 without a launcher)."""
    return PartialState().num_processes


def is_main() -> bool:
    """Whether this process is the run's main rank: the one that writes, reports and exports."""
    return PartialState().is_main_process


def wait_for_everyone() -> None:
    """A barrier: each rank returns once every rank has reached it."""
    PartialState().wait_for_everyone()


def broadcast_flag(flag: bool) -> bool:
    """The main rank's ``flag`` on every rank (the others' own values are ignored)."""
    state = PartialState()
    if state.num_processes == 1:
        return flag
    value = torch.tensor([int(flag)], device=state.device)
    torch.distributed.broadcast(value, src=0)
    return bool(value.item())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (every rank passes the same keys): a step's losses on its global batch."""
    state = PartialState()
    if state.num_processes == 1 or not values:
        return values
    stacked = torch.tensor(list(values.values()), dtype=torch.float64, device=state.device)
    torch.distributed.all_reduce(stacked)
    return dict(zip(values, (stacked / state.num_processes).tolist(), strict=True))


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (picklable objects: the ranks' RNG states)."""
    if PartialState().num_processes == 1:
        return [obj]
    return gather_object([obj])


def check_world_size(processes: int) -> None:
    """Refuse a launch whose process count is not the config's ``resources.processes``: the step count, the
    batches and a checkpoint's RNG states all depend on it."""
    launched = world_size()
    if launched != processes:
        raise ConfigError.one(
            "resources.processes",
            f"the run is configured for {processes} process{'es' if processes > 1 else ''} and was launched with "
            f"{launched}: launch it with torchrun --nproc_per_node {processes}, or set resources.processes={launched}",
        )


def end() -> None:
    """Leave the process group at the end of a launched run (a no-op with one process)."""
    state = PartialState()
    if state.num_processes > 1:
        state.destroy_process_group()
