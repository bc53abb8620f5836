"""One training on every process of a launch, recorded: ``python -m torch.distributed.run --nproc_per_node N
-m tests.distill.ranks <config.yaml> <record folder> [--stop-at K] [--resume]``. Each rank writes
``rank-<r>.json`` (its step, whether it stopped, and on the main rank the logs and events its callbacks saw)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from distill.callbacks import StopAtStep
from distill.config import load_config
from distill.distributed import end
from distill.trainer import train
from tests.recording import Recorder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("record", type=Path)
    parser.add_argument("--stop-at", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two ranks on a small machine: no oversubscription
    rec = Recorder()
    callbacks = [rec, *([StopAtStep(args.stop_at)] if args.stop_at else [])]
    result = train(load_config(args.config), callbacks, resume=args.resume)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    args.record.mkdir(parents=True, exist_ok=True)
    record = {"step": result.state.step, "stopped": result.stopped, "logs": rec.logs, "events": rec.events}
    (args.record / f"rank-{rank}.json").write_text(json.dumps(record))
    end()


if __name__ == "__main__":
    main()
