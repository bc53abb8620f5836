"""``python -m distill``: run, inspect, layermap and evaluate from the command line.

A bad config or input exits with status 2 and prints each ``field: reason`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml
from tqdm import tqdm

from distill.callbacks import Callback, Control, TrainState
from distill.config import ConfigError, DataConfig, StudentConfig, load_config, parse_config
from distill.layer_map import describe, resolve_layer_map

EXIT_CONFIG = 2


class ProgressBar(Callback):
    """A tqdm bar showing every loss term and the latest validation accuracy."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_begin(self, state: TrainState, control: Control) -> None:
        self.bar = tqdm(total=state.total_steps, initial=state.step, unit="step", dynamic_ncols=True)

    def on_step_end(self, state: TrainState, control: Control, logs: dict[str, float]) -> None:
        terms = {k.removeprefix("loss/"): f"{v:.3f}" for k, v in logs.items() if k.startswith("loss/")}
        if "accuracy" in state.metrics:
            terms["val_acc"] = f"{state.metrics['accuracy']:.3f}"
        self.bar.set_postfix(terms, refresh=False)
        self.bar.update(1)

    def on_train_end(self, state: TrainState, control: Control, result: Any) -> None:
        self.bar.close()

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        if self.bar is not None:
            self.bar.close()


def _set(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict."""
    key, sep, value = assignment.partition("=")
    if not sep:
        raise ConfigError.one("--set", f"expected key=value, got {assignment!r}")
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)


def cmd_run(args: argparse.Namespace) -> int:
    from distill.trainer import train  # heavy imports only for the commands that train

    cfg = load_config(args.config)
    if args.set:
        data = cfg.model_dump(mode="json", exclude_unset=True)
        for assignment in args.set:
            _set(data, assignment)
        cfg = parse_config(data)
    result = train(cfg, [ProgressBar()], resume=args.resume)
    if result.stopped:
        print(f"stopped at step {result.state.step}; resume with --resume")
        return 0
    print(json.dumps({"metrics": result.metrics, "export_dir": str(result.export_dir)}, indent=1))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from distill.teachers import inspect_teacher

    arch = inspect_teacher(args.source)
    if args.json:
        print(json.dumps(arch.as_dict(), indent=1))
        return 0
    print(
        f"{args.source}: {arch.model_type}, {arch.layers} layers x {arch.hidden_size} hidden, "
        f"{arch.heads} heads ({arch.kv_heads} kv), intermediate {arch.intermediate_size}, "
        f"vocab {arch.vocab_size:,}, {arch.params:,} parameters"
    )
    print(f"task head: {', '.join(arch.labels) if arch.labels else 'none (fine-tune it first)'}")
    return 0


def cmd_layermap(args: argparse.Namespace) -> int:
    from distill.teachers import inspect_teacher

    arch = inspect_teacher(args.teacher)
    student = StudentConfig(layers=args.student_layers, layer_map=args.strategy, map_embeddings=not args.no_embeddings)
    print(f"student {args.student_layers} blocks <- teacher {arch.layers} blocks ({args.strategy}):")
    print(describe(resolve_layer_map(student, arch.layers)))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from distill.data import encode, load_data
    from distill.metrics import efficiency_report, evaluate_classifier, weights_bytes
    from distill.teachers import load_classifier, load_tokenizer
    from distill.trainer import eval_loader

    data_cfg = DataConfig(
        source=args.data, text_column=args.text_column, label_column=args.label_column, max_length=args.max_length
    )
    data = load_data(data_cfg)
    tokenizer = load_tokenizer(args.model)
    model = load_classifier(args.model, data.labels, attentions=False)
    loader = eval_loader(
        encode(data.split(args.split), tokenizer, args.max_length), args.batch_size, tokenizer.pad_token_id
    )
    report = {
        "metrics": {"split": args.split, **evaluate_classifier(model, loader, len(data.labels))},
        "efficiency": {
            **efficiency_report(model, model.config.vocab_size, seq_len=args.max_length),
            "bytes": weights_bytes(args.model),
        },
    }
    print(json.dumps(report, indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distill", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a run from a YAML config")
    run.add_argument("config")
    run.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. optim.max_steps=20")
    run.set_defaults(func=cmd_run)
    ins = sub.add_parser("inspect", help="architecture of a teacher source")
    ins.add_argument("source", help="package:<pip-name>, a model folder or a hub id")
    ins.add_argument("--json", action="store_true")
    ins.set_defaults(func=cmd_inspect)
    lm = sub.add_parser("layermap", help="show the layer map a strategy gives")
    lm.add_argument("--teacher", required=True)
    lm.add_argument("--student-layers", type=int, required=True)
    lm.add_argument("--strategy", choices=["uniform", "last"], default="uniform")
    lm.add_argument("--no-embeddings", action="store_true", help="leave out the embedding pair (0, 0)")
    lm.set_defaults(func=cmd_layermap)
    ev = sub.add_parser("evaluate", help="evaluate an exported model on a data set")
    ev.add_argument("model", help="a model folder (e.g. a run's export) or a teacher source")
    ev.add_argument("--data", required=True)
    ev.add_argument("--split", choices=["train", "validation", "test"], default="test")
    ev.add_argument("--text-column", default="text")
    ev.add_argument("--label-column", default="label")
    ev.add_argument("--max-length", type=int, default=128)
    ev.add_argument("--batch-size", type=int, default=64)
    ev.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
